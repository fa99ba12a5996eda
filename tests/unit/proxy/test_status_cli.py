"""``ascendra-proxy status`` and the one admin-key variable: configs, compose, the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascendra_proxy.cli import main
from ascendra_proxy.proxy.status_cli import (
    ADMIN_KEY_ENV,
    DEPRECATED_ADMIN_KEY_ENV,
    admin_key_from_env,
)

REPO = Path(__file__).resolve().parents[3]
KEY = "the-admin-key"
TESTBED_KEY = "ascendra-testbed-admin"
BACKEND = {
    "name": "lp-0",
    "role": "lp",
    "engine": "vllm",
    "model": "m",
    "breaker": "closed",
    "inflight": 0,
    "scraped": None,
}


class AdminHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._send(401, {"error": {"message": "invalid admin key"}})
        elif self.path == "/admin/backends":
            self._send(200, {"data": [BACKEND]})
        else:
            self._send(200, {"data": [], "held": 0})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def admin_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in (ADMIN_KEY_ENV, DEPRECATED_ADMIN_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), AdminHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_admin_key_variable_and_its_deprecated_alias() -> None:
    assert admin_key_from_env({}) == (None, None)
    assert admin_key_from_env({ADMIN_KEY_ENV: "a", DEPRECATED_ADMIN_KEY_ENV: "b"}) == ("a", None)
    key, warning = admin_key_from_env({DEPRECATED_ADMIN_KEY_ENV: "b"})
    assert key == "b" and warning is not None and ADMIN_KEY_ENV in warning


def test_status_reads_the_key_from_the_environment(
    admin_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ADMIN_KEY_ENV, KEY)
    assert main(["status", "--url", admin_url]) == 0
    out = capsys.readouterr()
    assert "lp-0" in out.out and "0 request(s) in flight" in out.out
    assert out.err == ""


def test_status_takes_the_deprecated_name_with_a_warning(
    admin_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DEPRECATED_ADMIN_KEY_ENV, KEY)
    assert main(["status", "--url", admin_url]) == 0
    assert "deprecated" in capsys.readouterr().err


def test_status_without_the_key_says_where_to_give_it(
    admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", admin_url]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and f"${ADMIN_KEY_ENV}" in err and "--admin-key" in err


def test_every_shipped_config_names_the_one_admin_key_variable() -> None:
    admin_keys = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if "admin_key" in (doc.get("auth") or {}):
            admin_keys[path.name] = doc["auth"]["admin_key"]
    assert {"example.yaml", "compose.yaml", "compose-gpu.yaml", "compose-sglang.yaml"} <= set(
        admin_keys
    )
    assert set(admin_keys.values()) == {f"env:{ADMIN_KEY_ENV}"}


def test_compose_gives_every_proxy_the_admin_key_and_builds_its_image() -> None:
    """Every service that loads a proxy config (they all name the admin key's variable)
    gets it, with the testbed default."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    readers = [
        name
        for name, s in services.items()
        if any("./configs/compose" in str(v) for v in s.get("volumes") or [])
    ]
    assert {"proxy", "proxy-gpu", "proxy-sglang"} <= set(readers)
    for name in readers:
        value = (services[name].get("environment") or {}).get(ADMIN_KEY_ENV)
        assert value == f"${{{ADMIN_KEY_ENV}:-{TESTBED_KEY}}}", name
    built = [s for s in services.values() if "build" in s]
    assert len(built) >= 5  # three emulated engines, the proxies, the demo's loadgen
    assert all(s.get("pull_policy") == "build" for s in built)
    assert TESTBED_KEY in (REPO / "README.md").read_text()  # the documented default


def test_every_kubernetes_container_that_loads_the_config_gets_the_admin_key() -> None:
    loaders = []
    for path in sorted((REPO / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
            for c in spec.get("containers") or []:
                if "--config" in (c.get("args") or []):
                    loaders.append(c["name"])
                    assert ADMIN_KEY_ENV in {e["name"] for e in c.get("env") or []}, c["name"]
    assert {"worker", "scheduler"} <= set(loaders)
