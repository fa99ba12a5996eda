"""Unit tests of the launcher's pure parts: the plan, the SDK arguments, the dry-run output.

No Docker here (not marked ``docker``): the dry-run test points DOCKER_HOST at a socket that
does not exist to prove the plan never touches the engine.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascendra_proxy.config import (
    BackendConfig,
    EngineSettings,
    PoolConfig,
    ProxyConfig,
    parse_config,
)
from ascendra_proxy.launcher import cli
from ascendra_proxy.launcher.driver import create_kwargs
from ascendra_proxy.launcher.plan import (
    DEFAULT_VLLM_IMAGE,
    HF_CACHE,
    LaunchError,
    LaunchOptions,
    Mount,
    plan_launch,
)
from ascendra_proxy.launcher.render import docker_run_line, render_plan

PRIORITY = {"profile": "a100-llama3-8b", "scheduling_policy": "priority"}


def make_config(**overrides: Any) -> ProxyConfig:
    lp = [
        {"url": "http://127.0.0.1:8101", "engine": "vllm", "model": "m", "gpu_ids": [0],
         "engine_settings": PRIORITY},
        {"url": "http://localhost:8102", "engine": "sglang", "model": "m", "gpu_ids": [1, 2],
         "engine_settings": {**PRIORITY, "enable_prefix_caching": False, "max_num_seqs": 64}},
        {"url": "http://10.0.0.9:9000", "engine": "vllm", "model": "m"},  # external
    ]  # fmt: skip
    hp = [
        {"url": "http://127.0.0.1:8103", "engine": "vllm", "model": "m", "gpu_ids": [3],
         "engine_settings": {"num_gpu_blocks": 500, "max_model_len": 4096}},
    ]  # fmt: skip
    data = {
        "pools": [
            {"name": "lp", "role": "lp", "backends": lp},
            {"name": "hp", "role": "hp", "backends": hp},
        ],
        **overrides,
    }
    return parse_config(data)


def flag(command: tuple[str, ...], name: str) -> str:
    return command[command.index(name) + 1]


OPTS = LaunchOptions(
    run_id="r1",
    model_cache="/models",
    weights={"m": "org/model-8b"},
    env={"HF_TOKEN": "hf_secret", "VLLM_LOGGING_LEVEL": "DEBUG"},
)


def test_one_container_per_gpu_backend_published_at_its_url_port() -> None:
    plan = plan_launch(make_config(), OPTS)
    by = {s.backend: s for s in plan.containers}
    assert list(by) == ["lp-0", "lp-1", "hp-0"]
    assert plan.external == (("lp-2", "http://10.0.0.9:9000"),)
    assert [by[b].gpu_ids for b in by] == [(0,), (1, 2), (3,)]
    assert by["lp-1"].device_ids == ["1", "2"]
    assert [(s.host_ip, s.host_port, s.container_port) for s in plan.containers] == [
        ("127.0.0.1", 8101, 8000),
        ("127.0.0.1", 8102, 30000),
        ("127.0.0.1", 8103, 8000),
    ]
    assert by["lp-0"].health_url == "http://127.0.0.1:8101/health"
    assert by["hp-0"].name == "ascendra-hp-0-r1"
    labels = dict(by["lp-1"].labels)
    assert labels["io.ascendra-proxy.run"] == "r1"
    assert labels["io.ascendra-proxy.gpus"] == "1,2"
    assert labels["io.ascendra-proxy.launcher"] == "1"


def test_vllm_command_follows_engine_settings() -> None:
    by = {s.backend: s for s in plan_launch(make_config(), OPTS).containers}
    lp0, hp0 = by["lp-0"], by["hp-0"]
    assert lp0.image == DEFAULT_VLLM_IMAGE
    assert lp0.entrypoint is None  # the image's own `vllm serve`
    assert flag(lp0.command, "--model") == "org/model-8b"  # --weights maps the served name
    assert flag(lp0.command, "--served-model-name") == "m"
    assert flag(lp0.command, "--scheduling-policy") == "priority"
    assert "--enable-prefix-caching" in lp0.command
    assert "--tensor-parallel-size" not in lp0.command
    assert flag(hp0.command, "--scheduling-policy") == "fcfs"
    assert flag(hp0.command, "--num-gpu-blocks-override") == "500"
    assert flag(hp0.command, "--max-model-len") == "4096"
    assert lp0.mounts == (Mount("/models", HF_CACHE),)
    assert lp0.ipc_host
    assert dict(lp0.environment) == {"HF_TOKEN": "hf_secret", "VLLM_LOGGING_LEVEL": "DEBUG"}


def test_sglang_command_gets_priority_flags_tp_and_no_radix_cache() -> None:
    lp1 = {s.backend: s for s in plan_launch(make_config(), OPTS).containers}["lp-1"]
    assert (lp1.entrypoint, lp1.command[:2]) == ("python3", ("-m", "sglang.launch_server"))
    assert flag(lp1.command, "--model-path") == "org/model-8b"
    assert flag(lp1.command, "--port") == "30000"
    assert flag(lp1.command, "--tp-size") == "2"
    assert flag(lp1.command, "--max-running-requests") == "64"
    for needed in (
        "--enable-metrics",
        "--enable-priority-scheduling",
        "--disable-radix-cache",
    ):
        assert needed in lp1.command
    # SGLang keeps its default order (higher first), which is what the proxy sends it.
    assert "--schedule-low-priority-values-first" not in lp1.command


def test_emulate_runs_the_emulator_with_the_same_settings_and_gpus() -> None:
    opts = replace(OPTS, emulate=True, emulator_image="img:emu", model_cache=None)
    by = {s.backend: s for s in plan_launch(make_config(), opts).containers}
    lp1 = by["lp-1"]
    assert lp1.image == "img:emu" and lp1.emulated and lp1.entrypoint is None
    assert lp1.command[:3] == ("emulate", "--flavor", "sglang")
    assert flag(lp1.command, "--port") == "8000" and lp1.container_port == 8000
    assert flag(lp1.command, "--profile") == "a100-llama3-8b"
    assert flag(lp1.command, "--max-num-seqs") == "64"
    assert "--no-prefix-caching" in lp1.command
    assert "--schedule-low-priority-values-first" not in lp1.command
    assert lp1.gpu_ids == (1, 2)  # device requests are still planned
    assert not lp1.mounts and not lp1.ipc_host
    assert flag(by["hp-0"].command, "--num-gpu-blocks") == "500"
    assert "--profile" not in by["hp-0"].command  # no profile: the emulator's default


def test_a_gpu_given_twice_is_refused() -> None:
    """Config validation rejects this; the plan checks again for configs built in code."""
    with pytest.raises(Exception, match="duplicate GPU id 0"):
        make_config(
            pools=[
                {"name": "lp", "role": "lp", "backends": [
                    {"url": "http://127.0.0.1:1", "engine": "vllm", "model": "m", "gpu_ids": [0]},
                    {"url": "http://127.0.0.1:2", "engine": "vllm", "model": "m", "gpu_ids": [0]},
                ]},
            ]
        )  # fmt: skip
    backends = tuple(
        BackendConfig(url=f"http://127.0.0.1:{p}", engine="vllm", model="m", name=n, gpu_ids=(0,))
        for p, n in ((1, "a"), (2, "b"))
    )
    cfg = ProxyConfig(pools=(PoolConfig(name="lp", role="lp", backends=backends),))
    with pytest.raises(LaunchError, match=r"GPU 0 is given to two backends \(a and b\)"):
        plan_launch(cfg, OPTS)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.1.2.3:8001", "is not on this machine"),
        ("http://127.0.0.1", "explicit port"),
        ("https://127.0.0.1:8443", "must be http://127.0.0.1:PORT"),
        ("http://127.0.0.1:8001/prefix", "no path"),
    ],
)
def test_urls_the_launcher_cannot_serve_are_refused(url: str, message: str) -> None:
    backend = BackendConfig(url=url, engine="vllm", model="m", name="x", gpu_ids=(0,))
    cfg = ProxyConfig(pools=(PoolConfig(name="lp", role="lp", backends=(backend,)),))
    with pytest.raises(LaunchError, match=message):
        plan_launch(cfg, OPTS)


def test_nothing_to_launch_says_so() -> None:
    backend = BackendConfig(url="http://127.0.0.1:1", engine="vllm", model="m", name="x")
    cfg = ProxyConfig(pools=(PoolConfig(name="lp", role="lp", backends=(backend,)),))
    with pytest.raises(LaunchError, match="no backend in the config names gpu_ids"):
        plan_launch(cfg, OPTS)


def test_create_kwargs_claim_exactly_the_backends_gpus() -> None:
    lp1 = plan_launch(make_config(), OPTS).containers[1]
    kwargs = create_kwargs(lp1)
    [request] = kwargs["device_requests"]
    assert dict(request) == {
        "Driver": "nvidia",
        "Count": 0,
        "DeviceIDs": ["1", "2"],
        "Capabilities": [["gpu"]],
        "Options": {},
    }
    assert kwargs["ports"] == {"30000/tcp": ("127.0.0.1", 8102)}
    assert kwargs["entrypoint"] == ["python3"]
    assert kwargs["ipc_mode"] == "host"
    assert kwargs["init"] is True
    assert kwargs["volumes"] == {"/models": {"bind": HF_CACHE, "mode": "rw"}}
    assert kwargs["labels"]["io.ascendra-proxy.backend"] == "lp-1"
    assert "device_requests" not in create_kwargs(lp1, gpu_requests=False)


def test_render_shows_gpus_ports_and_docker_run_but_never_secrets() -> None:
    plan = plan_launch(make_config(), OPTS)
    text = render_plan(plan)
    assert text.startswith("launch r1: would start 3 engine containers")
    assert "device_ids=['1', '2']" in text
    assert "127.0.0.1:8102 -> 30000/tcp" in text
    assert "HF_TOKEN=<hidden>" in text and "VLLM_LOGGING_LEVEL=DEBUG" in text
    assert "hf_secret" not in text
    assert "lp-2  http://10.0.0.9:9000" in text  # external backend listed, not started
    argv = shlex.split(docker_run_line(plan.containers[1]))
    assert argv[argv.index("--gpus") + 1] == '"device=1,2"'
    assert argv[argv.index("-p") + 1] == "127.0.0.1:8102:30000"
    assert "HF_TOKEN" in argv and "VLLM_LOGGING_LEVEL=DEBUG" in argv
    assert argv[argv.index("--entrypoint") + 1] == "python3"


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def one_backend_config(tmp_path: Path, gpu: int) -> Path:
    backend = {"url": "http://127.0.0.1:8101", "engine": "vllm", "model": "m", "gpu_ids": [gpu]}
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"pools": [{"name": "lp", "role": "lp", "backends": [backend]}]})
    )
    return config


def test_dry_run_prints_the_plan_without_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    config = one_backend_config(tmp_path, gpu=4)
    args = parse_args(
        "--config", str(config), "--dry-run", "--run-id", "dry", "--model-cache", "none"
    )
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "launch dry: would start 1 engine container," in out
    assert "gpus       4" in out
    assert "HF_TOKEN=<hidden>" in out and "hf_from_env" not in out
    assert "mount" not in out


def test_without_docker_the_error_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", sock)
    config = one_backend_config(tmp_path, gpu=0)
    assert cli.run(parse_args("--config", str(config))) == 1
    err = capsys.readouterr().err
    assert f"cannot reach a Docker engine at {sock}" in err
    assert "--dry-run" in err


def test_config_errors_exit_2_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "pools:\n- name: lp\n  role: lp\n  backends:\n"
        "  - {url: 'http://127.0.0.1:1', engine: vllm, model: m, gpu_ids: [2]}\n"
        "  - {url: 'http://127.0.0.1:2', engine: vllm, model: m, gpu_ids: [2]}\n"
    )
    assert cli.run(parse_args("--config", str(config), "--dry-run")) == 2
    assert "pools[0].backends[1].gpu_ids[0]: duplicate GPU id 2" in capsys.readouterr().err


def test_bad_pairs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args("--config", "unused.yaml", "--weights", "no-equals-sign")
    assert cli.run(args) == 1
    assert "--weights expects KEY=VALUE" in capsys.readouterr().err


def test_engine_settings_defaults_are_what_the_commands_use() -> None:
    s = EngineSettings()
    lp0 = plan_launch(make_config(), OPTS).containers[0]
    assert flag(lp0.command, "--max-num-batched-tokens") == str(s.max_num_batched_tokens)
    assert flag(lp0.command, "--block-size") == str(s.block_size)
