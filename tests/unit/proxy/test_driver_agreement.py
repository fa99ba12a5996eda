"""The live proxy and the simulator carry out the same actions the same way.

One table: a request in a given state (held, waiting on backend ``a`` for its first token,
streaming on ``a``, streaming without an exact continuation, finished), a sequence of
actions carried out in one instant (as a tick's are), and the effect every driver must
show right after them: whether the request's attempt was
closed, where it is dispatched next, whether it ended (with which status), which backend
got a warm-up, which role was mirrored, and which decision labels were counted.  Each row
runs against both drivers through small adapters that only read the drivers' own state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, Rig, rig, wait_until

from ascendra_proxy.core.backend import BackendSnapshot, Role
from ascendra_proxy.core.decisions import (
    Action,
    Assign,
    Decision,
    Dispatch,
    Drop,
    Hold,
    Move,
    Reject,
    SetRole,
    Warm,
)
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.engine import TokenOutput
from ascendra_proxy.proxy.flight import Flight
from ascendra_proxy.proxy.ticker import apply_action
from ascendra_proxy.sim.flight import Flight as SimFlight
from ascendra_proxy.sim.setup import parse_sim_config
from ascendra_proxy.sim.simulator import Simulator
from loadgen.metrics import RequestRecord
from loadgen.workloads import WorkItem

RID = "<request>"  # stands for the scenario's request id in the table
REJECT = Reject(503, "infeasible", "cannot meet the deadline", "drop_late")


@dataclass(frozen=True)
class Seen:
    """What a driver shows right after carrying out one action."""

    closed: bool = False  # the attempt the request had was closed
    to: str | None = None  # the backend of its next dispatch
    ended: int | None = None  # it ended now, with this HTTP status
    warmed: tuple[str, ...] = ()  # backends that got a warm-up of its prompt
    role: tuple[str, str, bool] | None = None  # (backend, role, draining) mirrored
    counted: tuple[str, ...] = ()  # decision labels counted, sorted


def assign() -> Action:
    return Assign(RID, Dispatch("b", "lp_room"))


def offload() -> Action:
    return Move(RID, Dispatch("b", "offload_ttft"), "offload")


def migrate() -> Action:
    return Move(RID, Dispatch("b", "migrate_tbt"), "migrate")


def drop() -> Action:
    return Drop(RID, REJECT)


def warm() -> Action:
    return Warm(RID, "b", "warm_low_slack")


def set_role() -> Action:
    return SetRole("b", Role.HP, True, "role_grow_hp")


# (scenario, action, expected)
def to_c() -> Action:
    return Assign(RID, Dispatch("c", "lp_room"))


def offload_c() -> Action:
    return Move(RID, Dispatch("c", "offload_ttft"), "offload")


SEQUENCES: list[tuple[str, tuple[Action, ...], Seen]] = [
    # the first binding stands: the request has its dispatch (pending or sent)
    ("held", (assign(), to_c()), Seen(to="b", counted=("lp_room",))),
    # a request the policy dropped is finished for every later action
    ("waiting", (drop(), warm()), Seen(closed=True, ended=503, counted=("drop_late",))),
    ("waiting", (drop(), offload()), Seen(closed=True, ended=503, counted=("drop_late",))),
    # a second move of the same instant wins
    (
        "waiting",
        (offload(), offload_c()),
        Seen(closed=True, to="c", counted=("offload_ttft", "offload_ttft")),
    ),
]
TABLE: list[tuple[str, Action, Seen]] = [
    ("held", assign(), Seen(to="b", counted=("lp_room",))),
    ("held", offload(), Seen(to="b", counted=("offload_ttft",))),
    ("held", drop(), Seen(ended=503, counted=("drop_late",))),
    ("held", warm(), Seen(warmed=("b",), counted=("warm_low_slack",))),
    ("waiting", assign(), Seen()),  # it has an attempt already: nothing to bind
    ("waiting", offload(), Seen(closed=True, to="b", counted=("offload_ttft",))),
    ("waiting", migrate(), Seen(closed=True, to="b", counted=("migrate_tbt",))),
    ("waiting", drop(), Seen(closed=True, ended=503, counted=("drop_late",))),
    ("streaming", migrate(), Seen(closed=True, to="b", counted=("migrate_tbt",))),
    ("streaming", offload(), Seen(closed=True, to="b", counted=("offload_ttft",))),
    ("streaming", warm(), Seen(warmed=("b",), counted=("warm_low_slack",))),
    ("streaming-inexact", migrate(), Seen(counted=("migrate_unsupported",))),
    ("streaming-inexact", offload(), Seen(counted=("migrate_unsupported",))),
    ("finished", assign(), Seen()),
    ("finished", offload(), Seen()),
    ("finished", drop(), Seen()),
    ("finished", warm(), Seen()),
    ("waiting", set_role(), Seen(role=("b", "hp", True), counted=("role_grow_hp",))),
]
ROWS = [(s, (a,), seen) for s, a, seen in TABLE] + SEQUENCES
IDS = [
    s + "".join(f"-{type(a).__name__}{getattr(a, 'kind', '')}" for a in actions)
    for s, actions, _ in ROWS
]


def bind(action: Action, rid: str) -> Action:
    """The table's action, naming the scenario's request."""
    fields = {k: getattr(action, k) for k in action.__dataclass_fields__}
    if fields.get("request_id") == RID:
        fields["request_id"] = rid
    return type(action)(**fields)


def delta(before: Counter[str], after: Counter[str]) -> tuple[str, ...]:
    return tuple(sorted((after - before).elements()))


# -- the live proxy ------------------------------------------------------------------------

STREAM = {"model": MODEL, "prompt": [5, 6, 7, 8], "stream": True}


@contextlib.asynccontextmanager
async def live(scenario: str) -> AsyncIterator[tuple[Rig, str, list[Any]]]:
    """A proxy over fakes ``a``, ``b``, ``c`` with one request in ``scenario``; yields the rig,
    the request id and what to clean up."""
    slow = Script(first_delay_s=30)
    streaming = Script(tokens=400, gap_s=0.02)
    a = FakeBackend("a", script=streaming if scenario.startswith("streaming") else slow)
    if scenario == "finished":
        a.script = Script(tokens=2)
    async with rig([a, FakeBackend("b"), FakeBackend("c")]) as r:
        gw = r.gateway
        held = scenario == "held"

        def route(*args: Any, **kw: Any) -> Decision:
            return Hold("held_edf") if held else Dispatch("a", "first")

        gw.policy.route = route  # type: ignore[method-assign]
        admitted: list[Flight] = []
        admit = gw.admit

        def record(*args: Any) -> Flight:
            admitted.append(admit(*args))
            return admitted[-1]

        gw.admit = record  # type: ignore[method-assign]
        body = {**STREAM, "stop": ["zz"]} if scenario == "streaming-inexact" else STREAM
        task = asyncio.create_task(r.post("/v1/completions", body))
        cleanup: list[Any] = [task]
        await wait_until(lambda: len(admitted) == 1)
        if held:
            await wait_until(lambda: gw.held == 1)
        elif scenario == "waiting":
            await wait_until(lambda: a.running == 1)
        (flight,) = admitted
        rid = flight.state.id
        if scenario.startswith("streaming"):
            await wait_until(lambda: flight.state.tokens >= 1)
        elif scenario == "finished":
            resp = await task
            await resp.read()
            await wait_until(lambda: not gw.flights)
        try:
            yield r, rid, cleanup
        finally:
            for t in cleanup:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await t


async def seen_live(scenario: str, actions: tuple[Action, ...]) -> Seen:
    async with live(scenario) as (r, rid, _):
        gw = r.gateway
        flight = gw.flights.get(rid)
        attempt = None if flight is None else flight.attempt
        warmed: list[str] = []
        real_warm = gw.warm

        def warm(f: Any, backend: str, priority: int | None = None) -> bool:
            warmed.append(backend)
            return real_warm(f, backend, priority)

        gw.warm = warm  # type: ignore[method-assign]
        before = Counter(gw.telemetry.decisions)
        for action in actions:
            apply_action(gw, bind(action, rid))
        role = gw.roles.get("b")
        return Seen(
            closed=attempt is not None and attempt._closed,
            to=None if flight is None or flight.pending is None else flight.pending.backend,
            ended=None if flight is None or flight.dropped is None else flight.dropped.status,
            warmed=tuple(warmed),
            role=None if role is None else ("b", role[0].value, role[1]),
            counted=delta(before, Counter(gw.telemetry.decisions)),
        )


# -- the simulator -------------------------------------------------------------------------


def sim_backend(name: str) -> dict[str, Any]:
    return {
        "url": f"http://{name}.sim:8000",
        "engine": "vllm",
        "model": "llama3-8b",
        "name": name,
        "engine_settings": {"profile": "a100-llama3-8b"},
    }


class ScenarioPolicy:
    """Holds or sends everything to ``a``, as the scenario needs; never ticks."""

    name = "scenario"
    tick_interval_s = None

    def __init__(self, hold: bool) -> None:
        self.hold = hold

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        return Hold("held_edf") if self.hold else Dispatch("a", "first")

    def on_finish(self, req: RequestState, now: float) -> None:
        return None

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        return ()


def simulated(scenario: str) -> tuple[Simulator, SimFlight]:
    pools = [{"name": "p", "role": "mixed", "backends": [sim_backend(n) for n in "abc"]}]
    cfg = parse_sim_config({"pools": pools, "policy": {"type": "round_robin"}})
    item = WorkItem(0, 0.0, 4, 400, 1.0, 0.15, None, None)
    sim = Simulator(cfg, [item], policy=ScenarioPolicy(scenario == "held"))
    state = RequestState(
        id="req-0",
        model="llama3-8b",
        prompt_tokens=4,
        max_tokens=400,
        slo=SLO(1.0, 0.15),
        arrival=0.0,
        prompt_tokens_exact=True,
    )
    record = RequestRecord(0, 0.0, 4, 400, 1.0, 0.15)
    f = SimFlight(state, item, record, [1, 5, 6, 7])
    proxy = sim.proxy
    proxy.admit(0.0, f)
    if scenario.startswith("streaming") or scenario == "finished":
        assert f.attempt is not None
        proxy.on_outputs(0.1, [TokenOutput(f.attempt.engine_id, (9,))])
    if scenario == "streaming-inexact":
        f.exact_continuation = False  # as a request with stop strings would be
    if scenario == "finished":
        proxy.end(0.2, f, Outcome.COMPLETED)
    return sim, f


def seen_sim(scenario: str, actions: tuple[Action, ...]) -> Seen:
    sim, f = simulated(scenario)
    proxy = sim.proxy
    attempt, was_finished = f.attempt, f.state.finished
    warms_before = len([e for e in f.events if e["kind"] == "warm"])
    before = Counter(proxy.tally.decisions)
    roles_before = len(proxy.tally.roles)
    for action in actions:
        proxy.apply(0.3, bind(action, f.id))
    new_attempt = f.attempt is not None and f.attempt is not attempt
    ended = None
    if f.state.finished and not was_finished:
        ended = int((f.record.error or "0").split()[0])
    roles = proxy.tally.roles[roles_before:]
    return Seen(
        closed=attempt is not None and not attempt.open,
        to=f.attempt.backend.name if new_attempt and f.attempt is not None else None,
        ended=ended,
        warmed=tuple(e["to"] for e in f.events if e["kind"] == "warm")[warms_before:],
        role=None
        if not roles
        else (roles[-1]["backend"], roles[-1]["role"], roles[-1]["draining"]),
        counted=delta(before, Counter(proxy.tally.decisions)),
    )


# -- the agreement -------------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "actions", "expected"), ROWS, ids=IDS)
async def test_the_live_proxy_carries_out_the_table(
    scenario: str, actions: tuple[Action, ...], expected: Seen
) -> None:
    assert await seen_live(scenario, actions) == expected


@pytest.mark.parametrize(("scenario", "actions", "expected"), ROWS, ids=IDS)
def test_the_simulator_carries_out_the_table(
    scenario: str, actions: tuple[Action, ...], expected: Seen
) -> None:
    assert seen_sim(scenario, actions) == expected
