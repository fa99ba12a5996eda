"""Request-body parsing shared by both flavours, with FastAPI/pydantic-shaped error messages.

Theory of operation: :func:`read_json` turns the body into a dict (400 on invalid JSON or a
non-object, like FastAPI's validation error); :class:`Fields` reads typed fields with
pydantic-like leniency (integral floats count as ints) and raises :class:`APIError` worded like
pydantic's ``int_type`` / ``bool_type`` / ``missing`` errors.  :class:`GenParams` is the
flavour-neutral result that the serving code turns into an engine request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ascendra_proxy.emulator.errors import APIError, Problem, ValidationProblem, validation_error


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _json_problem(raw) from None
    if not isinstance(data, dict):
        raise validation_error(
            "model_attributes_type",
            "",
            "Input should be a valid dictionary or object to extract fields from",
            data,
        )
    return data


def _json_problem(raw: bytes) -> ValidationProblem:
    """FastAPI's error for a body that is not JSON: located at the offending character, with
    the message of Python's own decoder (the one FastAPI uses)."""
    try:
        json.loads(raw)
        msg, pos = "Invalid JSON", 0  # orjson is stricter than json (e.g. lone surrogates)
    except ValueError as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
    problem = Problem("json_invalid", str(pos), "JSON decode error", {}, {"error": msg})
    return ValidationProblem([problem])


@dataclass(slots=True)
class GenParams:
    """What a generation request asks for, independent of the wire flavour."""

    prompt_ids: list[int]
    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    seed: int | None = None
    priority: int = 0


class Fields:
    """Typed, validated access to a JSON object's fields."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def required(self, key: str) -> Any:
        if key not in self.data:
            raise validation_error("missing", key, "Field required", self.data)
        return self.data[key]

    def get_int(self, key: str, default: int, *, minimum: int | None = None) -> int:
        value = self.get_opt_int(key, minimum=minimum)
        return default if value is None else value

    def get_opt_int(self, key: str, *, minimum: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        value = lax_int(key, value)
        if minimum is not None and value < minimum:
            raise APIError(f"{key} must be at least {minimum}, got {value}.", 400, param=key)
        return value

    def get_float(self, key: str, default: float | None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise validation_error("float_type", key, "Input should be a valid number", value)
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        return lax_bool(key, value)

    def get_str(self, key: str, default: str | None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise validation_error("string_type", key, "Input should be a valid string", value)
        return value

    def get_str_list(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings (the OpenAI ``stop`` field)."""
        value = self.data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise validation_error("list_type", key, "Input should be a valid list", value)

    def get_int_list(self, key: str) -> tuple[int, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if isinstance(value, list) and all(is_int(v) for v in value):
            return tuple(value)
        raise validation_error("list_type", key, "Input should be a valid list", value)

    def get_dict(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise validation_error("dict_type", key, "Input should be a valid dictionary", value)
        return value


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def lax_int(key: str, value: Any) -> int:
    """pydantic's lax int: integral floats and integer strings count, fractions do not."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        msg = "Input should be a valid integer, got a number with a fractional part"
        raise validation_error("int_from_float", key, msg, value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            raise validation_error("int_parsing", key, msg, value) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation_error("int_type", key, "Input should be a valid integer", value)
    return value


def lax_bool(key: str, value: Any) -> bool:
    """pydantic's lax bool: "yes"/"no", "true"/"false", "on"/"off", 1/0 ... count."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        msg = "Input should be a valid boolean, unable to interpret input"
        raise validation_error("bool_parsing", key, msg, value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise validation_error("bool_type", key, "Input should be a valid boolean", value)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(is_int(v) for v in value)
