"""The request log (``serve --request-log FILE``): one JSON line per finished request.

It answers "which requests were slow, and what did the proxy do to them": when the request
arrived, how long it waited in the proxy before its first dispatch, each backend it was
sent to with the policy's reason, each move (offload, migration, failover) with its reason,
when its first token
came, and how it ended.  Times are seconds: ``arrival`` on the proxy's monotonic clock
(only differences mean something), the others relative to ``arrival``.  Lines are written
when a request ends, so a reader sees every finished request of a run once the proxy has
answered it.  Off by default: a busy proxy writes one line per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson

from ascendra_proxy.proxy.flight import Flight

__all__ = ["RequestLog", "entry"]


def _rel(t: float | None, origin: float) -> float | None:
    return None if t is None else round(t - origin, 6)


def entry(flight: Flight) -> dict[str, Any]:
    """The log line of a finished flight."""
    s = flight.state
    t0 = s.arrival
    return {
        "id": s.id,
        "model": s.model,
        "prompt_tokens": s.prompt_tokens,
        "max_tokens": s.max_tokens,
        "slo_ttft_s": s.slo.ttft_s,
        "slo_tbt_s": s.slo.tbt_s,
        "arrival": round(t0, 6),
        "first_dispatch_s": _rel(flight.first_dispatch, t0),
        "ttft_s": _rel(s.first_token_at, t0),
        "end_s": _rel(s.finished_at, t0),
        "tokens": s.tokens,
        "outcome": None if s.outcome is None else s.outcome.value,
        "route": [{"t": _rel(t, t0), "backend": b, "reason": r} for t, b, r in flight.route],
        "moves": [dict(m) for m in flight.moves],
    }


class RequestLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = self.path.open("ab")

    def write(self, flight: Flight) -> None:
        if self._file is None:
            return
        self._file.write(orjson.dumps(entry(flight)) + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
