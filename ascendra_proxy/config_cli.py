"""``ascendra-proxy check-config FILE``: validate a config without starting anything.

Prints a readable summary (listen address, policy, pools with roles and backends, SLOs,
limits, auth, the learned predictor's model file, training rows and retraining) and exits
0, or prints ``error: <path>: <message>`` on stderr and exits 1.  Secrets are never
printed, only whether they are set.  A ``simulation:`` block (read by
``ascendra-proxy simulate``, skipped by ``serve``) is validated as the simulator does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from ascendra_proxy.config import (
    SIMULATION_KEY,
    BackendConfig,
    ConfigError,
    PredictorConfig,
    ProxyConfig,
    SLOTarget,
    parse_config,
)
from ascendra_proxy.configload import read_yaml
from ascendra_proxy.core.contracts import PolicyNeeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="proxy config YAML")


def run(args: argparse.Namespace) -> int:
    try:
        data = read_yaml(Path(args.file))
        cfg = parse_config(data)
        sim = _simulation(data)
    except ConfigError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    for line in summary_lines(cfg):
        print(line)
    if sim is not None:
        print(f"simulation {_params(sim).strip()[1:-1]}")
    return 0


def _simulation(data: object) -> object | None:
    """The validated ``simulation:`` block (the proxy ignores it; the simulator reads it)."""
    if not isinstance(data, Mapping) or SIMULATION_KEY not in data:
        return None
    from ascendra_proxy.sim.setup import parse_sim_config

    return parse_sim_config(data).sim


def summary_lines(cfg: ProxyConfig) -> Iterator[str]:
    """The human summary of a valid config, line by line."""
    yield f"listen    {cfg.listen.host}:{cfg.listen.port}"
    yield f"policy    {cfg.policy.type}{_params(cfg.policy.params)}"
    yield f"uses      {_needs(cfg.policy_needs())}"
    yield f"models    {', '.join(sorted(cfg.models()))}"
    yield "pools"
    for pool in cfg.pools:
        count = len(pool.backends)
        yield f"  {pool.name} (role {pool.role}, {count} backend{'' if count == 1 else 's'})"
        for b in pool.backends:
            yield f"    {_backend(b)}"
    yield "slo (ttft / tpot)"
    yield f"  default            {_slo(cfg.slo.default)}"
    for model, target in sorted(cfg.slo.models.items()):
        yield f"  model {model:<12} {_slo(target)}"
    for name, target in sorted(cfg.slo.classes.items()):
        yield f"  class {name:<12} {_slo(target)}"
    lim = cfg.limits
    cap = "none" if lim.max_inflight_per_backend is None else lim.max_inflight_per_backend
    yield (
        f"limits    body {lim.max_body_bytes} B, queue {lim.max_queued_requests}, "
        f"in-flight per backend {cap}"
    )
    t = cfg.timeouts
    yield (
        f"timeouts  connect {t.connect_s:g}s, first byte {t.first_byte_s:g}s, "
        f"idle {t.idle_s:g}s, total {t.total_s:g}s"
    )
    admin = "set" if cfg.auth.admin_key else "off"
    yield f"auth      client keys {len(cfg.auth.api_keys)}, admin key {admin}"
    yield from _predictor(cfg.predictor, cfg.policy.type, cfg.policy_needs().predictor is not None)


def _needs(needs: PolicyNeeds) -> str:
    """What the policy declares it uses (its registry entry), in a few words."""
    used = [
        "pool roles" if needs.roles else "",
        "a slack predictor" if needs.predictor is not None else "",
        "prompt prefix hashes" if needs.prefix_blocks_per_backend is not None else "",
        "slo classes" if needs.slo_classes else "",
        f"a tick every {needs.tick_s * 1000:g} ms" if needs.tick_s is not None else "",
        "latency profiles" if needs.latency_profiles else "",
    ]
    return ", ".join(u for u in used if u) or "routing only (no roles, predictor or tick)"


def _predictor(p: PredictorConfig, policy: str, has_predictor: bool) -> Iterator[str]:
    """The ``predictor:`` section (only a policy that declares a slack predictor uses it)."""
    if p.model_path is None and p.training_data is None:
        yield "predictor analytical (no model file, no training rows)"
        return
    if p.model_path is None:
        yield "predictor analytical (no model file)"
    else:
        unused = "" if has_predictor or p.retrain else f"; unused by {policy}"
        yield (
            f"predictor model {p.model_path} (reload checked every {p.reload_check_s:g}s{unused})"
        )
    t = p.training_data
    if t is not None:
        yield (
            f"          training rows {t.path} (max {t.max_bytes} B per file, "
            f"{t.keep} rotated kept, horizon {t.horizon_tokens} tokens)"
        )
        yield (
            f"          rows every {t.min_interval_s:g}s waiting / {t.resident_interval_s:g}s "
            f"streaming (max {t.max_rows_per_request}), flush {t.flush_s:g}s, "
            f"tick {t.tick_ms:g} ms without a policy tick"
        )
        if p.error_metrics and has_predictor:
            yield "          error metrics on (the recorded rows are predicted too)"
    r = p.retrain
    if r is not None:
        yield (
            f"          retrain every {r.interval_s:g}s in a worker process (min {r.min_rows} "
            f"rows, quantile {r.quantile:g}, holdout {r.holdout:g}, seed {r.seed})"
        )


def _params(params: object) -> str:
    if not dataclasses.is_dataclass(params) or not dataclasses.fields(params):
        return ""
    items = (f"{f.name}={getattr(params, f.name)!r}" for f in dataclasses.fields(params))
    return " (" + ", ".join(items) + ")"


def _backend(b: BackendConfig) -> str:
    s = b.engine_settings
    parts = [f"{b.name:<10}", f"{b.engine:<6}", b.url, f"model={b.model}"]
    if b.gpu_ids:
        parts.append("gpus=" + ",".join(str(g) for g in b.gpu_ids))
    if s.profile:
        parts.append(f"profile={s.profile}")
    parts.append(f"sched={s.scheduling_policy}")
    parts.append(f"max_num_seqs={s.max_num_seqs}")
    if b.api_key:
        parts.append("api_key=set")
    return "  ".join(parts)


def _slo(t: SLOTarget) -> str:
    return f"{t.ttft_ms:g} ms / {t.tpot_ms:g} ms"
