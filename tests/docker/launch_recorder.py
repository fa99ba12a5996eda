"""Run ``ascendra-proxy launch`` with a recording wrapper around the real Docker SDK client.

usage: python launch_recorder.py RECORD.jsonl -- launch --config FILE --emulate ...

Why: this machine has no GPU and no NVIDIA container runtime, so a container whose create
call carries ``device_requests`` is accepted by the engine but cannot start ("could not
select device driver nvidia").  The wrapper lets the launcher's own code path run unchanged
and, for each ``containers.create(**kwargs)`` it makes:

1. creates a probe container with exactly those kwargs (device requests included) on the
   real engine, reads back ``HostConfig.DeviceRequests`` as the engine stored it, and
   removes the probe (never started);
2. records the device requests as sent and as stored, with the name, image, command,
   labels and ports, one JSON line per container;
3. creates the real container with the same kwargs minus ``device_requests``, which then
   starts and runs the emulator like a GPU engine would run vLLM.

Everything else (image checks, port publishing, health waits, the proxy, signal handling,
cleanup) is the launcher talking to the real engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import docker

from ascendra_proxy.cli import main


class RecordingContainers:
    def __init__(self, real: Any, record: Path) -> None:
        self._real = real
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def create(self, **kwargs: Any) -> Any:
        sent = [dict(r) for r in kwargs.get("device_requests", [])]
        probe = self._real.create(**{**kwargs, "name": kwargs["name"] + "-gpuprobe"})
        try:
            probe.reload()
            stored = probe.attrs["HostConfig"].get("DeviceRequests")
        finally:
            probe.remove(force=True)
        entry = {
            "name": kwargs["name"],
            "image": kwargs["image"],
            "command": kwargs["command"],
            "labels": kwargs["labels"],
            "ports": {k: list(v) for k, v in kwargs["ports"].items()},
            "device_requests_sent": sent,
            "device_requests_stored": stored,
        }
        with self._record.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        without_gpus = {k: v for k, v in kwargs.items() if k != "device_requests"}
        return self._real.create(**without_gpus)


class RecordingClient:
    def __init__(self, real: Any, record: Path) -> None:
        self._real = real
        self.containers = RecordingContainers(real.containers, record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def run(argv: list[str]) -> int:
    record = Path(argv[0])
    assert argv[1] == "--", "usage: launch_recorder.py RECORD -- ARGS..."
    real_from_env = docker.from_env
    docker.from_env = lambda **kw: RecordingClient(real_from_env(**kw), record)
    return main(argv[2:])


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
