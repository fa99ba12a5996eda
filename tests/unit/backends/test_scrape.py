"""Reading load gauges from vLLM (current and legacy names) and SGLang metrics pages."""

from __future__ import annotations

from ascendra_proxy.backends.scrape import SGLANG_NAMES, VLLM_NAMES, EngineLoad, parse_load

VLLM_CURRENT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 16.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0078
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:generation_tokens_total{engine="0",model_name="tiny"} 12345.0
"""

VLLM_LEGACY_DP2 = """\
vllm:num_requests_running{engine="0",model_name="llama"} 4
vllm:num_requests_running{engine="1",model_name="llama"} 5
vllm:num_requests_waiting{engine="0",model_name="llama"} 1
vllm:num_requests_waiting{engine="1",model_name="llama"} 0
vllm:gpu_cache_usage_perc{engine="0",model_name="llama"} 0.25
vllm:gpu_cache_usage_perc{engine="1",model_name="llama"} 0.5 1700000000000
"""

SGLANG_TP2 = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{engine_type="unified",model_name="m",pp_rank="0",tp_rank="0"} 7.0
sglang:num_running_reqs{engine_type="unified",model_name="m",pp_rank="0",tp_rank="1"} 7.0
sglang:num_queue_reqs{engine_type="unified",model_name="m",pp_rank="0",tp_rank="0"} 2.0
sglang:num_queue_reqs{engine_type="unified",model_name="m",pp_rank="0",tp_rank="1"} 2.0
sglang:token_usage{engine_type="unified",model_name="m",pp_rank="0",tp_rank="0"} 0.42
sglang:token_usage{engine_type="unified",model_name="m",pp_rank="0",tp_rank="1"} 0.42
sglang:cache_hit_rate{engine_type="unified",model_name="m",pp_rank="0",tp_rank="0"} 0.1
"""


def test_vllm_current_names() -> None:
    assert parse_load(VLLM_CURRENT, VLLM_NAMES) == EngineLoad(16, 3, 0.0078)


def test_vllm_legacy_kv_name_and_data_parallel_series() -> None:
    assert parse_load(VLLM_LEGACY_DP2, VLLM_NAMES) == EngineLoad(9, 1, 0.5)


def test_current_kv_name_wins_over_legacy() -> None:
    text = "vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1\n"
    assert parse_load(text, VLLM_NAMES).kv_usage == 0.1


def test_sglang_reads_tp_rank_zero_only() -> None:
    assert parse_load(SGLANG_TP2, SGLANG_NAMES) == EngineLoad(7, 2, 0.42)


def test_missing_gauges_are_none_and_garbage_is_ignored() -> None:
    text = "vllm:num_requests_running{broken 3\nvllm:num_requests_waiting NaN\nnonsense\n"
    assert parse_load(text, VLLM_NAMES) == EngineLoad(None, None, None)
    assert parse_load("", SGLANG_NAMES) == EngineLoad()


def test_prefix_names_do_not_collide() -> None:
    text = 'vllm:num_requests_waiting_by_reason{reason="capacity"} 9\n'
    assert parse_load(text, VLLM_NAMES).waiting is None


def test_kv_usage_is_clamped() -> None:
    assert parse_load("sglang:token_usage 1.7\n", SGLANG_NAMES).kv_usage == 1.0
