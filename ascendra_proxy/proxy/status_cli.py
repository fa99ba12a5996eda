"""``ascendra-proxy status --url URL --admin-key K``: backends and in-flight requests as tables.

Synchronous tooling, so it uses httpx (the data plane uses aiohttp).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

# The one environment variable of the admin key: the shipped configs read it
# (``admin_key: "env:ASCENDRA_ADMIN_KEY"``), compose passes it to the proxy, status reads it.
ADMIN_KEY_ENV = "ASCENDRA_ADMIN_KEY"
DEPRECATED_ADMIN_KEY_ENV = "PROXY_ADMIN_KEY"  # the example config's former name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="proxy base URL")
    parser.add_argument(
        "--admin-key",
        default=None,
        help=f"admin key (default: ${ADMIN_KEY_ENV})",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="HTTP timeout in seconds")
    parser.add_argument("--limit", type=int, default=20, help="max requests to list")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def backend_rows(data: list[dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for b in data:
        s = b.get("scraped") or {}
        rows.append(
            [
                b["name"],
                b["role"],
                b["engine"],
                b["model"],
                b["breaker"],
                b["inflight"],
                s.get("running"),
                s.get("waiting"),
                s.get("kv_usage"),
                s.get("age_s"),
            ]
        )
    return rows


def request_rows(data: list[dict[str, Any]], limit: int) -> list[list[object]]:
    return [
        [
            r["id"],
            r["model"],
            r["backend"],
            r["phase"],
            r["tokens"],
            r["max_tokens"],
            r["ttft_s"],
            r["mean_tbt_s"],
            r["slack_s"],
            r.get("moved"),
        ]
        for r in data[:limit]
    ]


def admin_key_from_env(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``(key, warning)``: ``$ASCENDRA_ADMIN_KEY``, else the deprecated name with a warning."""
    if key := env.get(ADMIN_KEY_ENV):
        return key, None
    if key := env.get(DEPRECATED_ADMIN_KEY_ENV):
        return key, f"${DEPRECATED_ADMIN_KEY_ENV} is deprecated; set ${ADMIN_KEY_ENV} instead"
    return None, None


def run(args: argparse.Namespace) -> int:
    key = args.admin_key
    if key is None:
        key, warning = admin_key_from_env(os.environ)
        if warning:
            print(f"ascendra-proxy status: {warning}", file=sys.stderr)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    base = args.url.rstrip("/")
    try:
        with httpx.Client(timeout=args.timeout, headers=headers) as client:
            backends = client.get(base + "/admin/backends")
            requests = client.get(base + "/admin/requests")
    except httpx.HTTPError as exc:
        print(f"ascendra-proxy status: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    for resp in (backends, requests):
        if resp.status_code != 200:
            print(
                f"ascendra-proxy status: {resp.request.url}: HTTP {resp.status_code}: "
                f"{resp.text[:300]}",
                file=sys.stderr,
            )
            if resp.status_code in (401, 403):
                print(
                    f"ascendra-proxy status: give the proxy's admin key with --admin-key or "
                    f"${ADMIN_KEY_ENV} (the compose testbed's is in docker-compose.yml)",
                    file=sys.stderr,
                )
            return 1
    print(
        table(
            [
                "backend",
                "role",
                "engine",
                "model",
                "breaker",
                "inflight",
                "running",
                "waiting",
                "kv",
                "age_s",
            ],
            backend_rows(backends.json()["data"]),
        )
    )
    reqs = requests.json()
    print(f"\n{len(reqs['data'])} request(s) in flight, {reqs.get('held', 0)} held in the proxy")
    if reqs["data"]:
        print(
            table(
                [
                    "id",
                    "model",
                    "backend",
                    "phase",
                    "tokens",
                    "max",
                    "ttft_s",
                    "tbt_s",
                    "slack_s",
                    "moved",
                ],
                request_rows(reqs["data"], args.limit),
            )
        )
    return 0
