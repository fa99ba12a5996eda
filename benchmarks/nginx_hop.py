"""nginx as a reference streaming hop for the proxy benchmarks (when nginx is installed).

A plain streaming reverse proxy: ``proxy_buffering off`` (each upstream chunk is written to
the client as it arrives), HTTP/1.1 keep-alive connections to the upstreams, no access log.
nginx runs in the foreground as one process (``master_process off``, one event loop, like
one proxy worker), so its CPU is that process's and the benchmark reads it from
``/proc/<pid>`` exactly as for the other hops.  Everything it writes (config, pid, logs,
temp paths) lives under its own prefix in a temporary directory; ``stop`` ends it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
START_WAIT_S = 20.0


def find_nginx() -> str | None:
    """The nginx binary, or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_config(prefix: Path, port: int, upstreams: list[int]) -> str:
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)
    temps = "".join(
        f"  {kind}_temp_path {prefix / 'tmp' / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\n"
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 16384; multi_accept on; }\n"
        "http {\n  access_log off;\n"
        f"{temps}"
        "  upstream backends {\n"
        f"{servers}"
        "    keepalive 2048;\n    keepalive_requests 1000000;\n  }\n"
        "  server {\n"
        f"    listen 127.0.0.1:{port} backlog=4096;\n"
        "    keepalive_requests 1000000;\n"
        "    location / {\n"
        "      proxy_pass http://backends;\n"
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_buffering off;\n"
        "      proxy_read_timeout 300s;\n"
        "    }\n  }\n}\n"
    )


class NginxHop:
    """nginx in front of ``upstreams``, started on a free port; the same surface as the
    benchmark's other hops (``port``, ``proc``, ``stop``)."""

    def __init__(self, binary: str, upstreams: list[int], workdir: Path) -> None:
        prefix = workdir / "nginx"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.error_log = prefix / "error.log"
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, self.port, upstreams))
        cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(self.error_log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err.strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.port} within {START_WAIT_S} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
