"""The system under test: three emulated vLLM engines and the proxy in front of them.

Theory of operation: :func:`scaled_profile` writes the latency profile with every step-time
coefficient multiplied by the time scale (the emulated GPU is that many times slower), and
both the engines *and* the proxy's predictor load that file, so the proxy predicts the
engines it really talks to.  :func:`proxy_config` writes the proxy YAML for one policy:
``ascendra`` runs the three engines as 2 LP + 1 HP, every other policy as one mixed pool of
the same three.  Every time the proxy is configured with is scaled too: the SLOs, the scrape
interval and each time-valued policy parameter (:func:`scaled_times`: the policy tick, the
offload margin, scrape-age limits...), so in model time the proxy behaves as it would in
front of real A100s; only its own CPU and network costs are not slowed down.
:func:`running_stack` starts fresh engines (cold KV and prefix caches, same seeds) and a
proxy on free ports, waits until the proxy reports every backend healthy, and stops all of
it on exit.  One stack per policy: no policy inherits another's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ascendra_proxy.config import ScrapeConfig, parse_config
from ascendra_proxy.core.policies.registry import POLICIES
from ascendra_proxy.demo.children import Child, ChildError, Children, python_command
from ascendra_proxy.engine.profile import load_profile, read_profile_text

__all__ = ["MODEL", "Stack", "StackSpec", "proxy_config", "running_stack", "scaled_profile"]

MODEL = "llama3-8b"
NUM_ENGINES = 3
PROXY_MARKER = "ascendra-proxy listening on "
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class StackSpec:
    profile: str  # a profile name, or the path of the scaled profile file
    seed: int
    time_scale: float
    slo_ttft_s: float  # model time; the proxy gets them times the time scale
    slo_tbt_s: float
    work_dir: Path  # configs/ and logs/ go here


@dataclass(slots=True)
class Stack:
    policy: str
    proxy: Child
    engines: list[Child]
    config_path: Path
    request_log: Path  # the proxy's line per finished request (complete once it stopped)


def scaled_profile(name: str, scale: float, out_dir: Path) -> str:
    """``name`` itself at scale 1, else the path of a copy with step times times ``scale``."""
    if scale == 1.0:
        return name
    source = load_profile(name)  # validates; the file is re-read raw to keep its layout
    data: dict[str, Any] = yaml.safe_load(read_profile_text(name)[1])
    steps = data["step_ms"]
    for key, value in list(steps.items()):
        if key == "linear_table":
            steps[key] = [[tokens, ms * scale] for tokens, ms in value]
        else:
            steps[key] = value * scale
    data["frontend_ms"] = float(data.get("frontend_ms", 0.0)) * scale
    data["name"] = f"{source.name}-x{scale:g}"
    data["description"] = f"{source.description}; every step {scale:g}x slower (demo time scale)"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_profile(path)  # the copy must load too
    return str(path)


def proxy_config(policy: str, engine_urls: list[str], spec: StackSpec) -> dict[str, Any]:
    """The proxy YAML mapping for ``policy`` over ``engine_urls`` (validated)."""
    settings = {"profile": spec.profile, "scheduling_policy": "priority"}
    backends = [
        {"url": url, "engine": "vllm", "model": MODEL, "engine_settings": settings}
        for url in engine_urls
    ]
    registered = POLICIES.get(policy)
    roles = registered is not None and registered.needs(registered.params_type()).roles
    if roles:  # a policy that uses roles: one HP engine, the rest LP
        pools = [
            {"name": "lp", "role": "lp", "backends": backends[:-1]},
            {"name": "hp", "role": "hp", "backends": backends[-1:]},
        ]
    else:
        pools = [{"name": "main", "role": "mixed", "backends": backends}]
    scale = spec.time_scale
    slo = {"ttft_ms": spec.slo_ttft_s * 1000.0 * scale, "tpot_ms": spec.slo_tbt_s * 1000.0 * scale}
    doc = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "pools": pools,
        "slo": {"default": slo},
        "scrape": {"interval_s": ScrapeConfig().interval_s * scale},
        "policy": {"type": policy, **scaled_times(_policy_defaults(policy), scale)},
    }
    parse_config(doc)  # fail here, with the path of the problem, not in the child
    return doc


def _policy_defaults(policy: str) -> dict[str, Any]:
    spec = POLICIES.get(policy)
    return {} if spec is None else dataclasses.asdict(spec.params_type())


def scaled_times(params: Mapping[str, Any], scale: float) -> dict[str, Any]:
    """The entries of ``params`` that carry time, rescaled: durations (``*_s``, ``*_ms``)
    times ``scale``, rates (``*_rate``, per second) divided by it; nested groups recursed.
    Only changed entries are returned (the rest keep their defaults)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            if nested := scaled_times(value, scale):
                out[key] = nested
        elif isinstance(value, bool) or not isinstance(value, int | float) or scale == 1.0:
            continue
        elif key.endswith(("_s", "_ms")):
            out[key] = value * scale
        elif key.endswith("_rate"):
            out[key] = value / scale
    return out


def _engine_command(spec: StackSpec, index: int) -> list[str]:
    return python_command(
        "emulate",
        "--flavor",
        "vllm",
        "--profile",
        spec.profile,
        "--model",
        MODEL,
        "--scheduling-policy",
        "priority",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--seed",
        str(spec.seed + index),
    )


@contextlib.contextmanager
def running_stack(
    policy: str, spec: StackSpec, registry: list[tuple[str, int]] | None = None
) -> Iterator[Stack]:
    """Fresh engines and a proxy for ``policy``; all stopped when the block ends (the proxy
    first, so it never sees its engines vanish)."""
    with Children(str(spec.work_dir / "logs"), registry) as children:
        commands = [(f"{policy}-engine-{i}", _engine_command(spec, i)) for i in range(NUM_ENGINES)]
        engines = children.start_all(commands)
        path = spec.work_dir / "configs" / f"proxy-{policy}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = proxy_config(policy, [e.url for e in engines], spec)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        request_log = spec.work_dir / "logs" / f"{policy}-requests.jsonl"
        request_log.unlink(missing_ok=True)
        cmd = python_command("serve", "--config", str(path), "--log-level", "WARNING")
        cmd += ["--request-log", str(request_log)]
        proxy = children.start(f"{policy}-proxy", cmd, marker=PROXY_MARKER)
        asyncio.run(_wait_ready(proxy.url, NUM_ENGINES))
        yield Stack(policy, proxy, engines, path, request_log)


async def _wait_ready(url: str, backends: int, limit_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + limit_s
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                async with session.get(url + "/ready", timeout=aiohttp.ClientTimeout(2)) as r:
                    body = await r.json()
                    last = f"HTTP {r.status} {body}"
                    if r.status == 200 and body.get("healthy_backends") == backends:
                        return
            await asyncio.sleep(0.1)
    raise ChildError(f"proxy at {url} not ready within {limit_s:g} s ({last})")
