"""`docker compose config` for every profile, and the compose proxy configs.

Needs only the compose CLI (no engine): compose validates the file against the Compose
spec, resolves profiles and interpolates the environment; the tests then check what each
profile really starts, with the values that matter (GPU ids from the environment, pinned
engine images, priority scheduling, health-gated start order, loopback-only publishing).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml
from docker_helpers import REPO, compose_env

from ascendra_proxy.config import parse_config

pytestmark = pytest.mark.docker

EMULATED = {"engine-lp0", "engine-lp1", "engine-hp0", "proxy"}
PROFILES = {
    "": EMULATED,
    "demo": EMULATED | {"loadgen"},
    "gpu": EMULATED | {"vllm-lp0", "vllm-lp1", "vllm-hp0", "proxy-gpu"},
    "sglang": EMULATED | {"sglang-lp0", "sglang-lp1", "sglang-hp0", "proxy-sglang"},
    "scale": EMULATED | {"redis", "scheduler-a", "scheduler-b", "proxy-scale"},
}


def config(compose: list[str], profile: str, **env: str) -> dict[str, Any]:
    argv = [*compose, "-p", "ascendra-config-test"]
    if profile:
        argv += ["--profile", profile]
    done = subprocess.run(
        [*argv, "config", "--format", "json"],
        env=compose_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_validates_and_starts_what_it_promises(
    compose: list[str], profile: str
) -> None:
    services = config(compose, profile)["services"]
    assert set(services) == PROFILES[profile]


def test_default_profile_is_health_gated_and_published_on_loopback(compose: list[str]) -> None:
    services = config(compose, "", ASCENDRA_PORT="18123")["services"]
    proxy = services["proxy"]
    assert proxy["depends_on"] == {
        name: {"condition": "service_healthy", "required": True}
        for name in ("engine-lp0", "engine-lp1", "engine-hp0")
    }
    [port] = proxy["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "18123", 8000)
    assert proxy["environment"]["ASCENDRA_HEALTH_URL"].endswith("/ready")
    for name in ("engine-lp0", "engine-lp1", "engine-hp0"):
        command = services[name]["command"]
        assert command[0] == "emulate"
        assert _flag(command, "--profile") == "a100-llama3-8b"
        assert _flag(command, "--scheduling-policy") == "priority"
        assert _flag(command, "--flavor") == "vllm"
        assert "ports" not in services[name]  # engines stay on the compose network
        assert services[name]["healthcheck"]["test"][0] == "CMD"


@pytest.mark.parametrize("profile", ["", "gpu", "sglang", "scale"])
def test_every_proxy_gets_the_admin_key_and_the_image_is_built(
    compose: list[str], profile: str
) -> None:
    proxy = "proxy" if not profile else f"proxy-{profile}"
    default = config(compose, profile)["services"]
    assert default[proxy]["environment"]["ASCENDRA_ADMIN_KEY"] == "ascendra-testbed-admin"
    given = config(compose, profile, ASCENDRA_ADMIN_KEY="mine")["services"]
    assert given[proxy]["environment"]["ASCENDRA_ADMIN_KEY"] == "mine"
    ours = [s for s in default.values() if "build" in s]
    assert ours and all(s["pull_policy"] == "build" for s in ours)


def test_scale_profile_runs_workers_behind_a_scheduler_pair(compose: list[str]) -> None:
    services = config(compose, "scale", ASCENDRA_WORKERS="3")["services"]
    proxy = services["proxy-scale"]["command"]
    assert _flag(proxy, "--workers") == "3"
    schedulers = [proxy[i + 1] for i, a in enumerate(proxy) if a == "--scheduler"]
    assert schedulers == ["ws://scheduler-a:9200", "ws://scheduler-b:9200"]
    names = set()
    for name in ("scheduler-a", "scheduler-b"):
        command = services[name]["command"]
        assert command[0] == "scheduler" and _flag(command, "--elector") == "redis"
        assert _flag(command, "--redis") == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "ports" not in services[name]  # only the workers are published
        names.add(_flag(command, "--name"))
    assert names == {"scheduler-a", "scheduler-b"}
    deps = services["proxy-scale"]["depends_on"]
    assert {"scheduler-a", "scheduler-b", "engine-lp0"} <= set(deps)


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _device_ids(service: dict[str, Any]) -> list[str]:
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    return list(device["device_ids"])


@pytest.mark.parametrize(
    ("profile", "prefix", "image"),
    [("gpu", "vllm", "vllm/vllm-openai:v"), ("sglang", "sglang", "lmsysorg/sglang:v")],
)
def test_real_engine_profiles_take_gpus_and_model_from_the_environment(
    compose: list[str], profile: str, prefix: str, image: str
) -> None:
    env = {
        "ASCENDRA_LP0_GPU": "5",
        "ASCENDRA_LP1_GPU": "3",
        "ASCENDRA_HP0_GPU": "7",
        "ASCENDRA_MODEL": "org/some-model",
        "ASCENDRA_SERVED_MODEL_NAME": "served-x",
        "HF_TOKEN": "hf_test_value",
    }
    services = config(compose, profile, **env)["services"]
    volumes = set()
    for suffix, gpu in (("lp0", "5"), ("lp1", "3"), ("hp0", "7")):
        engine = services[f"{prefix}-{suffix}"]
        assert _device_ids(engine) == [gpu]
        assert engine["image"].startswith(image)  # pinned release, never :latest
        assert engine["environment"]["HF_TOKEN"] == "hf_test_value"
        command = engine["command"]
        assert _flag(command, "--served-model-name") == "served-x"
        model_flag = "--model" if prefix == "vllm" else "--model-path"
        assert _flag(command, model_flag) == "org/some-model"
        if prefix == "vllm":
            assert _flag(command, "--scheduling-policy") == "priority"
            assert "--enable-prefix-caching" in command
        else:
            for flag in ("--enable-metrics", "--enable-priority-scheduling"):
                assert flag in command
            # SGLang's default order (higher first) is what the proxy's adapter sends.
            assert "--schedule-low-priority-values-first" not in command
        volumes |= {(v["source"], v["target"]) for v in engine["volumes"]}
    assert volumes == {("model-cache", "/root/.cache/huggingface")}  # one shared cache
    proxy = services[f"proxy-{profile}"]
    assert proxy["environment"]["ASCENDRA_SERVED_MODEL_NAME"] == "served-x"
    assert set(proxy["depends_on"]) == {f"{prefix}-lp0", f"{prefix}-lp1", f"{prefix}-hp0"}
    assert {d["condition"] for d in proxy["depends_on"].values()} == {"service_healthy"}


def test_gpu_defaults_are_0_1_2(compose: list[str]) -> None:
    services = config(compose, "gpu")["services"]
    ids = [_device_ids(services[f"vllm-{s}"]) for s in ("lp0", "lp1", "hp0")]
    assert ids == [["0"], ["1"], ["2"]]


def test_demo_runs_loadgen_against_the_proxy(compose: list[str]) -> None:
    loadgen = config(compose, "demo")["services"]["loadgen"]
    assert loadgen["entrypoint"] == ["loadgen"]
    assert _flag(loadgen["command"], "--url") == "http://proxy:8000"
    assert _flag(loadgen["command"], "--workload") == "azure-conv"
    assert loadgen["depends_on"]["proxy"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["compose.yaml", "compose-gpu.yaml", "compose-sglang.yaml"])
def test_compose_proxy_configs_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the proxy container reads: the real-engine files after the same expansion."""
    monkeypatch.setenv("ASCENDRA_SERVED_MODEL_NAME", "served-x")
    monkeypatch.setenv("ASCENDRA_ADMIN_KEY", "admin-x")
    text = os.path.expandvars((REPO / "configs" / name).read_text())
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.auth.admin_key == "admin-x"
    assert cfg.listen.host == "0.0.0.0"
    assert {p.role for p in cfg.pools} == {"lp", "hp"}
    assert len(cfg.backends()) == 3
    expected = "llama3-8b" if name == "compose.yaml" else "served-x"
    assert cfg.models() == {expected}
    assert {b.engine_settings.scheduling_policy for _, b in cfg.backends()} == {"priority"}
