"""The learned slack predictor: LightGBM models of what the proxy observes.

Theory of operation.  The Ascendra policy asks one batched question per tick through the
``SlackPredictor`` seam (:mod:`ascendra_proxy.core.predict`): for each (request, backend),
how long until the request's next token there, and how long for the ``k`` after that.
This package answers it with a model learned from the proxy's own observations:

* :mod:`.tap` and :mod:`.dataset`: at each tick the driver (proxy or simulator) turns its
  requests and backend snapshots into the policy's questions, and a recorder writes them,
  later joined with what actually happened, as JSONL rows (the tap is a lifecycle
  observer, ``core/contracts.py``, that both drivers report to; :mod:`.simtap` hands it
  to a simulator; :mod:`.rows` reads the rows back);
* :mod:`.features`: the versioned feature schema (a batch -> a float32 matrix);
* :mod:`.train` and :mod:`.cli` (``ascendra-proxy train``): LightGBM quantile regression
  per target, evaluated against the analytical model on held-out requests;
* :mod:`.model`: the model file, :class:`~.model.LearnedPredictor` (hot reload) and
  :func:`~.model.load_predictor` (falls back to the analytical model);
* :mod:`.retrain`: periodic retraining in a worker process;
* :mod:`.metrics`: ``ascendra_predictor_source`` and the prediction-error histograms;
* :mod:`.setup`: the analytical fallback the Ascendra policy itself uses, for drivers.

Where it is wired.  The live proxy: the config's ``predictor:`` section
(:class:`~ascendra_proxy.config.PredictorConfig`), carried out by
:mod:`ascendra_proxy.proxy.learning` (model loaded at start and handed to the policy's
``use_predictor``, ``maybe_reload`` from the tick about once a second, the tap driven by
the tick and the gateway's lifecycle events, the ``Retrainer``, the
metrics on the proxy's registry).  The simulator: ``ascendra-proxy simulate
--predictor-model FILE --training-data FILE`` (:mod:`ascendra_proxy.sim.sweep` runs the
jobs with :mod:`.simtap`).  Benchmarks call :func:`~.model.load_predictor` directly.

Inputs the batch types may gain.  Three timings sharpen the time-to-first-token estimate a
lot (see :mod:`.features`): ``QueryBatch.on_backend_s`` (per row: seconds since the request
was dispatched to the backend asked about, 0 for a hypothetical target),
``BackendFeatures.oldest_unstarted_s`` (seconds since the oldest not-started request there
was dispatched) and ``BackendFeatures.last_first_token_s`` (seconds since the last first
token there).  The features read them with ``getattr`` when present; the tap records them
for training; until the policy passes them, models answer from a copy of the training rows
trained without them.

Importing this package does not import LightGBM; the modules that need it do.
"""
