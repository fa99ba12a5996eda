"""Strict config loading: every error names its path; shipped configs load; check-config CLI."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascendra_proxy import config_cli, configload
from ascendra_proxy.config import ConfigError, ProxyConfig, load_config, parse_config
from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.policies.least_loaded import LeastLoaded, LeastLoadedParams
from ascendra_proxy.core.policies.registry import POLICIES, PolicySpec
from ascendra_proxy.core.policies.round_robin import RoundRobin, RoundRobinParams, make_round_robin
from ascendra_proxy.core.policies.topology import hp_needs_lp
from ascendra_proxy.core.slo import SLO

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
EXAMPLE_ENV = {
    "LP_BACKEND_KEY": "k1",
    "PROXY_CLIENT_KEY": "k2",
    "ASCENDRA_ADMIN_KEY": "k3",
    "PROXY_BATCH_KEY": "k4",
}

BASE: dict[str, Any] = {
    "pools": [
        {
            "name": "lp",
            "role": "lp",
            "backends": [
                {"url": "http://127.0.0.1:8001", "engine": "vllm", "model": "m"},
                {"url": "http://127.0.0.1:8002/", "engine": "sglang", "model": "m"},
            ],
        },
        {
            "name": "hp",
            "role": "hp",
            "backends": [{"url": "http://127.0.0.1:8003", "engine": "vllm", "model": "m"}],
        },
    ],
}


def with_(path: str, value: object) -> dict[str, Any]:
    """BASE with one value set at a dotted path (``pools.0.backends.1.url``)."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def backend(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "engine": "vllm", "model": "m", **extra}


GPU_TWICE = {
    "pools": [
        {
            "name": "a",
            "role": "lp",
            "backends": [backend("http://h:1", gpu_ids=[0]), backend("http://h:2", gpu_ids=[2])],
        },
        {"name": "b", "role": "hp", "backends": [backend("http://h:3", gpu_ids=[3, 2])]},
    ]
}

ERRORS = [
    # (document, expected path, fragment of the message)
    (with_("bogus", 1), "bogus", "unknown key"),
    (with_("listen.prot", 1), "listen.prot", "unknown key"),
    (with_("listen.port", "80"), "listen.port", "expected an integer, got '80'"),
    (with_("listen.port", True), "listen.port", "expected an integer, got True"),
    (with_("listen.port", 8000.0), "listen.port", "expected an integer"),
    (with_("listen.port", 70000), "listen.port", "at most 65535"),
    (with_("listen.port", -1), "listen.port", "at least 0"),
    (with_("listen", [1]), "listen", "expected a mapping, got a list"),
    (with_("pools.0.role", "low"), "pools[0].role", "expected one of 'lp', 'hp', 'mixed'"),
    (with_("pools.0.name", "l p"), "pools[0].name", "invalid pool name"),
    (with_("pools.1.name", "lp"), "pools[1].name", "duplicate pool name 'lp' (also pools[0].name)"),
    (with_("pools.0.backends", {"url": "x"}), "pools[0].backends", "expected a list"),
    (with_("pools.0.backends.0.url", "ftp://x"), "pools[0].backends[0].url", "http(s) URL"),
    (with_("pools.0.backends.0.url", "http://"), "pools[0].backends[0].url", "http(s) URL"),
    (with_("pools.0.backends.0.url", "http://h:99999"), "pools[0].backends[0].url", "http(s)"),
    (with_("pools.0.backends.0.url", "http://h/v1"), "pools[0].backends[0].url", "without /v1"),
    (with_("pools.0.backends.0.url", 8001), "pools[0].backends[0].url", "expected a string"),
    (with_("pools.0.backends.1.engine", "tgi"), "pools[0].backends[1].engine", "'vllm', 'sglang'"),
    (
        with_("pools.0.backends.1", {"url": "http://h:1", "engine": "vllm"}),
        "pools[0].backends[1].model",
        "required key is missing",
    ),
    (with_("pools.0.backends.1.model", ""), "pools[0].backends[1].model", "must not be empty"),
    (with_("pools.0.backends.1.modle", "m"), "pools[0].backends[1].modle", "unknown key"),
    (
        with_("pools.1.backends.0.url", "http://127.0.0.1:8001/"),
        "pools[1].backends[0].url",
        "duplicate backend URL",
    ),
    (
        with_("pools.1.backends.0.name", "lp-1"),
        "pools[1].backends[0].name",
        "duplicate backend name 'lp-1' (also pools[0].backends[1].name)",
    ),
    (with_("pools.0.backends.0.gpu_ids", [0, 0]), "pools[0].backends[0].gpu_ids", "listed twice"),
    (with_("pools.0.backends.0.gpu_ids", [-1]), "pools[0].backends[0].gpu_ids", ">= 0"),
    (with_("pools.0.backends.0.gpu_ids", "0"), "pools[0].backends[0].gpu_ids", "expected a list"),
    (with_("pools.0.backends.0.gpu_ids", [True]), "pools[0].backends[0].gpu_ids[0]", "integer"),
    (
        GPU_TWICE,
        "pools[1].backends[0].gpu_ids[1]",
        "duplicate GPU id 2 (also pools[0].backends[1].gpu_ids[0])",
    ),
    (
        with_("pools.0.backends.0.engine_settings.scheduling_policy", "edf"),
        "pools[0].backends[0].engine_settings.scheduling_policy",
        "'fcfs', 'priority'",
    ),
    (
        with_("pools.0.backends.0.engine_settings.max_num_seqs", 0),
        "pools[0].backends[0].engine_settings.max_num_seqs",
        "at least 1",
    ),
    (
        with_("pools.0.backends.0.engine_settings.enable_prefix_caching", 1),
        "pools[0].backends[0].engine_settings.enable_prefix_caching",
        "expected true or false",
    ),
    (
        with_("pools.0.backends.0.engine_settings.num_gpu_blocks", 0),
        "pools[0].backends[0].engine_settings.num_gpu_blocks",
        "at least 1",
    ),
    (with_("pools.0.backends.0.api_key", ""), "pools[0].backends[0].api_key", "must not be empty"),
    (
        with_("pools.0.backends.0.api_key", "env:NOPE_UNSET"),
        "pools[0].backends[0].api_key",
        "NOPE_UNSET is not set",
    ),
    (with_("pools.0.backends.0.api_key", "env:"), "pools[0].backends[0].api_key", "variable name"),
    (
        with_("pools.0.backends.0.url", "http://127.0.0.1:8000"),
        "pools[0].backends[0].url",
        "proxy's own listen address",
    ),
    (
        with_("pools.0.backends.0.url", "http://localhost:8000/"),
        "pools[0].backends[0].url",
        "proxy's own listen address",
    ),
    (with_("pools", []), "pools", "at least one pool"),
    (with_("pools", [{"name": "e", "role": "lp"}]), "pools", "no pool has any backends"),
    (with_("pools", None), "pools", "expected a list, got null"),
    ({"listen": {}}, "pools", "required key is missing"),
    (with_("slo.default", {"ttft_ms": 0, "tpot_ms": 1}), "slo.default.ttft_ms", "greater than 0"),
    (with_("slo.default", {"ttft_ms": 100}), "slo.default.tpot_ms", "required key is missing"),
    (with_("slo.default.ttft_ms", ".nan"), "slo.default.ttft_ms", "expected a number"),
    (with_("slo.default.ttft_ms", float("inf")), "slo.default.ttft_ms", "finite"),
    (
        with_("slo.models", {"other": {"ttft_ms": 1, "tpot_ms": 1}}),
        "slo.models.other",
        "no backend serves this model",
    ),
    (
        with_("slo.classes", {"a b": {"ttft_ms": 1, "tpot_ms": -1}}),
        "slo.classes['a b'].tpot_ms",
        "greater than 0",
    ),
    (with_("slo.classes", [1]), "slo.classes", "expected a mapping"),
    (with_("policy", {"type": "fastest"}), "policy.type", "unknown policy 'fastest'"),
    (with_("policy", {"type": 3}), "policy.type", "unknown policy 3"),
    (
        with_("policy", {"type": "round_robin", "x": 1}),
        "policy.x",
        "unknown key for policy 'round_robin' (allowed: type)",
    ),
    (
        with_("policy", {"type": "least_loaded", "max_scrape_age_s": 0}),
        "policy.max_scrape_age_s",
        "greater than 0",
    ),
    (
        with_("policy", {"type": "least_loaded", "max_scrape_age_s": "5"}),
        "policy.max_scrape_age_s",
        "expected a number",
    ),
    (with_("policy", "round_robin"), "policy", "expected a mapping"),
    (with_("timeouts.idle_s", 0), "timeouts.idle_s", "greater than 0"),
    (with_("timeouts.first_byte_s", 4000), "timeouts.first_byte_s", "must not exceed total_s"),
    (with_("listen.host", ""), "listen.host", "must not be empty"),
    (with_("limits.max_inflight_per_backend", 0), "limits.max_inflight_per_backend", "at least 1"),
    (with_("limits.max_body_bytes", 1.5), "limits.max_body_bytes", "expected an integer"),
    (with_("auth.api_keys", "secret"), "auth.api_keys", "expected a list"),
    (with_("auth.api_keys", ["ok", ""]), "auth.api_keys[1]", "must not be empty"),
    (with_("auth.api_keys", ["env:NOPE_UNSET"]), "auth.api_keys[0]", "NOPE_UNSET is not set"),
    (with_("auth.admin_key", "env:EMPTY_VAR"), "auth.admin_key", "EMPTY_VAR is not set or empty"),
    (with_("health.failure_threshold", 0), "health.failure_threshold", "at least 1"),
    (with_("scrape.interval_s", -0.5), "scrape.interval_s", "greater than 0"),
    (with_("predictor.modelpath", "m.json"), "predictor.modelpath", "unknown key"),
    (with_("predictor.model_path", ""), "predictor.model_path", "must not be empty"),
    (with_("predictor.reload_check_s", 0), "predictor.reload_check_s", "greater than 0"),
    (with_("predictor.training_data", {}), "predictor.training_data.path", "required key"),
    (
        with_("predictor.training_data", {"path": "r.jsonl", "max_bytes": 0}),
        "predictor.training_data.max_bytes",
        "at least 1",
    ),
    (
        with_("predictor", {"model_path": "a.json", "training_data": {"path": "a.json"}}),
        "predictor.training_data.path",
        "must differ from model_path",
    ),
    (with_("predictor.retrain", {"interval_s": 60}), "predictor.retrain", "training_data"),
    (
        with_("predictor", {"training_data": {"path": "r"}, "retrain": {"interval_s": 60}}),
        "predictor.retrain",
        "needs predictor.model_path",
    ),
    (
        with_("predictor.retrain", {"interval_s": 60, "quantile": 1}),
        "predictor.retrain.quantile",
        "less than 1",
    ),
    (with_("predictor.retrain", {"min_rows": 5}), "predictor.retrain.interval_s", "required"),
    ([1, 2], "", "expected a mapping at the top level"),
]


@pytest.mark.parametrize(
    ("doc", "path", "fragment"), ERRORS, ids=[e[1] or "<root>" for e in ERRORS]
)
def test_errors_name_their_path(doc: object, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={"EMPTY_VAR": ""})
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value) == (f"{path}: {info.value.message}" if path else info.value.message)


def test_minimal_config_gets_defaults_and_names() -> None:
    cfg = parse_config(BASE, env={})
    assert [b.name for _, b in cfg.backends()] == ["lp-0", "lp-1", "hp-0"]
    assert cfg.pools[0].backends[1].url == "http://127.0.0.1:8002"  # trailing slash dropped
    assert cfg.models() == {"m"}
    assert cfg.policy.type == "round_robin" and cfg.policy.params == RoundRobinParams()
    assert cfg.slo.default.ttft_ms == 1000.0 and cfg.slo.default.tpot_ms == 150.0
    assert cfg.limits.max_body_bytes == 4 * 1024 * 1024
    assert (cfg.listen.host, cfg.listen.port) == ("127.0.0.1", 8000)
    assert isinstance(cfg.make_policy(), RoundRobin)


def test_env_secrets_are_resolved_and_not_in_repr() -> None:
    doc = with_("pools.0.backends.0.api_key", "env:BK")
    doc["auth"] = {"api_keys": ["env:CK", "literal-key"], "admin_key": "env:AK"}
    cfg = parse_config(doc, env={"BK": "b-secret", "CK": "c-secret", "AK": "a-secret"})
    assert cfg.pools[0].backends[0].api_key == "b-secret"
    assert cfg.auth.api_keys == ("c-secret", "literal-key")
    assert cfg.auth.admin_key == "a-secret"
    assert "secret" not in repr(cfg)


def test_policy_params_are_typed() -> None:
    cfg = parse_config(with_("policy", {"type": "least_loaded", "max_scrape_age_s": 2}), env={})
    assert cfg.policy.params == LeastLoadedParams(max_scrape_age_s=2.0)
    policy = cfg.make_policy()
    assert isinstance(policy, LeastLoaded) and policy.name == "least_loaded"


def test_core_views() -> None:
    doc = with_(
        "slo",
        {
            "default": {"ttft_ms": 800, "tpot_ms": 90},
            "models": {"m": {"ttft_ms": 500, "tpot_ms": 50}},
            "classes": {"batch": {"ttft_ms": 9000, "tpot_ms": 400}},
        },
    )
    doc["pools"][1]["backends"][0]["engine_settings"] = {"scheduling_policy": "priority"}
    cfg = parse_config(doc, env={})
    table = cfg.slo_table()
    assert table.default == SLO(0.8, 0.09)
    assert table.models["m"] == SLO(0.5, 0.05) and table.classes["batch"] == SLO(9.0, 0.4)
    infos = cfg.backend_infos()
    assert [(i.name, i.pool, i.role) for i in infos] == [
        ("lp-0", "lp", Role.LP),
        ("lp-1", "lp", Role.LP),
        ("hp-0", "hp", Role.HP),
    ]
    assert [i.priority_scheduling for i in infos] == [False, False, True]


def test_empty_pool_is_fine_when_another_has_backends() -> None:
    doc = copy.deepcopy(BASE)
    doc["pools"].append({"name": "spare", "role": "hp"})
    assert parse_config(doc, env={}).pools[2].backends == ()


def test_policy_topology_rule_is_enforced() -> None:
    """A policy may refuse a layout (the ascendra policy: HP pools need an LP pool)."""
    fake = dict(POLICIES)
    fake["lp_hp"] = PolicySpec("lp_hp", RoundRobinParams, make_round_robin, "t", hp_needs_lp)
    ok = with_("policy", {"type": "lp_hp"})
    assert parse_config(ok, env={}, policies=fake).policy.type == "lp_hp"
    bad = copy.deepcopy(ok)
    bad["pools"][0]["role"] = "mixed"
    with pytest.raises(ConfigError, match=r"^policy.type: this policy needs an lp pool"):
        parse_config(bad, env={}, policies=fake)


def test_configs_are_frozen() -> None:
    cfg = parse_config(BASE, env={})
    with pytest.raises(AttributeError):
        cfg.listen.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", ["example.yaml", "emulated-2lp-1hp.yaml", "round-robin-3.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name, env=EXAMPLE_ENV)
    assert isinstance(cfg, ProxyConfig)
    assert cfg.backends()


def test_emulated_config_shape() -> None:
    cfg = load_config(CONFIGS / "emulated-2lp-1hp.yaml", env={})
    rows = [
        (p.role, b.url, b.engine, b.engine_settings.profile, b.engine_settings.scheduling_policy)
        for p, b in cfg.backends()
    ]
    assert rows == [
        ("lp", f"http://127.0.0.1:{port}", "vllm", "a100-llama3-8b", "priority")
        for port in (8101, 8102)
    ] + [("hp", "http://127.0.0.1:8103", "vllm", "a100-llama3-8b", "priority")]


def test_example_covers_every_key() -> None:
    """configs/example.yaml sets every field of every section (it documents them all)."""
    doc = yaml.safe_load((CONFIGS / "example.yaml").read_text())

    def missing(cls: Any, data: dict[str, Any]) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in data]

    cfg = load_config(CONFIGS / "example.yaml", env=EXAMPLE_ENV)
    hints = typing.get_type_hints(ProxyConfig)
    gaps = [
        f"{name}.{sub}"
        for name, tp in hints.items()
        if dataclasses.is_dataclass(tp) and name != "policy"
        for sub in missing(tp, doc[name])
    ]
    assert not gaps
    pred = cfg.predictor
    assert pred.training_data is not None and pred.retrain is not None
    assert not missing(type(pred.training_data), doc["predictor"]["training_data"])
    assert not missing(type(pred.retrain), doc["predictor"]["retrain"])
    backend_doc = doc["pools"][0]["backends"][0]
    first = cfg.pools[0].backends[0]
    assert not missing(type(first), backend_doc)
    assert not missing(type(first.engine_settings), backend_doc["engine_settings"])


YAML_ERRORS = [
    ("pools: [\n", "invalid YAML: line"),
    ("listen: {port: 1}\nlisten: {port: 2}\n", "line 2: duplicate key 'listen'"),
    ("pools:\n  - name: a\n    name: b\n", "line 3: duplicate key 'name'"),
]


@pytest.mark.parametrize(("text", "fragment"), YAML_ERRORS)
def test_yaml_level_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ascendra_proxy.cli", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_check_config_cli_ok() -> None:
    proc = run_cli(str(CONFIGS / "emulated-2lp-1hp.yaml"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for fragment in (
        "OK",
        "policy    ascendra",
        "uses      pool roles, a slack predictor, prompt prefix hashes, slo classes",
        "lp (role lp, 2 backends)",
        "hp-0",
        "http://127.0.0.1:8103",
        "1000 ms / 150 ms",
        "sched=priority",
    ):
        assert fragment in out
    assert proc.stderr == ""


def test_check_config_summarises_the_predictor_section(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    section = {
        "model_path": "m.json",
        "training_data": {"path": "rows.jsonl", "max_bytes": 1000},
        "retrain": {"interval_s": 600, "min_rows": 50},
    }
    path.write_text(yaml.safe_dump({**BASE, "predictor": section}))
    proc = run_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    for fragment in (
        "predictor model m.json (reload checked every 1s)",
        "training rows rows.jsonl (max 1000 B per file, 4 rotated kept, horizon 32 tokens)",
        "retrain every 600s in a worker process (min 50 rows",
    ):
        assert fragment in proc.stdout
    path.write_text(yaml.safe_dump({**BASE, "predictor": {"model_path": "m.json"}}))
    proc = run_cli(str(path))
    assert "predictor model m.json (reload checked every 1s; unused by round_robin)" in proc.stdout


def test_check_config_accepts_and_validates_a_simulation_block(tmp_path: Path) -> None:
    proc = run_cli(str(CONFIGS / "paper-3xa100.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "simulation network_s=" in proc.stdout
    text = (CONFIGS / "paper-3xa100.yaml").read_text()
    bad = tmp_path / "bad-sim.yaml"
    bad.write_text(text.replace("simulation:", "simulation:\n  network_ms: 1", 1))
    proc = run_cli(str(bad))
    assert proc.returncode == 1
    assert "simulation.network_ms" in proc.stderr


def test_check_config_cli_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pools:\n  - {name: lp, role: lp, backends: [{url: 'ftp://x', engine: vllm, model: m}]}\n"
    )
    proc = run_cli(str(bad))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        f"error: {bad}: pools[0].backends[0].url: expected a http(s) URL, got 'ftp://x'"
    )


def test_check_config_in_process_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value + "-very-secret")
    args = config_cli_args(str(CONFIGS / "example.yaml"))
    assert config_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "very-secret" not in out
    assert "policy    least_loaded (max_scrape_age_s=5.0)" in out
    assert "class interactive" in out and "admin key set" in out


def config_cli_args(path: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config_cli.add_arguments(parser)
    return parser.parse_args([path])


# -- the generic loader on its own -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inner:
    level: typing.Literal[1, 2, "x"] = 1


@dataclasses.dataclass(frozen=True)
class Outer:
    either: int | str = 0
    inners: tuple[Inner, ...] = ()
    table: dict[str, float] = dataclasses.field(default_factory=dict)
    ratio: float = dataclasses.field(default=0.5, metadata={"ge": 0, "lt": 1})

    def validate(self) -> None:
        if self.either == "bad":
            raise ValueError("either must not be 'bad'")


LOADER_CASES = [
    ({"either": 3}, Outer(either=3)),
    ({"either": "s"}, Outer(either="s")),
    ({"inners": [{"level": 2}, {"level": "x"}, {}]}, Outer(inners=(Inner(2), Inner("x"), Inner()))),
    ({"table": {"a": 1, "b": 2.5}}, Outer(table={"a": 1.0, "b": 2.5})),
    ({"ratio": 0}, Outer(ratio=0.0)),
]


@pytest.mark.parametrize(("data", "expected"), LOADER_CASES)
def test_loader_builds(data: dict[str, Any], expected: Outer) -> None:
    assert configload.load(Outer, data) == expected


LOADER_ERRORS = [
    ({"either": 1.5}, "either", "expected an integer, got 1.5 or expected a string"),
    ({"either": "bad"}, "", "either must not be 'bad'"),
    ({"inners": [{}, {"level": True}]}, "inners[1].level", "expected one of 1, 2, 'x', got True"),
    ({"inners": [{"level": 1.0}]}, "inners[0].level", "expected one of"),
    ({"table": {"a": "1"}}, "table.a", "expected a number"),
    ({"table": {1: 1.0}}, "table", "keys must be strings"),
    ({"ratio": 1}, "ratio", "must be less than 1"),
    ({"ratio": -0.1}, "ratio", "must be at least 0"),
    ({"ratio": None}, "ratio", "expected a number, got null"),
    ({"x.y": 1}, "['x.y']", "unknown key"),
]


@pytest.mark.parametrize(("data", "path", "fragment"), LOADER_ERRORS)
def test_loader_errors(data: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        configload.load(Outer, data, "")
    assert (info.value.path, fragment in info.value.message) == (path, True), info.value


def test_loader_refuses_unsupported_types() -> None:
    with pytest.raises(TypeError, match="unsupported type"):
        configload.load(list[int], [1])
