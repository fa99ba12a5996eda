"""The discrete-event loop: arrivals, engine steps, network hops, scrapes and policy ticks.

Theory of operation: :class:`Simulator` wires a :class:`~.proxy.SimProxy` (the policy's
driver), one :class:`~.backend.SimBackend` per configured backend (each an
:class:`~ascendra_proxy.engine.EngineModel` with the backend's latency profile and engine
settings, all seeded alike so a continuation regenerates exactly the tokens the original
engine would have), and an :class:`~.events.EventQueue`.  :meth:`Simulator.run` pops events
in time order until every request has ended and the engines are idle (or the drain timeout
after the last arrival passes) and returns a :class:`SimResult`.

What each event does:

* ``ARRIVAL`` (scheduled arrival + client hop): the proxy admits and routes the request;
  the next arrival is scheduled (one pending at a time keeps the heap small).
* ``ENGINE_ADD`` (dispatch + network hop + the profile's frontend time): the engine takes
  the request, unless the attempt was closed meanwhile, or answers 400 (``REJECTED``, one
  hop later) when the prompt plus ``max_tokens`` exceed ``max_model_len`` (vLLM's check).
* ``ENGINE_ABORT`` (close + ``abort_s``): the engine drops the request and frees its blocks.
* ``STEP_END``: the step's outputs leave for the proxy (``TOKENS``, one hop later) and the
  engine starts its next step if it has work.  An idle engine starts a step as soon as a
  request arrives or an abort frees room.
* ``SCRAPE`` / ``SCRAPED``: every ``scrape.interval_s`` (after the previous answer, as the
  live scrape loop sleeps after each scrape) the engine's gauges are read and reach the
  proxy one hop later; snapshots carry their age.
* ``TICK`` every ``policy.tick_interval_s`` (from t = 0, on the grid ``k * interval``);
  the proxy's lifecycle observer (:meth:`Simulator.observe`) sees each tick first.  Under
  a policy without a tick, an observer may ask for observation-only ticks.
* ``RECHECK``: held requests ask again; ``DISCONNECT``: a workload client hangs up.

Nothing reads the wall clock; all randomness comes from ``seed`` (engines, prompt ids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ascendra_proxy.core.contracts import LifecycleObserver, Policy, swaps_predictor
from ascendra_proxy.core.predict import SlackPredictor
from ascendra_proxy.core.prefix import block_hashes
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.engine import EngineConfig, EngineModel, LatencyProfile, StepResult, Tokenizer
from ascendra_proxy.engine.profile import load_profile
from ascendra_proxy.sim.backend import Gauges, SimBackend
from ascendra_proxy.sim.events import EventQueue, Kind
from ascendra_proxy.sim.flight import Attempt, Flight, PromptIds
from ascendra_proxy.sim.proxy import SimProxy, Tally
from ascendra_proxy.sim.setup import SimConfig, backend_infos, make_policy
from loadgen.metrics import RequestRecord
from loadgen.workloads import WorkItem

__all__ = ["SimResult", "Simulator"]


@dataclass(slots=True)
class SimResult:
    flights: list[Flight]  # every request, in workload order
    tally: Tally
    backends: list[SimBackend]
    policy: Policy
    end_time: float
    events: int

    @property
    def records(self) -> list[RequestRecord]:
        return [f.record for f in self.flights]


class Simulator:
    def __init__(
        self,
        cfg: SimConfig,
        items: Sequence[WorkItem],
        seed: int = 0,
        policy: Policy | None = None,
        predictor: SlackPredictor | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if not items:
            raise ValueError("a simulation needs at least one request")
        self._cfg = cfg
        self._items = sorted(items, key=lambda it: (it.arrival_s, it.index))
        self._settings = cfg.sim
        self.policy = policy if policy is not None else make_policy(cfg.proxy)
        if predictor is not None:
            if not swaps_predictor(self.policy):
                raise ValueError(f"policy {self.policy.name!r} takes no predictor")
            self.policy.use_predictor(predictor)
        tok = tokenizer if tokenizer is not None else Tokenizer()
        self.backends = _build_backends(cfg, seed, tok)
        self.queue = EventQueue()
        self.proxy = SimProxy(
            cfg.proxy, self.policy, self.backends, cfg.sim, self.queue, self._ended
        )
        self._prompts = PromptIds(tok, seed)
        self._model = cfg.proxy.backends()[0][1].model
        self._block = cfg.proxy.backends()[0][1].engine_settings.block_size
        self._max_len = {b.name: b.engine.config.max_model_len for b in self.backends}
        self._flights: list[Flight] = []
        self._arrived = 0
        self._open = 0
        self._events = 0
        self._observe_every: float | None = None

    def observe(self, observer: LifecycleObserver, tick_s: float | None = None) -> None:
        """Report every request's lifecycle to ``observer`` (call before :meth:`run`).
        Under a policy without a monitor tick, ``tick_s`` asks for observation-only ticks
        that often (the observer's ``on_tick``; the policy is not asked)."""
        self.proxy.observer = observer
        if self.policy.tick_interval_s is None and tick_s is not None:
            self._observe_every = tick_s

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> SimResult:
        q = self.queue
        cn = self._settings.client_network_s
        q.push(self._items[0].arrival_s + cn, Kind.ARRIVAL, 0)
        tick = self.policy.tick_interval_s
        if tick is not None:
            q.push(tick, Kind.TICK, 1)
        elif self._observe_every is not None:
            q.push(self._observe_every, Kind.TICK, 0)
        interval = self._cfg.proxy.scrape.interval_s
        n = len(self.backends)
        for i, b in enumerate(self.backends):
            offset = interval * i / n if self._settings.stagger_scrapes else 0.0
            q.push(offset, Kind.SCRAPE, b)
        horizon = self._items[-1].arrival_s + cn + self._settings.drain_timeout_s
        handlers: dict[Kind, Callable[[float, Any], None]] = {
            Kind.TOKENS: self._on_tokens,
            Kind.REJECTED: self._on_rejected,
            Kind.ENGINE_ABORT: self._on_abort,
            Kind.ENGINE_ADD: self._on_add,
            Kind.STEP_END: self._on_step_end,
            Kind.SCRAPE: self._on_scrape,
            Kind.SCRAPED: self._on_scraped,
            Kind.ARRIVAL: self._on_arrival,
            Kind.DISCONNECT: self._on_disconnect,
            Kind.RECHECK: self.proxy.on_recheck,
            Kind.TICK: self._on_tick,
        }
        now = 0.0
        while len(q):
            t, kind, payload = q.pop()
            if t > horizon:
                break
            now = t
            self._events += 1
            handlers[kind](t, payload)
        return SimResult(
            self._flights, self.proxy.tally, self.backends, self.policy, now, self._events
        )

    @property
    def done(self) -> bool:
        """Every request arrived and ended (engines may still finish warm-ups)."""
        return self._arrived == len(self._items) and self._open == 0

    def _ended(self, f: Flight) -> None:
        self._open -= 1

    # -- handlers -------------------------------------------------------------------------

    def _on_arrival(self, t: float, i: int) -> None:
        item = self._items[i]
        if i + 1 < len(self._items):
            nxt = self._items[i + 1].arrival_s + self._settings.client_network_s
            self.queue.push(nxt, Kind.ARRIVAL, i + 1)
        f = self._flight(t, item)
        self._flights.append(f)
        self._arrived += 1
        self._open += 1
        if item.disconnect_after_s is not None:
            self.queue.push(t + item.disconnect_after_s, Kind.DISCONNECT, f)
        self.proxy.admit(t, f)

    def _flight(self, t: float, item: WorkItem) -> Flight:
        ids = self._prompts.for_item(item)
        state = RequestState(
            id=f"req-{item.index}",
            model=self._model,
            prompt_tokens=item.prompt_tokens,
            max_tokens=item.output_tokens,
            slo=SLO(item.slo_ttft_s, item.slo_tbt_s),
            arrival=t,
            prompt_tokens_exact=True,
            prefix_hashes=block_hashes(ids, self._block),
        )
        record = RequestRecord(
            index=item.index,
            arrival_s=item.arrival_s,
            prompt_tokens=item.prompt_tokens,
            output_tokens=item.output_tokens,
            slo_ttft_s=item.slo_ttft_s,
            slo_tbt_s=item.slo_tbt_s,
            prefix_group=item.prefix_group,
            sent_s=item.arrival_s,
            slo_class=item.slo_class,
        )
        return Flight(state, item, record, ids)

    def _on_disconnect(self, t: float, f: Flight) -> None:
        if not f.state.finished:
            self.proxy.end(t, f, Outcome.CLIENT_DISCONNECTED, "client disconnected")

    def _on_add(self, t: float, a: Attempt) -> None:
        if not a.open:
            return  # closed before it reached the engine
        b = a.backend
        req = a.request
        limit = self._max_len[b.name]
        total = len(req.prompt_token_ids) + req.sampling.max_tokens
        if len(req.prompt_token_ids) >= limit or total > limit:
            msg = f"context length {total} exceeds max_model_len {limit}"
            self.queue.push(t + self._settings.network_s, Kind.REJECTED, (a, msg))
            return
        req.arrival_time = t
        b.engine.add_request(req)
        self._kick(b, t)

    def _on_rejected(self, t: float, payload: tuple[Attempt, str]) -> None:
        self.proxy.on_rejected(t, payload[0], payload[1])

    def _on_abort(self, t: float, a: Attempt) -> None:
        engine = a.backend.engine
        if engine.has_request(a.engine_id):
            computed = engine.num_computed_tokens(a.engine_id)
            self.proxy.tally.aborted_computed[a.closed_by] += computed
        if engine.abort(a.engine_id):
            self._kick(a.backend, t)

    def _kick(self, b: SimBackend, t: float) -> None:
        res = b.start_step(t)
        if res is not None:
            self.queue.push(t + res.duration_s, Kind.STEP_END, (b, res))

    def _on_step_end(self, t: float, payload: tuple[SimBackend, StepResult]) -> None:
        b, res = payload
        b.step_done()
        if res.outputs:
            self.queue.push(t + self._settings.network_s, Kind.TOKENS, res.outputs)
        self._kick(b, t)

    def _on_tokens(self, t: float, outputs: Sequence[object]) -> None:
        self.proxy.on_outputs(t, outputs)  # type: ignore[arg-type]

    def _on_scrape(self, t: float, b: SimBackend) -> None:
        self.queue.push(t + self._settings.network_s, Kind.SCRAPED, (b, b.read_gauges()))

    def _on_scraped(self, t: float, payload: tuple[SimBackend, Gauges]) -> None:
        b, gauges = payload
        b.store_gauges(gauges, t)
        if not self.done:
            self.queue.push(t + self._cfg.proxy.scrape.interval_s, Kind.SCRAPE, b)

    def _on_tick(self, t: float, k: int) -> None:
        self.proxy.tick(t)
        if self.done:
            return
        interval = self.policy.tick_interval_s
        if interval is not None:
            self.queue.push((k + 1) * interval, Kind.TICK, k + 1)
        elif self._observe_every is not None:
            self.queue.push(t + self._observe_every, Kind.TICK, 0)


def _build_backends(cfg: SimConfig, seed: int, tok: Tokenizer) -> list[SimBackend]:
    profiles: dict[str, LatencyProfile] = {}
    out: list[SimBackend] = []
    for (_pool, b), info in zip(cfg.proxy.backends(), backend_infos(cfg.proxy), strict=True):
        s = b.engine_settings
        assert s.profile is not None  # checked when the config was loaded
        if s.profile not in profiles:
            profiles[s.profile] = load_profile(s.profile)
        profile = profiles[s.profile]
        config = EngineConfig(
            max_num_seqs=s.max_num_seqs,
            max_num_batched_tokens=s.max_num_batched_tokens,
            block_size=s.block_size,
            num_gpu_blocks=s.num_gpu_blocks,
            scheduling_policy=s.scheduling_policy,
            enable_prefix_caching=s.enable_prefix_caching,
            max_model_len=s.max_model_len,
        )
        engine = EngineModel(config, profile, seed=seed, tokenizer=tok)
        frontend = profile.frontend_ms / 1000.0 if cfg.sim.frontend_delay else 0.0
        out.append(SimBackend(info, engine, frontend))
    return out
