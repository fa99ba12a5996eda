"""The split topology inside one call stack: a ``Policy`` whose every call crosses the wire.

``LoopbackPolicy`` plays one worker in front of a :class:`~.brain.Brain`: each ``route``,
``tick`` and ``on_finish`` becomes the worker's messages (encoded and decoded, as on a
socket), preceded by a ``progress`` frame with the driver's exact counts and request
progress, and the brain's answers come back as the decision or actions.  A driver (the
simulator, a test) that uses it in place of the policy runs the policy exactly as the
scheduler process does, so comparing the two runs shows whether the split changes any
decision.  The live worker differs only in timing: its progress is up to one period old.
"""

from __future__ import annotations

from collections.abc import Sequence

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot, ScrapedLoad
from ascendra_proxy.core.contracts import Policy
from ascendra_proxy.core.decisions import Action, Assign, Decision, Drop, Hold, Move
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.scaleout.brain import Brain, Outgoing
from ascendra_proxy.scaleout.messages import (
    ActionMessage,
    Finish,
    Hello,
    Progress,
    RouteAsk,
    SchedulerMessage,
    WorkerMessage,
    decode,
    encode,
    progress_row,
    request_to_wire,
)

__all__ = ["LoopbackPolicy"]

WORKER = "loopback"


class LoopbackPolicy:
    def __init__(self, policy: Policy, backends: Sequence[BackendInfo]) -> None:
        self.name = policy.name
        self.tick_interval_s = policy.tick_interval_s
        self._snaps: dict[str, BackendSnapshot] = {}
        self.brain = Brain(policy, backends, epoch=1, scraped=self._scraped)
        hello = _wire(Hello(WORKER, 0.0))
        assert isinstance(hello, Hello)
        self.brain.connect(WORKER, hello, 0.0)
        self._ack = 0
        self.frames = 0

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        self._sync(backends, ())
        for a in self._send(RouteAsk(request_to_wire(req), sorted(exclude)), now):
            if isinstance(a, Assign):
                return a.dispatch
            if isinstance(a, Drop):
                return a.reject
        return Hold("scheduler_wait", "held by the scheduler")

    def on_finish(self, req: RequestState, now: float) -> None:
        outcome = req.outcome.value if req.outcome is not None else "completed"
        self._send(Finish(req.id, outcome, now), now)

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        self._sync(backends, requests)
        return self._receive(self.brain.tick(now))

    def _sync(self, backends: Sequence[BackendSnapshot], requests: Sequence[RequestState]) -> None:
        self._snaps = {b.name: b for b in backends}
        counts = {b.name: [b.inflight, b.queued_prompt_tokens] for b in backends}
        down = [b.name for b in backends if not b.healthy]
        rows = [progress_row(r) for r in requests]
        self._send(Progress(self._ack, counts, down, rows), 0.0)

    def _send(self, msg: RouteAsk | Progress | Finish, now: float) -> list[Action]:
        frame = _wire(msg)
        assert isinstance(frame, RouteAsk | Progress | Finish)
        self.frames += 1
        return self._receive(self.brain.on_message(WORKER, frame, now))

    def _receive(self, out: list[Outgoing]) -> list[Action]:
        frames = [_wire(m) for _, m in out]
        actions = [m.action for m in frames if isinstance(m, ActionMessage)]
        self._ack += sum(isinstance(a, Assign | Move) for a in actions)
        return actions

    def _scraped(self, name: str, _now: float) -> ScrapedLoad | None:
        snap = self._snaps.get(name)
        return None if snap is None else snap.scraped


def _wire(msg: WorkerMessage | SchedulerMessage) -> WorkerMessage | SchedulerMessage:
    """A message after a trip through the codec."""
    return decode(encode(msg))
