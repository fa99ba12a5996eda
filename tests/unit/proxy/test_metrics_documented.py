"""Every family the proxy exports on /metrics is documented in the README's Metrics section."""

from __future__ import annotations

import re
from pathlib import Path

from fake_backend import FakeBackend
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events

from ascendra_proxy.predictor.metrics import PredictorMetrics, register_source_gauge

README = Path(__file__).resolve().parents[3] / "README.md"
PREFIX = "ascendra_"


def documented() -> set[str]:
    """The metric names the README's Metrics section spells out (in backticks)."""
    text = README.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"`([a-z_]+)[{`]", section)}


def exposed_names(text: str) -> set[str]:
    """Family names as a user types them (counters with ``_total``), prefix dropped."""
    names = set()
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        names.add(name.removeprefix(PREFIX))
    return names


async def test_every_exported_family_is_in_the_readme(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        body = {"model": MODEL, "prompt": "x", "stream": True}
        await read_events(await r.post("/v1/completions", body))
        await wait_until(lambda: not r.gateway.flights)
        text = await (await r.session.get(r.url + "/metrics")).text()
    registry = CollectorRegistry()  # the predictor's families, present with their config
    register_source_gauge(registry, lambda: "analytical")
    PredictorMetrics(registry, lambda: "analytical")
    names = exposed_names(text) | exposed_names(generate_latest(registry).decode())
    assert {"requests_total", "request_duration_seconds", "process_cpu_seconds_total"} <= names
    missing = sorted(names - documented())
    assert not missing, f"exported but not in README's Metrics section: {missing}"
