"""Running simulations: one point, a rate sweep, policy variants, several in parallel.

Theory of operation: a :class:`Job` names everything one simulated point needs (config,
workload spec with its rate, seed) and is picklable, so :func:`run_jobs` can spread jobs
over worker processes; results come back in job order whatever the scheduling, so a sweep
is deterministic with any number of workers.  :func:`sweep_points` runs one config over
rates; :func:`loadgen.sweep.sweep_document` then adds ``capacity_rps_at_90`` by the paper's
linear interpolation, exactly as ``loadgen sweep`` does.

:func:`policy_variant` derives a config running a policy with some parameters changed,
named by dotted paths (``{"migration.enabled": False, "offload.rule": "paper"}``); the new
parameters go through the config loader's strict validation, so a typo is an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ascendra_proxy.configload import ConfigError, load
from ascendra_proxy.sim.report import point_document
from ascendra_proxy.sim.setup import SimConfig, policy_registry, with_policy
from ascendra_proxy.sim.simulator import SimResult, Simulator
from loadgen.workloads import WorkloadSpec, build_workload

__all__ = ["Job", "policy_variant", "run_job", "run_jobs", "simulate", "sweep_points"]


def simulate(cfg: SimConfig, spec: WorkloadSpec, seed: int) -> SimResult:
    return Simulator(cfg, build_workload(spec), seed=seed).run()


@dataclass(frozen=True, slots=True)
class Job:
    cfg: SimConfig
    spec: WorkloadSpec
    rate: float | None
    seed: int
    keep_requests: bool = False


def run_job(job: Job) -> dict[str, Any]:
    """One point document (see :func:`ascendra_proxy.sim.report.point_document`)."""
    result = simulate(job.cfg, job.spec, job.seed)
    return point_document(result, job.rate, job.keep_requests)


J = TypeVar("J")


def run_jobs(
    jobs: Sequence[J],
    workers: int = 1,
    on_done: Callable[[int, dict[str, Any]], None] | None = None,
    fn: Callable[[J], dict[str, Any]] = run_job,  # type: ignore[assignment]
) -> list[dict[str, Any]]:
    """Run ``fn`` over jobs (in ``workers`` processes when > 1; ``fn`` must then be a
    module-level function); documents in job order."""
    out: list[dict[str, Any]] = []
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            out.append(fn(job))
            if on_done is not None:
                on_done(i, out[-1])
        return out
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        for i, fut in enumerate(futures):
            out.append(fut.result())
            if on_done is not None:
                on_done(i, out[-1])
    return out


def sweep_points(
    cfg: SimConfig,
    spec: WorkloadSpec,
    rates: Sequence[float],
    seed: int,
    workers: int = 1,
    keep_requests: bool = False,
) -> list[dict[str, Any]]:
    jobs = [Job(cfg, spec.with_rate(r), r, seed, keep_requests) for r in rates]
    return run_jobs(jobs, workers)


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))


def _set_dotted(data: dict[str, Any], path: str, value: object) -> None:
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if not isinstance(child, dict):
            raise ConfigError(f"policy.{path}", "no such parameter group")
        node = child
    if keys[-1] not in node:
        raise ConfigError(f"policy.{path}", "no such parameter")
    node[keys[-1]] = value


def policy_variant(cfg: SimConfig, name: str, changes: Mapping[str, object]) -> SimConfig:
    """``cfg`` running ``name`` with parameters changed by dotted path (validated)."""
    spec = policy_registry().get(name)
    if spec is None:
        return with_policy(cfg, name)  # raises the unknown-policy error
    same = cfg.proxy.policy.type == name
    base = cfg.proxy.policy.params if same else spec.params_type()
    data = dataclasses.asdict(base)  # type: ignore[arg-type]
    for path, value in changes.items():
        _set_dotted(data, path, value)
    params = load(spec.params_type, data, "policy")
    return with_policy(cfg, name, params)
