"""One upstream attempt: a single HTTP request to a single backend, with its timeouts.

Theory of operation: ``UpstreamAttempt.open`` posts the prepared request on the backend's
shared connection pool and maps whatever comes back onto ``backends/errors.py``: connect
failures, 5xx (and 429) and a missing answer within the first-byte budget are
``UpstreamUnavailable`` (retryable elsewhere); 4xx is ``UpstreamRejected`` with the engine's
bytes kept for pass-through.  After a 200, ``read`` returns raw body bytes as they arrive
(``b""`` at end of body); a dropped connection or an expired timer surfaces as a
``StreamBroken`` subclass.  The post runs as its own task so that ``close`` can interrupt an
attempt still waiting for its answer's headers (every non-streaming request until its whole
answer is ready; a queued stream on engines that answer late): ``open`` then raises
``AttemptClosed`` at once, instead of holding the engine slot until the first-byte budget.
The attempt owns its response from the moment it exists: the post task stores it on the
attempt in the very step it arrives, so ``close`` reaches it on every path out, including a
caller of ``open`` cancelled in the same turn the headers arrived (which would otherwise drop
the response and leave the engine generating for nobody).

Timers cost nothing per read: the stream stamps ``touch(now)`` on each read (one attribute
store) and a single lazily re-armed ``call_at`` timer wakes up at the earliest possible
expiry, re-checks, and re-arms.  When a budget is really exhausted (first event, idle gap,
total) it records why and closes the response, which wakes the pending read; the read then
raises the matching error.  ``close`` is also the abort: for vLLM closing the connection
frees the engine slot; adapters that need more (SGLang) do it in ``adapter.abort``, which
the owner schedules separately so a cancelled handler never waits for it.  A complete
answer ends with ``release`` instead, which keeps the connection for the next request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from ascendra_proxy.backends import errors as E
from ascendra_proxy.backends.base import UpstreamRequest

RELEASE_DRAIN_S = 1.0  # after [DONE], how long to wait for the end of the HTTP body


@dataclass(frozen=True, slots=True)
class Budgets:
    """Timeouts of one attempt, in seconds (from ``TimeoutsConfig``)."""

    first_byte_s: float
    idle_s: float
    total_s: float


class UpstreamAttempt:
    __slots__ = (
        "_closed",
        "_expired",
        "_headers",
        "_last",
        "_loop",
        "_opening",
        "_resp",
        "_started_at",
        "_timer",
        "backend",
        "base_url",
        "budgets",
        "first_event_at",
        "request",
        "session",
    )

    def __init__(
        self,
        backend: str,
        base_url: str,
        session: aiohttp.ClientSession,
        request: UpstreamRequest,
        headers: dict[str, str],
        budgets: Budgets,
    ) -> None:
        self.backend = backend
        self.base_url = base_url
        self.session = session
        self.request = request
        self.budgets = budgets
        self._headers = headers
        self._loop = asyncio.get_running_loop()
        self._resp: aiohttp.ClientResponse | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired: str | None = None
        self._opening: asyncio.Task[aiohttp.ClientResponse] | None = None
        self._closed = False
        self._started_at = 0.0
        self._last = 0.0
        self.first_event_at: float | None = None

    async def open(self) -> None:
        """Send the request; return once a 200 answer's headers are in (raises otherwise)."""
        self._started_at = self._last = self._loop.time()
        if self._closed:
            raise E.AttemptClosed(self.backend, "closed before it was sent")
        post = self._opening = asyncio.ensure_future(self._post())
        try:
            async with asyncio.timeout(self.budgets.first_byte_s):
                resp = await post
                if resp.status != 200:
                    body = await resp.read()
                    self._resp = None
                    resp.release()
                    raise _status_error(self.backend, resp, body)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and (task is None or not task.cancelling()):
                raise E.AttemptClosed(self.backend, "closed before it answered") from None
            raise  # the caller itself was cancelled (client gone, shutdown)
        except TimeoutError as exc:
            raise E.FirstByteTimeout(self.backend, "no answer within first-byte budget") from exc
        except aiohttp.ClientConnectorError as exc:
            raise E.ConnectFailed(self.backend, str(exc) or type(exc).__name__) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise E.ConnectFailed(self.backend, f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._opening = None
        if self._closed:  # closed in the same turn the answer arrived (``close`` closed it)
            raise E.AttemptClosed(self.backend, "closed as it answered")
        self._arm(self._started_at + min(self.budgets.first_byte_s, self.budgets.total_s))

    async def _post(self) -> aiohttp.ClientResponse:
        resp = await self.session.post(
            self.base_url + self.request.path,
            data=self.request.body,
            headers=self._headers,
            allow_redirects=False,  # a 3xx is a failure of this backend, never a new target
        )
        # Owned from the moment it exists, in the very step it arrives: whatever happens to
        # this task or to the caller of ``open`` next, ``close`` reaches this response.
        self._resp = resp
        if self._closed:
            resp.close()
        return resp

    async def read_all(self) -> bytes:
        """The whole body of a non-streaming answer (within the remaining budgets)."""
        assert self._resp is not None
        try:
            body = await self._resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise self._broken(exc) from exc
        self.touch(self._loop.time())
        return body

    async def read(self) -> bytes:
        """Next raw bytes of the body, ``b""`` at its end."""
        assert self._resp is not None
        try:
            return await self._resp.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise self._broken(exc) from exc

    @property
    def content_type(self) -> str:
        if self._resp is None:
            return "application/json"
        return self._resp.headers.get("Content-Type", "application/json")

    def touch(self, now: float) -> None:
        if self.first_event_at is None:
            self.first_event_at = now
            if self._timer is not None and now + self.budgets.idle_s < self._timer.when():
                self._timer.cancel()
                self._arm(now + self.budgets.idle_s)
        self._last = now

    def close(self) -> None:
        """Drop the connection (idempotent), also while ``open`` still waits for the answer.
        For vLLM this is the abort."""
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._resp is not None:
            self._resp.close()

    async def release(self) -> None:
        """After a complete answer: return the connection to the pool for the next request.

        ``[DONE]`` may arrive before the chunked-encoding terminator; what is left is read
        (briefly) so the connection can be reused.  Anything odd: the connection is dropped.
        """
        resp = self._resp
        if resp is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if not resp.content.at_eof():
                async with asyncio.timeout(RELEASE_DRAIN_S):
                    while await resp.content.readany():
                        pass
        except (TimeoutError, aiohttp.ClientError, OSError):
            resp.close()
            return
        except asyncio.CancelledError:  # shutdown mid-drain: drop it, never leave it open
            resp.close()
            raise
        resp.release()

    # -- timers --------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        b = self.budgets
        total_at = self._started_at + b.total_s
        if self.first_event_at is None:
            due, kind = self._started_at + b.first_byte_s, "first_byte"
        else:
            due, kind = self._last + b.idle_s, "idle"
        if total_at <= due:
            due, kind = total_at, "total"
        if now < due:
            self._arm(due)
            return
        self._timer = None
        self._expired = kind
        if self._resp is not None:
            self._resp.close()

    def _broken(self, exc: BaseException) -> E.UpstreamError:
        if self._expired == "first_byte":
            return E.FirstByteTimeout(self.backend, "no first byte within first-byte budget")
        if self._expired == "idle":
            return E.StreamIdleTimeout(self.backend, "no bytes within idle budget")
        if self._expired == "total":
            return E.StreamTotalTimeout(self.backend, "total budget exhausted")
        return E.StreamInterrupted(self.backend, f"{type(exc).__name__}: {exc}")


def _status_error(backend: str, resp: aiohttp.ClientResponse, body: bytes) -> E.UpstreamError:
    if 400 <= resp.status < 500 and resp.status != 429:
        ctype = resp.headers.get("Content-Type", "application/json")
        return E.UpstreamRejected(backend, resp.status, body, ctype)
    return E.UpstreamServerError(backend, resp.status, body)
