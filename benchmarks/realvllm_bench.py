"""Shared by the real-vLLM benchmarks: start/stop vLLM, scheduling boost, token-id requests.

Theory of operation: :func:`real_vllm` drives ``scripts/engines.sh`` (the one place that knows
how to start vLLM here) and always stops what it started.  The machine is shared, so a run may
*boost* its processes: with autogroup scheduling (the Linux default) every session competes
for the CPU as one unit, and only a negative autogroup nice (:func:`boost`) lets the
measured processes (vLLM's session, and this client re-executed in a session of its own by
:func:`own_session_boost`, with any emulator it starts) run when they are ready instead of
queueing behind other users' work.  Requests are token-id prompts with ``ignore_eos`` and
``max_tokens``, so every engine sees exactly the same prompt and output lengths; they are
streamed with the load generator's client, which times every chunk and counts tokens from
the running ``usage``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from loadgen.client import Target, stream_request
from loadgen.metrics import Outcome, RequestRecord

REPO = Path(__file__).resolve().parents[1]
ENGINES_SH = REPO / "scripts" / "engines.sh"
MODEL = "tiny"
MAX_MODEL_LEN = 4096  # engines.sh starts vLLM with --max-model-len 4096
BLOCK_SIZE = 32  # and --block-size 32
KEEPALIVE_S = 2.0
FIRST_ID, LAST_ID = 6, 4095  # ids the tiny model and the emulator know, none of them special


@dataclass(frozen=True)
class RealVllm:
    url: str
    pid: int  # the API server, leader of vLLM's process group


@contextlib.contextmanager
def real_vllm(
    name: str, kv_bytes: int, cpus: str, nice: int = 0, extra: Sequence[str] = ()
) -> Iterator[RealVllm]:
    """A real vLLM (fcfs) started with ``scripts/engines.sh``; yields where it is, stops it.

    It is started from a private engines directory that links to the shared installation,
    so ``engines.sh stop --all`` run by someone else on the machine does not end it halfway.
    Once it is up, all of it is pinned to ``cpus`` (see :func:`pin_group`) and ``nice`` < 0
    boosts its session (see :func:`boost`)."""
    args = ["start", "--name", name, "--port", "0", "--policy", "fcfs"]
    args += ["--kv-bytes", str(kv_bytes), "--cpus", cpus, "--timeout", "400"]
    if extra:
        args += ["--", *extra]
    with tempfile.TemporaryDirectory(prefix="realvllm-") as tmp:
        env = {**os.environ, "ASCENDRA_ENGINES_DIR": str(private_engines_dir(Path(tmp)))}
        try:
            proc = subprocess.run(
                ["bash", str(ENGINES_SH), *args], capture_output=True, text=True, env=env
            )
            if proc.returncode != 0:
                raise RuntimeError(f"real vLLM did not start:\n{proc.stderr[-2000:]}")
            pid = int((Path(tmp) / "run" / f"{name}.pid").read_text())
            pin_group(pid, cpus)
            if nice and not boost(pid, nice):
                print(f"warning: cannot boost vLLM to autogroup nice {nice}", file=sys.stderr)
            yield RealVllm(proc.stdout.strip().splitlines()[-1], pid)
        finally:
            stop = ["bash", str(ENGINES_SH), "stop", "--name", name]
            subprocess.run(stop, capture_output=True, env=env)
            log = Path(tmp) / "run" / f"{name}.log"
            if log.exists():  # keep vLLM's log: the private directory goes away
                kept = Path(tempfile.gettempdir()) / f"{name}.vllm.log"
                shutil.copyfile(log, kept)
                print(f"vLLM log: {kept}", file=sys.stderr)


def private_engines_dir(tmp: Path) -> Path:
    """``tmp`` with links to the shared installation and a ``run/`` directory of its own."""
    shared = engines_dir()
    for part in ("venv-vllm", "venv-model", "models", "stamps", "logs"):
        (tmp / part).symlink_to(shared / part, target_is_directory=True)
    (tmp / "run").mkdir()
    return tmp


def group_pids(leader: int) -> list[int]:
    """The processes of ``leader``'s process group (vLLM: API server, engine core, workers)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == leader:
                out.append(int(stat.parent.name))
    return out


def sched_totals(pids: Sequence[int]) -> tuple[float, float]:
    """(CPU seconds run, seconds spent runnable but waiting for a CPU) of every thread of
    ``pids`` so far, from ``/proc/PID/task/TID/schedstat``: how much a run was starved."""
    run = wait = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = task.read_text().split()
                run += int(fields[0])
                wait += int(fields[1])
    return run / 1e9, wait / 1e9


def pin_group(leader: int, cpus: str) -> None:
    """Pin every thread of every process in ``leader``'s process group to ``cpus``.

    engines.sh pins only vLLM's compute threads; its API server and engine-core processes
    would float to the client's core.  Their engine core busy-polls the worker while a step
    runs, and on the client's core that starves the API server: streams then arrive in bursts
    of a hundred tokens.  With all of vLLM on one core the tokens stream one by one."""
    wanted = {int(c) for c in cpus.split(",")}
    for pid in group_pids(leader):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):  # the thread went away meanwhile
                os.sched_setaffinity(int(task.name), wanted)


def boost(pid: int | str, nice: int) -> bool:
    """Give the session (autogroup) of ``pid`` scheduler weight ``nice`` (-20..19).

    With autogroup scheduling (the Linux default) every session shares the CPU as one unit,
    so a process's own nice value does not help it against other users' sessions; a negative
    autogroup nice does.  Needs CAP_SYS_NICE; returns False when it cannot be set."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        return False
    return True


def own_session_boost(nice: int) -> None:
    """Boost this process (the client and its children) in a session of its own.

    The shell's session is left alone: the script re-executes itself under ``setsid`` first."""
    if nice == 0:
        return
    if os.getsid(0) != os.getpid():
        os.execvp("setsid", ["setsid", "-w", sys.executable, *sys.argv])
    if not boost("self", nice):
        print(f"warning: cannot set autogroup nice {nice} (needs CAP_SYS_NICE)", file=sys.stderr)


def engines_dir() -> Path:
    default = Path.home() / ".cache" / "ascendra-proxy" / "engines"
    return Path(os.environ.get("ASCENDRA_ENGINES_DIR", default))


def pin_client(cpus: str | None) -> None:
    """Pin this process (the client) to ``cpus`` ("1", "0,1") when the machine has them."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return
    wanted = {int(c) for c in cpus.split(",")}
    if wanted <= os.sched_getaffinity(0):
        os.sched_setaffinity(0, wanted)


class PromptIds:
    """Random token-id prompts, distinct for every request (no prefix-cache hits)."""

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)  # a string seed: each user names its own stream

    def make(self, n: int) -> list[int]:
        return [self._rng.randint(FIRST_ID, LAST_ID) for _ in range(n)]


def request_body(prompt: list[int], max_tokens: int) -> bytes:
    return orjson.dumps(
        {
            "model": MODEL,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    )


def session() -> aiohttp.ClientSession:
    """A client session whose idle connections expire before the server's (uvicorn: 5 s).

    Otherwise a request can be written on a pooled connection the server is closing that
    very moment, and fails with ``ServerDisconnectedError`` before reaching vLLM."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def send(
    session: aiohttp.ClientSession, target: Target, body: bytes, record: RequestRecord, t0: float
) -> RequestRecord:
    """Stream one request into ``record`` (times relative to ``t0``); raise if it failed."""
    await stream_request(session, target, body, target.headers(), record, t0)
    if record.outcome is not Outcome.COMPLETED:
        raise RuntimeError(f"request failed: {record.error}")
    return record


def token_times(record: RequestRecord) -> list[float]:
    """One timestamp per token (tokens that came in one read share its time)."""
    out: list[float] = []
    for t, n in zip(record.chunk_times, record.chunk_tokens, strict=True):
        out.extend([t] * n)
    return out
