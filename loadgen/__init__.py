"""Bundled load generator: workloads, arrivals, streaming client, SLO metrics, sweeps, plots.

Pure parts (no clock, no I/O besides reading a trace, explicit RNG), shared with the simulator:

- :mod:`loadgen.workloads` - ``WorkloadSpec`` -> ``build_workload`` -> ``list[WorkItem]``
  (uses :mod:`loadgen.traces`, :mod:`loadgen.lengths`, :mod:`loadgen.arrivals`);
- :mod:`loadgen.metrics` - ``RequestRecord`` (fill with ``add_chunk(t, tokens)``),
  ``attained``, ``summarize``, ``capacity_at``;
- :mod:`loadgen.results` and :func:`loadgen.sweep.sweep_document` - the JSON files that
  ``loadgen plot`` reads.

Live parts: :mod:`loadgen.client`, :mod:`loadgen.prompts`, :mod:`loadgen.runner`,
:mod:`loadgen.sweep`, :mod:`loadgen.cli` (the ``loadgen`` command).
"""
