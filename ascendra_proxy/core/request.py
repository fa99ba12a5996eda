"""One request's lifecycle, progress and deadlines, as the proxy (or the simulator) sees it.

Theory of operation.  A :class:`RequestState` is created when the proxy admits a request and
is driven by its owner with explicit timestamps (``now`` is always an argument; nothing here
reads a clock).  Its phase moves forward only::

    QUEUED --on_dispatch--> DISPATCHED --on_tokens--> STREAMING --finish--> FINISHED
       ^                        |   ^                     |
       +------on_requeue--------+   +----on_dispatch------+   (retry / offload / migration)

and any phase may ``finish``.  ``finish`` is the single terminal transition and happens
exactly once: it returns ``False`` (and changes nothing) when the request already ended, so
racing paths (client disconnect vs. stream end vs. backend failure) cannot double-count.

Token accounting follows the paper and ``vllm bench``: ``on_tokens(now, n)`` reports ``n``
tokens that arrived together at ``now``.  The first call fixes the time to first token.
Gaps are counted per token, never per arrival: of ``n`` tokens that arrived together, the
first has the gap ``now - last_token_at`` (none for the stream's first token) and the other
``n - 1`` have zero gaps, so a stream of ``k`` tokens has exactly ``k - 1`` gaps however its
bytes were coalesced, and ``gap_sum / gaps`` is the mean TBT ``(last - first) / (tokens - 1)``
(vLLM's TPOT) rather than a per-read figure that grows with coalescing.  ``max_gap`` is the
largest gap.  Tokens are tokens, never chunks: an empty chunk is ``n = 0`` and changes
nothing.

Deadlines: the TTFT deadline is ``arrival + slo.ttft_s``.  While streaming, the mean-TBT
budget gives every next token a deadline: after ``k`` tokens the mean stays within the SLO
iff token ``k + 1`` arrives by ``first_token_at + k * slo.tbt_s``.  Slack is deadline minus
``now``; negative slack means the objective is already lost for that token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ascendra_proxy.core.slo import SLO

__all__ = ["Outcome", "Phase", "RequestState", "RequestStateError"]


class RequestStateError(RuntimeError):
    """A driver used a RequestState out of order (a bug in the caller, not a runtime condition)."""


class Outcome(Enum):
    COMPLETED = "completed"
    CLIENT_DISCONNECTED = "client_disconnected"
    BACKEND_FAILED = "backend_failed"
    REJECTED = "rejected"
    CLIENT_ERROR = "client_error"  # the client's own mistake (an engine's 4xx): no SLO verdict
    SHED = "shed"  # refused under overload: its TTFT deadline was out of reach (admission)
    TIMED_OUT = "timed_out"


class Phase(Enum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    STREAMING = "streaming"
    FINISHED = "finished"


@dataclass(slots=True)
class RequestState:
    """Mutable per-request record; owned by one driver, read by policies."""

    id: str
    model: str
    prompt_tokens: int  # exact when the prompt was tokenized, else an estimate
    max_tokens: int
    slo: SLO
    arrival: float
    prompt_tokens_exact: bool = False
    slo_class: str | None = None
    phase: Phase = Phase.QUEUED
    backend: str | None = None
    dispatched_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    tokens: int = 0
    gap_sum: float = 0.0
    gaps: int = 0  # tokens after the first (each has a gap; tokens arriving together: zero)
    max_gap: float = 0.0
    attempts: int = 0  # dispatches so far (retries, offloads and migrations included)
    moves: int = 0  # dispatches after the first token (mid-stream migrations)
    outcome: Outcome | None = None
    finished_at: float | None = None
    # Chained hashes of the prompt's full token blocks (core.prefix.block_hashes), filled by
    # the driver when it knows the prompt's token ids; empty disables prefix affinity.
    prefix_hashes: tuple[int, ...] = ()

    # -- transitions -------------------------------------------------------------------

    def on_dispatch(self, now: float, backend: str) -> None:
        """The request was sent to ``backend`` (first dispatch, retry, offload or migration)."""
        self._require_live("on_dispatch")
        self.backend = backend
        self.dispatched_at = now
        self.attempts += 1
        if self.tokens > 0:
            self.moves += 1
            self.phase = Phase.STREAMING
        else:
            self.phase = Phase.DISPATCHED

    def on_requeue(self) -> None:
        """The request left its backend before a token and waits in the proxy again."""
        self._require_live("on_requeue")
        if self.tokens > 0:
            raise RequestStateError(f"request {self.id}: cannot requeue after tokens arrived")
        self.phase = Phase.QUEUED
        self.backend = None

    def on_tokens(self, now: float, n: int) -> bool:
        """``n`` tokens arrived at ``now``; returns False (ignored) once the request finished."""
        if self.phase is Phase.FINISHED:
            return False
        if n < 0:
            raise RequestStateError(f"request {self.id}: negative token count {n}")
        if self.phase is Phase.QUEUED:
            raise RequestStateError(f"request {self.id}: tokens before dispatch")
        if n == 0:
            return True
        if self.last_token_at is None:
            self.first_token_at = now
            self.gaps += n - 1  # the first token has no gap, the ones with it zero gaps
        else:
            gap = now - self.last_token_at
            if gap < 0:
                raise RequestStateError(f"request {self.id}: time went backwards ({gap:.6f}s)")
            self.gap_sum += gap
            self.gaps += n  # one real gap, then zero gaps for the tokens that came with it
            self.max_gap = max(self.max_gap, gap)
        self.last_token_at = now
        self.tokens += n
        self.phase = Phase.STREAMING
        return True

    def finish(self, now: float, outcome: Outcome) -> bool:
        """End the request; True the first time, False (no change) on every later call."""
        if self.phase is Phase.FINISHED:
            return False
        self.phase = Phase.FINISHED
        self.outcome = outcome
        self.finished_at = now
        return True

    def _require_live(self, what: str) -> None:
        if self.phase is Phase.FINISHED:
            raise RequestStateError(f"request {self.id}: {what} after finish")

    # -- derived values ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def started(self) -> bool:
        """True once the first token arrived."""
        return self.first_token_at is not None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.arrival

    @property
    def ttft_deadline(self) -> float:
        return self.arrival + self.slo.ttft_s

    @property
    def mean_tbt(self) -> float | None:
        """Mean time between tokens, ``(last - first) / (tokens - 1)``; None below 2 tokens."""
        if self.first_token_at is None or self.last_token_at is None or self.tokens < 2:
            return None
        return (self.last_token_at - self.first_token_at) / (self.tokens - 1)

    @property
    def mean_gap(self) -> float | None:
        """Mean inter-token gap (per token, so equal to ``mean_tbt``); None below 2 tokens."""
        return None if self.gaps == 0 else self.gap_sum / self.gaps

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.max_tokens - self.tokens)

    @property
    def next_token_deadline(self) -> float:
        """When the next token must arrive to keep TTFT (before the first) or mean TBT in SLO."""
        if self.first_token_at is None:
            return self.ttft_deadline
        return self.first_token_at + self.tokens * self.slo.tbt_s

    def slack(self, now: float) -> float:
        """Seconds left before the next token's deadline (negative: already late)."""
        return self.next_token_deadline - now

    def waited(self, now: float) -> float:
        """Seconds since arrival, up to the first token (or ``now`` while none arrived)."""
        end = self.first_token_at if self.first_token_at is not None else now
        return end - self.arrival

    @property
    def ttft_met(self) -> bool:
        ttft = self.ttft
        return ttft is not None and ttft <= self.slo.ttft_s

    @property
    def tbt_met(self) -> bool:
        """Mean TBT within SLO (vacuously true with fewer than two tokens)."""
        mean = self.mean_tbt
        return mean is None or mean <= self.slo.tbt_s

    @property
    def slo_met(self) -> bool:
        """Both objectives met: TTFT within SLO and mean TBT within SLO (the paper's criterion)."""
        return self.ttft_met and self.tbt_met
