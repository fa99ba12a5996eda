"""CPU accounting of a load run: did the machine keep up?

Theory of operation: the emulators model GPU steps by sleeping in real time; if the machine
runs out of CPU their step loops fall behind and every latency grows with it, which would
measure the laptop, not the policy.  :class:`CpuMeter` reads ``/proc`` before and after a
run: CPU seconds of each child process (``utime + stime``), of the demo's own process (the
load generator), and the whole machine's busy share (``/proc/stat``, which includes anyone
else's work).  :func:`verdict` turns that and the client's send lag into a warning when the
run was starved.  Off Linux the meter reports nothing and the verdict relies on the lag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuMeter", "verdict"]

BUSY_WARN = 0.90  # machine busy share above which results are suspect
SEND_LAG_WARN = 0.05  # client lateness p99 above this share of the TTFT SLO: suspect


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


@dataclass
class CpuMeter:
    pids: Mapping[str, int]  # role -> pid
    wall_s: float = 0.0
    _start: dict[str, float | None] = field(default_factory=dict)
    _self: float = 0.0
    _machine: tuple[float, float] | None = None

    def start(self) -> None:
        self._start = {name: _proc_cpu_s(pid) for name, pid in self.pids.items()}
        t = os.times()
        self._self = t.user + t.system
        self._machine = _machine()

    def stop(self, wall_s: float) -> dict[str, Any]:
        """CPU shares (of one core) per process over the run, and the machine's busy share."""
        out: dict[str, Any] = {"wall_s": wall_s, "cpus": os.cpu_count()}
        shares: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            before, after = self._start.get(name), _proc_cpu_s(pid)
            if before is None or after is None or wall_s <= 0:
                shares[name] = None
            else:
                shares[name] = (after - before) / wall_s
        t = os.times()
        shares["client"] = (t.user + t.system - self._self) / wall_s if wall_s > 0 else None
        out["process_core_share"] = shares
        end = _machine()
        if self._machine is not None and end is not None and end[1] > self._machine[1]:
            out["machine_busy"] = (end[0] - self._machine[0]) / (end[1] - self._machine[1])
        else:
            out["machine_busy"] = None
        return out


def verdict(cpu: Mapping[str, Any], send_lag_p99_s: float | None, slo_ttft_s: float) -> str | None:
    """A warning when the run looks CPU-starved, else None (times in wall clock)."""
    problems = []
    busy = cpu.get("machine_busy")
    if busy is not None and busy > BUSY_WARN:
        problems.append(f"the machine was {busy:.0%} busy")
    if send_lag_p99_s is not None and send_lag_p99_s > SEND_LAG_WARN * slo_ttft_s:
        problems.append(f"the client sent requests up to {send_lag_p99_s * 1000:.0f} ms late (p99)")
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ": the emulated engines may have fallen behind real time; rerun with a larger "
        "--time-scale (e.g. 16) or on a quieter machine"
    )
