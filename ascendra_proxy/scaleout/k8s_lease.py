"""Leader election on a Kubernetes ``coordination.k8s.io/v1`` Lease (no client library).

Theory of operation (the rules of client-go's ``leaderelection``, written against the REST
API with aiohttp).  Every ``retry_s`` each candidate reads the Lease:

* missing: create it with ``holderIdentity`` = us and ``leaseTransitions`` = 0;
* held by us: renew (``renewTime`` = now) with an update that carries the read
  ``resourceVersion``, so a concurrent writer makes ours fail (409) instead of both winning;
* held by another: take it only when its record has not changed for ``leaseDurationSeconds``
  *as observed on our own monotonic clock* (no comparison of two machines' wall clocks),
  incrementing ``leaseTransitions``.

The epoch is ``leaseTransitions + 1``: every change of holder increments it, so it fences
the old leader exactly as the Redis elector's counter does.  A leader that fails to renew
for a whole lease duration, or finds another holder, steps down (``lost``).  On a clean
shutdown it clears ``holderIdentity`` so a standby takes over at its next retry.

In a pod the API address, token, CA and namespace come from the service account
(``in_cluster``); the scheduler's ServiceAccount needs ``get``, ``create`` and ``update`` on
``leases`` (``deploy/k8s/scheduler.yaml``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["KubernetesLeaseElector"]

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLeaseElector:
    def __init__(
        self,
        api: str,
        namespace: str,
        name: str,
        identity: str,
        ttl_s: float = 15.0,
        retry_s: float = 1.0,
        token: str | None = None,
        ssl_context: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = f"{api.rstrip('/')}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ssl = ssl_context
        self.leading = False
        self._seen: tuple[Any, float] | None = None  # (resourceVersion, when we saw it change)
        self._renewed_at = 0.0

    @classmethod
    def in_cluster(cls, name: str, identity: str, ttl_s: float) -> KubernetesLeaseElector:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        return cls(
            f"https://{host}:{port}",
            (SA_DIR / "namespace").read_text().strip(),
            name,
            identity,
            ttl_s,
            retry_s=max(0.2, ttl_s / 5),
            token=(SA_DIR / "token").read_text().strip(),
            ssl_context=ctx,
        )

    async def run(self, elected: Callable[[int], None], lost: Callable[[], None]) -> None:
        async with aiohttp.ClientSession(
            headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.retry_s * 2)
        ) as http:
            while True:
                try:
                    epoch = await self._attempt(http)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("lease %s: %s", self.name, exc)
                    epoch = None
                    if time.monotonic() - self._renewed_at < self.ttl_s:
                        epoch = -1  # keep leading until the lease could have expired
                if epoch is not None and epoch > 0 and not self.leading:
                    self.leading = True
                    log.info("%s leads with epoch %d", self.identity, epoch)
                    elected(epoch)
                elif epoch is None and self.leading:
                    self.leading = False
                    log.warning("%s steps down", self.identity)
                    lost()
                await asyncio.sleep(self.retry_s)

    async def _attempt(self, http: aiohttp.ClientSession) -> int | None:
        """Our epoch when we hold the lease after this attempt, else None."""
        now = time.monotonic()
        async with http.get(f"{self.url}/{self.name}", ssl=self.ssl) as resp:
            if resp.status == 404:
                return await self._write(http, "POST", self._lease(None, 0))
            resp.raise_for_status()
            lease: dict[str, Any] = await resp.json()
        spec = lease.get("spec", {})
        version = lease["metadata"]["resourceVersion"]
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, now)
        transitions = int(spec.get("leaseTransitions") or 0)
        holder = spec.get("holderIdentity") or ""
        if holder == self.identity:
            return await self._write(http, "PUT", self._lease(lease, transitions))
        duration = float(spec.get("leaseDurationSeconds") or self.ttl_s)
        if holder and now - self._seen[1] < duration:
            return None  # someone else holds a live lease
        return await self._write(http, "PUT", self._lease(lease, transitions + 1))

    def _lease(self, old: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        stamp = _now_micro()
        meta: dict[str, Any] = {"name": self.name}
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.ttl_s)),
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }
        if old is not None:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            same = old.get("spec", {}).get("holderIdentity") == self.identity
            spec["acquireTime"] = old["spec"].get("acquireTime") if same else stamp
        else:
            spec["acquireTime"] = stamp
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def _write(
        self, http: aiohttp.ClientSession, method: str, body: dict[str, Any]
    ) -> int | None:
        url = self.url if method == "POST" else f"{self.url}/{self.name}"
        async with http.request(method, url, json=body, ssl=self.ssl) as resp:
            if resp.status == 409:  # someone else wrote first
                return None
            resp.raise_for_status()
            written = await resp.json()
        self._renewed_at = time.monotonic()
        self._seen = (written["metadata"]["resourceVersion"], self._renewed_at)
        return int(written["spec"].get("leaseTransitions") or 0) + 1

    async def resign(self) -> None:
        """Clear the holder so a standby leads at its next retry (best effort)."""
        if not self.leading:
            return
        self.leading = False
        try:
            async with aiohttp.ClientSession(headers=self.headers) as http:
                async with http.get(f"{self.url}/{self.name}", ssl=self.ssl) as resp:
                    lease = await resp.json()
                if lease.get("spec", {}).get("holderIdentity") != self.identity:
                    return
                lease["spec"]["holderIdentity"] = ""
                async with http.put(f"{self.url}/{self.name}", json=lease, ssl=self.ssl):
                    pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not release the lease: %s", exc)
