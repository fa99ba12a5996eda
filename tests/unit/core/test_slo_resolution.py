"""SLO resolution precedence: headers > class > model > default, per component."""

from __future__ import annotations

import math

import pytest

from ascendra_proxy.core.slo import SLO, SLOError, SLOTable, parse_slo_header_ms, resolve_slo

TABLE = SLOTable(
    default=SLO(1.0, 0.15),
    models={"big": SLO(2.0, 0.2)},
    classes={"interactive": SLO(0.5, 0.05)},
)


@pytest.mark.parametrize(
    ("model", "cls", "ttft_ms", "tpot_ms", "expected"),
    [
        pytest.param("small", None, None, None, SLO(1.0, 0.15), id="default"),
        pytest.param("big", None, None, None, SLO(2.0, 0.2), id="model-over-default"),
        pytest.param("big", "interactive", None, None, SLO(0.5, 0.05), id="class-over-model"),
        pytest.param("small", "interactive", None, None, SLO(0.5, 0.05), id="class-over-default"),
        pytest.param("big", "interactive", 300.0, 40.0, SLO(0.3, 0.04), id="headers-over-class"),
        pytest.param("big", None, 300.0, None, SLO(0.3, 0.2), id="ttft-header-only"),
        pytest.param("big", None, None, 40.0, SLO(2.0, 0.04), id="tpot-header-only"),
        pytest.param("small", None, 250.0, 25.0, SLO(0.25, 0.025), id="headers-over-default"),
    ],
)
def test_precedence(
    model: str, cls: str | None, ttft_ms: float | None, tpot_ms: float | None, expected: SLO
) -> None:
    got = resolve_slo(TABLE, model, cls, ttft_ms, tpot_ms)
    assert got.ttft_s == pytest.approx(expected.ttft_s)
    assert got.tbt_s == pytest.approx(expected.tbt_s)


@pytest.mark.parametrize(
    ("cls", "ttft_ms", "tpot_ms", "match"),
    [
        pytest.param("nope", None, None, "unknown SLO class 'nope'", id="unknown-class"),
        pytest.param(None, 0.0, None, "x-slo-ttft-ms", id="zero-ttft"),
        pytest.param(None, None, -5.0, "x-slo-tpot-ms", id="negative-tpot"),
        pytest.param(None, math.nan, None, "x-slo-ttft-ms", id="nan"),
        pytest.param(None, math.inf, None, "x-slo-ttft-ms", id="inf"),
    ],
)
def test_invalid_requests_raise(
    cls: str | None, ttft_ms: float | None, tpot_ms: float | None, match: str
) -> None:
    with pytest.raises(SLOError, match=match):
        resolve_slo(TABLE, "big", cls, ttft_ms, tpot_ms)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("250", 250.0), (" 12.5 ", 12.5), ("1e3", 1000.0)],
)
def test_parse_header(value: str | None, expected: float | None) -> None:
    assert parse_slo_header_ms("x-slo-ttft-ms", value) == expected


@pytest.mark.parametrize("value", ["", "abc", "0", "-1", "nan", "inf"])
def test_parse_header_rejects(value: str) -> None:
    with pytest.raises(SLOError, match="x-slo-ttft-ms"):
        parse_slo_header_ms("x-slo-ttft-ms", value)


@pytest.mark.parametrize(("ttft", "tbt"), [(0.0, 0.1), (1.0, -0.1), (math.inf, 0.1)])
def test_slo_values_must_be_positive_and_finite(ttft: float, tbt: float) -> None:
    with pytest.raises(ValueError):
        SLO(ttft, tbt)


def test_table_is_read_only_copy() -> None:
    models = {"a": SLO(1.0, 0.1)}
    table = SLOTable(SLO(1.0, 0.1), models=models)
    models["b"] = SLO(2.0, 0.2)
    assert "b" not in table.models
    with pytest.raises(TypeError):
        table.models["c"] = SLO(1.0, 0.1)  # type: ignore[index]
