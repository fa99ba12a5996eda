"""The reference hops of benchmarks/proxy_overhead.py: nginx's config, and the CPU ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from nginx_hop import find_nginx, nginx_config
from proxy_overhead import goals, summarize


def test_nginx_config_is_a_streaming_keepalive_proxy_under_its_own_prefix(tmp_path: Path) -> None:
    conf = nginx_config(tmp_path, 8123, [9001, 9002])
    for line in (
        "daemon off;",
        "master_process off;",
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "keepalive 2048;",
        "server 127.0.0.1:9001;",
        "server 127.0.0.1:9002;",
        "listen 127.0.0.1:8123 backlog=4096;",
        f"pid {tmp_path / 'nginx.pid'};",
        f"proxy_temp_path {tmp_path / 'tmp' / 'proxy'};",
    ):
        assert line in conf, line


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / kind).mkdir(parents=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, 8123, [9001]))
    nginx = find_nginx()
    assert nginx is not None
    cmd = [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def run(path: str, us_per_token: float) -> dict[str, Any]:
    q = {"p50": 1.0, "p99": 2.0}
    return {
        "kind": "paced",
        "streams": 64,
        "rep": 0,
        "path": path,
        "ttft_ms": q,
        "gap_ms": q,
        "latency_ms": q,
        "tokens_per_s": 1000.0,
        "proxy_cpu_frac": us_per_token / 1000,
        "proxy_cpu_us_per_token": us_per_token,
        "proxy_runqueue_wait_frac": 0.0,
        "load_runqueue_wait_frac": 0.0,
        "core_busy_pct": [50.0, 50.0],
        "errors": 0,
    }


def test_cpu_per_token_is_compared_with_each_reference_hop_present() -> None:
    rows = [run("direct", 0.0), run("proxy", 90.0), run("raw", 60.0), run("nginx", 30.0)]
    (row,) = summarize(rows)
    assert row["proxy_cpu_per_token_vs_nginx"] == 3.0
    assert row["proxy_cpu_per_token_vs_raw"] == 1.5
    assert row["nginx_cpu_us_per_token"] == 30.0
    assert goals([row])["proxy_cpu_per_paced_token_vs_nginx_worst (<= 3)"] == 3.0


def test_without_nginx_its_columns_are_absent() -> None:
    (row,) = summarize([run("direct", 0.0), run("proxy", 90.0), run("raw", 60.0)])
    assert "proxy_cpu_per_token_vs_nginx" not in row
    assert "nginx_cpu_us_per_token" not in row
    assert goals([row])["proxy_cpu_per_paced_token_vs_nginx_worst (<= 3)"] is None
