"""Builders for the simulator tests: small configs, workloads, and scripted policies."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.contracts import Policy
from ascendra_proxy.core.decisions import Action, Decision, Dispatch, Move
from ascendra_proxy.core.request import Phase, RequestState
from ascendra_proxy.sim.setup import SimConfig, parse_sim_config
from loadgen.arrivals import ArrivalSpec
from loadgen.lengths import parse_length_spec
from loadgen.workloads import SloClass, WorkItem, WorkloadSpec, build_workload

MODEL = "llama3-8b"


def backend(name: str, **settings: Any) -> dict[str, Any]:
    es = {"profile": "a100-llama3-8b", "max_num_seqs": 64, "num_gpu_blocks": 4096}
    es.update(settings)
    return {
        "url": f"http://{name}.sim:8000",
        "engine": "vllm",
        "model": MODEL,
        "name": name,
        "engine_settings": es,
    }


def config_dict(
    policy: dict[str, Any] | None = None,
    lp: int = 2,
    hp: int = 1,
    sim: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    pools = [
        {
            "name": "lp",
            "role": "lp",
            "backends": [backend(f"lp-{i}", **settings) for i in range(lp)],
        }
    ]
    if hp:
        pools.append(
            {
                "name": "hp",
                "role": "hp",
                "backends": [backend(f"hp-{i}", **settings) for i in range(hp)],
            }
        )
    doc: dict[str, Any] = {
        "pools": pools,
        "slo": {"default": {"ttft_ms": 1000, "tpot_ms": 150}},
        "policy": policy or {"type": "round_robin"},
    }
    if sim is not None:
        doc["simulation"] = sim
    return doc


def sim_config(policy: dict[str, Any] | None = None, **kw: Any) -> SimConfig:
    return parse_sim_config(config_dict(policy, **kw))


def workload(
    n: int = 60,
    rate: float = 8.0,
    prompt: str = "uniform:64:1500",
    output: str = "uniform:8:120",
    seed: int = 3,
    disconnect: float | None = None,
) -> list[WorkItem]:
    from loadgen.workloads import DisconnectSpec

    spec = WorkloadSpec(
        num_requests=n,
        arrivals=ArrivalSpec("poisson", rate),
        slo_classes=(SloClass(1.0, 0.15),),
        prompt_len=parse_length_spec(prompt),
        output_len=parse_length_spec(output),
        disconnect=DisconnectSpec(disconnect, 0.3) if disconnect else None,
        seed=seed,
    )
    return build_workload(spec)


@dataclass
class Call:
    kind: str  # "route" | "tick" | "finish"
    now: float
    args: Any
    result: Any


@dataclass
class Recorder:
    """Wraps a policy; keeps deep copies of every input and the output of every call."""

    inner: Policy
    calls: list[Call] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def tick_interval_s(self) -> float | None:
        return self.inner.tick_interval_s

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        args = (copy.deepcopy(req), list(backends), exclude)
        out = self.inner.route(req, backends, now, exclude)
        self.calls.append(Call("route", now, args, out))
        return out

    def on_finish(self, req: RequestState, now: float) -> None:
        self.calls.append(Call("finish", now, copy.deepcopy(req), None))
        self.inner.on_finish(req, now)

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        args = ([copy.deepcopy(r) for r in requests], list(backends))
        out = list(self.inner.tick(now, requests, backends))
        self.calls.append(Call("tick", now, args, out))
        return out


class Scripted:
    """Routes to ``first``; at each tick, moves requests per ``plan``: (kind, after_tokens,
    target) applied once to every request that reached ``after_tokens`` tokens (0 = still
    waiting for the first token)."""

    name = "scripted"
    tick_interval_s = 0.02

    def __init__(self, first: str, plan: tuple[str, int, str] | None = None) -> None:
        self.first = first
        self.plan = plan
        self.moved: set[str] = set()
        self.finished: list[str] = []

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        return Dispatch(self.first, "scripted")

    def on_finish(self, req: RequestState, now: float) -> None:
        self.finished.append(req.id)

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        if self.plan is None:
            return ()
        kind, after, target = self.plan
        out: list[Action] = []
        for r in requests:
            if r.id in self.moved or r.phase is Phase.QUEUED or r.backend == target:
                continue
            ready = r.tokens == 0 if after == 0 else r.tokens >= after
            if ready and r.remaining_tokens > 1:
                self.moved.add(r.id)
                move_kind = "offload" if kind == "offload" else "migrate"
                out.append(Move(r.id, Dispatch(target, f"scripted_{kind}"), move_kind))
        return out
