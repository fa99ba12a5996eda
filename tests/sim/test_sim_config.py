"""Simulation configs: the proxy YAML plus a strict ``simulation:`` block; policy overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_helpers import config_dict

from ascendra_proxy.configload import ConfigError
from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.policies.ascendra.view import facts_from_info
from ascendra_proxy.sim.setup import (
    SimSettings,
    backend_infos,
    load_sim_config,
    parse_sim_config,
    with_policy,
)
from ascendra_proxy.sim.sweep import policy_variant

REPO = Path(__file__).resolve().parents[2]


def test_simulation_block_is_optional_and_strict() -> None:
    assert parse_sim_config(config_dict()).sim == SimSettings()
    cfg = parse_sim_config(config_dict(sim={"network_s": 0.002, "abort_s": 0.01}))
    assert (cfg.sim.network_s, cfg.sim.abort_s) == (0.002, 0.01)
    with pytest.raises(ConfigError, match=r"simulation\.netwrok_s"):
        parse_sim_config(config_dict(sim={"netwrok_s": 0.002}))
    with pytest.raises(ConfigError, match=r"simulation\.abort_s.*at least 0"):
        parse_sim_config(config_dict(sim={"abort_s": -1}))


def test_every_backend_needs_a_profile() -> None:
    doc = config_dict()
    del doc["pools"][1]["backends"][0]["engine_settings"]["profile"]
    with pytest.raises(ConfigError, match=r"hp-0.*latency profile"):
        parse_sim_config(doc)


def test_baselines_see_every_backend_as_mixed() -> None:
    cfg = parse_sim_config(config_dict({"type": "ascendra"}))
    assert {i.role for i in cfg.proxy.backend_infos()} == {Role.LP, Role.HP}
    rr = with_policy(cfg, "round_robin")
    assert {i.role for i in rr.proxy.backend_infos()} == {Role.MIXED}
    again = with_policy(cfg, "ascendra")
    assert again.proxy.policy == cfg.proxy.policy  # the config's own parameters are kept
    with pytest.raises(ConfigError, match="unknown policy"):
        with_policy(cfg, "fastest")


def test_policy_gets_the_engine_facts() -> None:
    cfg = parse_sim_config(config_dict(max_num_batched_tokens=4096, block_size=32))
    for info in backend_infos(cfg.proxy):
        facts = facts_from_info(info)
        assert facts.profile == "a100-llama3-8b"
        assert facts.max_num_batched_tokens == 4096 and facts.block_size == 32
        assert facts.max_num_seqs == 64


def test_policy_variant_validates_dotted_parameters() -> None:
    cfg = parse_sim_config(config_dict({"type": "ascendra", "tick_ms": 10}))
    v = policy_variant(cfg, "ascendra", {"migration.enabled": False, "offload.rule": "paper"})
    p = v.proxy.policy.params
    assert p.tick_ms == 10 and not p.migration.enabled and p.offload.rule == "paper"
    with pytest.raises(ConfigError, match=r"offload\.rule"):
        policy_variant(cfg, "ascendra", {"offload.rule": "guess"})
    with pytest.raises(ConfigError, match="no such parameter"):
        policy_variant(cfg, "ascendra", {"offload.rules": "paper"})


def test_the_paper_config_loads() -> None:
    cfg = load_sim_config(REPO / "configs" / "paper-3xa100.yaml")
    infos = cfg.proxy.backend_infos()
    assert [i.role for i in infos] == [Role.LP, Role.LP, Role.HP]
    for _, b in cfg.proxy.backends():
        s = b.engine_settings
        assert (s.max_num_batched_tokens, s.max_num_seqs, s.num_gpu_blocks) == (2048, 256, 27000)
