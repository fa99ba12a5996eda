"""CPU accounting of a load run: did the machine keep up?

Theory of operation: the emulators model GPU steps by sleeping in real time; if they wait for
a CPU their steps end late and every latency grows with it, which would measure the machine,
not the policy.  :class:`CpuMeter` reads ``/proc`` before and after a run: for each process
(every engine, the proxy, and the demo itself, which runs the load generator) the CPU it
used (``utime + stime``) and, from ``/proc/PID/schedstat``, how long it waited on a run queue
per time slice, which is the scheduling delay added to each wake-up (an engine step, a proxy
tick, a chunk); and the whole machine's busy share (``/proc/stat``, anyone's work).
:func:`verdict` warns when those delays, in model time, are large next to a GPU step, or
when the client sent requests late.  :func:`pick_time_scale` chooses the automatic time
scale from the idle CPU.  Off Linux the meter reports nothing and the verdict relies on the
send lag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuMeter", "idle_cores", "pick_time_scale", "verdict"]

# Warn above these, in model time: a GPU step takes 10-150 ms, the TTFT SLO is 1 s.
WAIT_WARN_S = 0.002  # mean run-queue wait per wake-up of any process
# The same in the worst one-second interval.  Measured on a shared 2-vCPU machine: runs
# whose worst second stayed under ~21 ms matched the simulator within 2 points; one at 68 ms
# lost half of ascendra's lead.
WORST_WAIT_WARN_S = 0.025
SEND_LAG_WARN_S = 0.05  # p99 of how late the client sent a request
# CPU seconds per streamed token of the whole demo (3 emulators + proxy + client), measured
# on a 2-vCPU KVM guest: 0.17 cores for 1,860 tokens/s with ascendra at time scale 4.
CPU_S_PER_TOKEN = 100e-6
# Automatic time scales, fastest first; the first whose demand fits HEADROOM of the idle
# cores is used (the largest when none fits).  Not below 3: ascendra's proxy work (ticks,
# HTTP hops) is not slowed down, and on a shared machine runs at scale 2 lost 10-25 points
# of its lead where scales 3-6 matched the simulator (59.7% vs 81.3% at scale 3, 2.5 min).
SCALES = (3.0, 4.0, 6.0)
HEADROOM = 0.5


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _ticks()  # utime, stime


def _machine() -> tuple[float, float] | None:
    """(busy, total) jiffies over all CPUs."""
    try:
        parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [float(v) for v in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _schedstat(pid: int | str) -> tuple[float, int] | None:
    """(seconds waited on a run queue, time slices run) of a process's main thread."""
    try:
        _, wait_ns, slices = Path(f"/proc/{pid}/schedstat").read_text().split()[:3]
    except (OSError, ValueError):
        return None
    return int(wait_ns) / 1e9, int(slices)


@dataclass(frozen=True, slots=True)
class _Sample:
    cpu_s: float | None
    sched: tuple[float, int] | None


def _sample(pid: int | str) -> _Sample:
    if pid == "self":
        t = os.times()
        return _Sample(t.user + t.system, _schedstat("self"))
    return _Sample(_proc_cpu_s(int(pid)), _schedstat(pid))


Reading = dict[str, _Sample]


@dataclass
class CpuMeter:
    """Samples every process at :meth:`start`, each :meth:`tick` and :meth:`stop`."""

    pids: Mapping[str, int]  # role -> pid; the demo itself is added as "client"
    _readings: list[Reading] = field(default_factory=list)
    _machine: tuple[float, float] | None = None

    def _read(self) -> Reading:
        targets: dict[str, int | str] = {**self.pids, "client": "self"}
        return {name: _sample(pid) for name, pid in targets.items()}

    def start(self) -> None:
        self._readings = [self._read()]
        self._machine = _machine()

    def tick(self) -> None:
        self._readings.append(self._read())

    def stop(self, wall_s: float) -> dict[str, Any]:
        """Per process: share of one core used, mean run-queue wait per time slice (s) over
        the run and in the worst interval between ticks; the machine's busy share."""
        self.tick()
        first, last = self._readings[0], self._readings[-1]
        shares: dict[str, float | None] = {}
        for name in first:
            a, b = first[name].cpu_s, last[name].cpu_s
            shares[name] = None if a is None or b is None or wall_s <= 0 else (b - a) / wall_s
        pairs = list(zip(self._readings, self._readings[1:], strict=False))
        worst = {
            name: max(
                (w for a, b in pairs if (w := _wait(a[name], b[name])) is not None), default=None
            )
            for name in first
        }
        busy = None
        end = _machine()
        if self._machine is not None and end is not None and end[1] > self._machine[1]:
            busy = (end[0] - self._machine[0]) / (end[1] - self._machine[1])
        return {
            "wall_s": wall_s,
            "cpus": os.cpu_count(),
            "process_core_share": shares,
            "run_queue_wait_per_slice_s": {n: _wait(first[n], last[n]) for n in first},
            "worst_interval_wait_per_slice_s": worst,
            "machine_busy": busy,
        }


def _wait(a: _Sample, b: _Sample) -> float | None:
    """Mean run-queue wait per time slice between two samples of one process."""
    if a.sched is None or b.sched is None:
        return None
    slices = b.sched[1] - a.sched[1]
    return (b.sched[0] - a.sched[0]) / slices if slices > 0 else 0.0


def idle_cores(sample_s: float = 1.0) -> float | None:
    """Idle CPU cores of the machine over ``sample_s`` (None off Linux)."""
    import time

    before = _machine()
    time.sleep(sample_s)
    after = _machine()
    cpus = os.cpu_count() or 1
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy = (after[0] - before[0]) / (after[1] - before[1])
    return (1.0 - busy) * cpus


def pick_time_scale(tokens_per_s: float, idle: float | None) -> tuple[float, str]:
    """The time scale for a demo streaming ``tokens_per_s`` at scale 1, and why."""
    need = tokens_per_s * CPU_S_PER_TOKEN
    if idle is None:
        return SCALES[-1], "automatic: CPU load unknown, slowest scale"
    for scale in SCALES:
        if need / scale <= HEADROOM * idle:
            break
    why = (
        f"automatic: {idle:.1f} of {os.cpu_count()} cores idle, the demo needs "
        f"~{need / scale:.2f} cores at this scale"
    )
    if need / scale > HEADROOM * idle:
        why += " (the machine is busy: expect noisier results)"
    return scale, why


def verdict(cpu: Mapping[str, Any], send_lag_p99_s: float | None, scale: float) -> str | None:
    """A warning when the run looks CPU-starved, else None (``cpu`` in wall-clock seconds)."""
    problems = []
    for key, limit, when in (
        ("run_queue_wait_per_slice_s", WAIT_WARN_S, "on average"),
        ("worst_interval_wait_per_slice_s", WORST_WAIT_WARN_S, "in its worst second"),
    ):
        waits = cpu.get(key) or {}
        worst = max(((w, n) for n, w in waits.items() if w is not None), default=None)
        if worst is not None and worst[0] / scale > limit:
            problems.append(
                f"{worst[1]} waited {worst[0] / scale * 1000:.1f} ms (model time) for a CPU "
                f"per wake-up {when}"
            )
    if send_lag_p99_s is not None and send_lag_p99_s / scale > SEND_LAG_WARN_S:
        problems.append(
            f"the client sent requests up to {send_lag_p99_s / scale * 1000:.0f} ms (model "
            "time) late (p99)"
        )
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ": the machine may not have kept up, which inflates latencies (ascendra's more "
        "than round_robin's: it holds requests in the proxy and binds them at policy ticks); "
        "rerun on a quieter machine or "
        "with a larger --time-scale"
    )
