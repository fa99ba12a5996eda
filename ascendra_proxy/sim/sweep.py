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

A job can also carry the learned slack predictor (``predictor_model``: a model file the
Ascendra policy answers with; other policies have no predictor and ignore it) and record
training rows (``training_data``: appended to that rolling JSONL file through
:func:`ascendra_proxy.predictor.simtap.record_to_file`, rows named by ``run_id``).  Jobs
recording rows run in one process (:func:`run_jobs` callers keep them sequential).
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
from ascendra_proxy.sim.setup import SimConfig, make_policy, policy_registry, with_policy
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
    predictor_model: str | None = None  # learned model file for a policy with a predictor
    training_data: str | None = None  # record training rows to this file
    run_id: str = "sim"  # prefix of the recorded row ids (unique per file)


def run_job(job: Job) -> dict[str, Any]:
    """One point document (see :func:`ascendra_proxy.sim.report.point_document`)."""
    if job.predictor_model is None and job.training_data is None:
        result = simulate(job.cfg, job.spec, job.seed)
        return point_document(result, job.rate, job.keep_requests)
    from ascendra_proxy.predictor.setup import analytical_fallback, takes_predictor

    policy = make_policy(job.cfg.proxy)
    predictor = None
    if job.predictor_model is not None and takes_predictor(policy):
        from ascendra_proxy.predictor.model import LearnedPredictor

        fallback = analytical_fallback(job.cfg.proxy)
        predictor = LearnedPredictor.open(job.predictor_model, fallback)
    sim = Simulator(
        job.cfg, build_workload(job.spec), seed=job.seed, policy=policy, predictor=predictor
    )
    recorder = None
    if job.training_data is not None:
        from ascendra_proxy.predictor.simtap import record_to_file

        recorder = record_to_file(sim, job.training_data, job.run_id)
    result = sim.run()
    if recorder is not None:
        recorder.flush()
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
