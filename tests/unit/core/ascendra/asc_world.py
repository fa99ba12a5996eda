"""Builders and a tiny driver for the ascendra policy tests (plain values, deterministic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot, Role, ScrapedLoad
from ascendra_proxy.core.decisions import Assign, Decision, Dispatch, Move
from ascendra_proxy.core.policies.ascendra import AscendraAction, AscendraParams, AscendraPolicy
from ascendra_proxy.core.policies.ascendra.view import EngineFacts
from ascendra_proxy.core.predict import Prediction, QueryBatch, SlackPredictor
from ascendra_proxy.core.request import Phase, RequestState
from ascendra_proxy.core.slo import SLO

SLO_1S = SLO(ttft_s=1.0, tbt_s=0.15)
MODEL = "m"


class LinearProfile:
    """A step-time model with round numbers: 10 ms + 0.05 ms per token, no attention cost."""

    def __init__(self, base_s: float = 0.010, per_token_s: float = 0.00005) -> None:
        self.base_s = base_s
        self.per_token_s = per_token_s

    def step_time(
        self, prefill_tokens: int, decode_seqs: int, decode_context: int, prefill_attn_work: float
    ) -> float:
        return self.base_s + self.per_token_s * (prefill_tokens + decode_seqs)

    def prefill_time(self, prompt_tokens: int, chunk: int, cached_tokens: int = 0) -> float:
        todo = max(prompt_tokens - cached_tokens, 0)
        return -(-todo // chunk) * self.base_s + self.per_token_s * todo


def info(
    name: str, role: Role, *, model: str = MODEL, priority: bool = True, max_num_seqs: int = 256
) -> BackendInfo:
    return BackendInfo(
        name=name,
        pool=role.value,
        role=role,
        engine="vllm",
        model=model,
        max_num_seqs=max_num_seqs,
        priority_scheduling=priority,
    )


def facts(budget: int = 2048, max_num_seqs: int = 256, priority: bool = True) -> EngineFacts:
    return EngineFacts(
        profile="lin",
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        priority_scheduling=priority,
    )


@dataclass(slots=True)
class PrefixedRequest(RequestState):
    """A RequestState that carries prompt block hashes (see the change request)."""

    prefix_hashes: tuple[int, ...] = ()


def request(
    rid: str,
    arrival: float = 0.0,
    prompt: int = 1000,
    max_tokens: int = 100,
    slo: SLO = SLO_1S,
    model: str = MODEL,
    prefix: tuple[int, ...] = (),
) -> RequestState:
    return PrefixedRequest(
        id=rid,
        model=model,
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        slo=slo,
        arrival=arrival,
        prefix_hashes=prefix,
    )


class StubPredictor:
    """Answers from tables: TTFT per backend (+ per queued token), resident next-token time,
    next-k time per backend; cached tokens shave ``per_cached_s`` each."""

    def __init__(
        self,
        ttft: dict[str, float],
        next_k: dict[str, float] | None = None,
        resident_ttft: float = 0.01,
        per_ahead_s: float = 0.0,
        per_cached_s: float = 0.0,
    ) -> None:
        self.ttft = ttft
        self.next_k = next_k or {}
        self.resident_ttft = resident_ttft
        self.per_ahead_s = per_ahead_s
        self.per_cached_s = per_cached_s
        self.calls = 0
        self.batches: list[QueryBatch] = []

    @property
    def source(self) -> Literal["analytical", "learned"]:
        return "learned"

    def predict(self, batch: QueryBatch) -> Prediction:
        self.calls += 1
        self.batches.append(batch)
        names = [batch.backends[i].name for i in batch.backend_index]
        ttft = np.array([self.ttft.get(n, 0.1) for n in names])
        ttft = ttft + self.per_ahead_s * batch.queued_ahead_tokens
        ttft = ttft - self.per_cached_s * batch.cached_tokens
        ttft = np.where(batch.resident, self.resident_ttft, ttft)
        nk = np.array([self.next_k.get(n, 0.01 * batch.horizon_tokens) for n in names])
        return Prediction(ttft, nk, "learned")


def scraped(
    running: int | None = 0, waiting: int | None = 0, kv: float | None = 0.0, age: float = 0.1
) -> ScrapedLoad:
    return ScrapedLoad(running=running, waiting=waiting, kv_usage=kv, age_s=age)


@dataclass
class World:
    """Backends + requests, with snapshots derived from the requests like proxy/load.py does."""

    infos: list[BackendInfo]
    params: AscendraParams = field(default_factory=AscendraParams)
    healthy: dict[str, bool] = field(default_factory=dict)
    scrape: dict[str, ScrapedLoad] = field(default_factory=dict)
    reqs: dict[str, RequestState] = field(default_factory=dict)
    predictor: SlackPredictor | None = None
    policy: AscendraPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = AscendraPolicy(
            self.params,
            self.infos,
            step_models={"lin": LinearProfile()},
            facts={
                b.name: facts(max_num_seqs=b.max_num_seqs or 256, priority=b.priority_scheduling)
                for b in self.infos
            },
            predictor=self.predictor,
        )

    def snapshots(self) -> list[BackendSnapshot]:
        out = []
        for b in self.infos:
            live = [
                r
                for r in self.reqs.values()
                if r.backend == b.name and not r.finished and r.phase is not Phase.QUEUED
            ]
            queued = sum(r.prompt_tokens for r in live if r.phase is Phase.DISPATCHED)
            out.append(
                BackendSnapshot(
                    name=b.name,
                    pool=b.pool,
                    role=b.role,
                    engine=b.engine,
                    model=b.model,
                    healthy=self.healthy.get(b.name, True),
                    inflight=len(live),
                    queued_prompt_tokens=queued,
                    scraped=self.scrape.get(b.name),
                    max_num_seqs=b.max_num_seqs,
                )
            )
        return out

    def arrive(self, r: RequestState, now: float | None = None) -> Decision:
        self.reqs[r.id] = r
        d = self.policy.route(r, self.snapshots(), r.arrival if now is None else now)
        if isinstance(d, Dispatch):
            r.on_dispatch(r.arrival if now is None else now, d.backend)
        return d

    def tick(self, now: float, apply: bool = True) -> list[AscendraAction]:
        live = [r for r in self.reqs.values() if not r.finished]
        actions = list(self.policy.tick(now, live, self.snapshots()))
        if apply:
            for a in actions:
                if isinstance(a, Assign | Move):
                    r = self.reqs[a.request_id]
                    if isinstance(a, Move) and r.tokens == 0 and r.phase is not Phase.QUEUED:
                        r.on_requeue()
                    r.on_dispatch(now, a.dispatch.backend)
        return actions

    def finish(self, rid: str, now: float) -> None:
        from ascendra_proxy.core.request import Outcome

        r = self.reqs[rid]
        if r.finish(now, Outcome.COMPLETED):
            self.policy.on_finish(r, now)


def place(w: World, r: RequestState, backend: str, now: float) -> RequestState:
    """Put ``r`` on ``backend`` without routing it (the next tick adopts it)."""
    w.reqs[r.id] = r
    r.on_dispatch(now, backend)
    return r


def busy(w: World, backend: str, n: int) -> None:
    """``n`` long streams already running on ``backend`` (ids ``<backend>-busy<i>``)."""
    for i in range(n):
        r = request(f"{backend}-busy{i}", arrival=-10.0, prompt=10, max_tokens=10_000)
        w.reqs[r.id] = r
        r.on_dispatch(-10.0, backend)
        r.on_tokens(-9.0, 1)


def lp_hp(n_lp: int = 2, n_hp: int = 1, max_num_seqs: int = 256) -> list[BackendInfo]:
    lp = [info(f"lp{i}", Role.LP, max_num_seqs=max_num_seqs) for i in range(n_lp)]
    return lp + [info(f"hp{i}", Role.HP, max_num_seqs=max_num_seqs) for i in range(n_hp)]


def with_params(**kw: object) -> AscendraParams:
    return replace(AscendraParams(), **kw)  # type: ignore[arg-type]


def disp(a: object) -> Dispatch:
    """The Dispatch carried by an Assign/Move, or a route() decision that must be one."""
    if isinstance(a, Assign | Move):
        return a.dispatch
    assert isinstance(a, Dispatch), a
    return a


def names(actions: Sequence[object]) -> list[tuple[str, str, str]]:
    out = []
    for a in actions:
        if isinstance(a, Assign):
            out.append(("assign", a.request_id, a.dispatch.backend))
        elif isinstance(a, Move):
            out.append((a.kind, a.request_id, a.dispatch.backend))
    return out
