"""Who leads: a lease on a coordination service, with an epoch that fences old leaders.

Theory of operation.  An elector calls ``elected(epoch)`` when this scheduler becomes the
leader and ``lost()`` when it must stop deciding; epochs only grow, so a worker that has
seen epoch ``e`` ignores anything a former leader (epoch < ``e``) still sends.

* ``StaticElector``: one scheduler and no election (a single host, or tests): leader at
  once with a fixed epoch.
* ``RedisElector``: ``SET key <id> NX PX ttl`` takes the lease, ``INCR epoch_key`` then
  gives the new epoch; the leader renews every ``ttl/3`` with a compare-and-pexpire script
  and steps down when a renewal fails or no renewal succeeded for a whole ``ttl`` (Redis
  unreachable: the lease may already be someone else's).  A standby retries every
  ``retry_s``, so it leads at most ``ttl + retry_s`` after the leader died.  On a clean
  shutdown the leader deletes the lease (compare-and-delete), so the standby leads at once.

A Kubernetes Lease elector would follow the same contract (``coordination.k8s.io/v1``
Lease, ``holderIdentity`` and ``leaseTransitions`` as the epoch); see ``deploy/k8s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Elector", "RedisElector", "StaticElector"]

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Elector(Protocol):
    async def run(self, elected: Callable[[int], None], lost: Callable[[], None]) -> None: ...

    async def resign(self) -> None: ...


class StaticElector:
    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    async def run(self, elected: Callable[[int], None], lost: Callable[[], None]) -> None:
        elected(self.epoch)
        await asyncio.Event().wait()

    async def resign(self) -> None:
        return None


class RedisElector:
    def __init__(
        self,
        url: str,
        identity: str,
        key: str = "ascendra:leader",
        ttl_s: float = 2.0,
        retry_s: float = 0.25,
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.identity = identity
        self.key = key
        self.epoch_key = key + ":epoch"
        self.ttl_ms = int(ttl_s * 1000)
        self.retry_s = retry_s
        self.leading = False
        self._redis: Any = aioredis.from_url(url, socket_timeout=ttl_s / 3)

    async def run(self, elected: Callable[[int], None], lost: Callable[[], None]) -> None:
        renewed_at = 0.0
        try:
            while True:
                try:
                    if not self.leading:
                        if await self._redis.set(self.key, self.identity, nx=True, px=self.ttl_ms):
                            epoch = int(await self._redis.incr(self.epoch_key))
                            self.leading, renewed_at = True, time.monotonic()
                            log.info("%s leads with epoch %d", self.identity, epoch)
                            elected(epoch)
                    elif await self._redis.eval(_RENEW, 1, self.key, self.identity, self.ttl_ms):
                        renewed_at = time.monotonic()
                    else:
                        self._step_down(lost, "lease taken")
                except (TimeoutError, OSError) as exc:
                    log.warning("redis %s: %s", self.url, exc)
                    self._redis_error(lost, renewed_at)
                except Exception as exc:  # redis-py's errors do not all derive from OSError
                    if type(exc).__module__.split(".")[0] != "redis":
                        raise
                    log.warning("redis %s: %s", self.url, exc)
                    self._redis_error(lost, renewed_at)
                await asyncio.sleep(self.ttl_ms / 3000 if self.leading else self.retry_s)
        finally:
            await self._redis.aclose()

    def _redis_error(self, lost: Callable[[], None], renewed_at: float) -> None:
        if self.leading and time.monotonic() - renewed_at >= self.ttl_ms / 1000:
            self._step_down(lost, "no renewal for a whole lease")

    def _step_down(self, lost: Callable[[], None], why: str) -> None:
        log.warning("%s steps down: %s", self.identity, why)
        self.leading = False
        lost()

    async def resign(self) -> None:
        """Give the lease back (best effort) so a standby leads without waiting for the TTL."""
        if not self.leading:
            return
        self.leading = False
        import redis.asyncio as aioredis

        client: Any = aioredis.from_url(self.url, socket_timeout=1.0)
        try:
            await client.eval(_RELEASE, 1, self.key, self.identity)
        except Exception as exc:
            log.warning("could not release the lease: %s", exc)
        finally:
            await client.aclose()
