"""A small strict loader from parsed YAML/JSON values into typed frozen dataclasses.

Theory of operation.  :func:`load` walks the target type (from ``typing.get_type_hints``)
and the data side by side, building the value bottom-up and failing on the first problem
with a :class:`ConfigError` whose path names the offending place, e.g.
``pools[1].backends[0].url: expected a http(s) URL, got 'ftp://x'``.

:func:`read_yaml` parses a file with YAML's safe loader, refusing duplicate mapping keys
(which plain YAML silently resolves to the last one) and reporting syntax errors with
their line.

Supported types: ``str``, ``int`` (a bool is not an int), ``float`` (ints accepted, bools
not), ``bool``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]`` (from a list),
``dict[str, X]`` (from a mapping) and dataclasses (from a mapping).  For a dataclass,
unknown keys and missing required fields are errors; absent optional fields take their
defaults.  Two hooks, both optional, neither needing an import of this module:

* field metadata ``gt`` / ``ge`` / ``lt`` / ``le`` bound a number (``None`` is not checked);
* a ``validate(self) -> None`` method runs after construction; a ``ValueError`` it raises
  is reported at the dataclass's path (a :class:`ConfigError` is reported below it).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

__all__ = ["ConfigError", "describe", "join_path", "load", "read_yaml"]

T = TypeVar("T")

_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


class ConfigError(ValueError):
    """A config value is wrong; ``path`` locates it (empty for the whole document)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def join_path(path: str, key: str | int) -> str:
    """``a.b`` + ``c`` -> ``a.b.c``; + ``0`` -> ``a.b[0]``; odd keys are quoted in brackets."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _BARE_KEY.match(key):
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """A short description of a bad value for error messages."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load(tp: Any, data: object, path: str = "") -> Any:
    """Build a value of type ``tp`` from ``data``; raise ConfigError naming ``path``."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return _load_union(tp, data, path)
    if origin is Literal:
        return _load_literal(tp, data, path)
    if origin is tuple:
        return _load_tuple(tp, data, path)
    if origin is dict:
        return _load_dict(tp, data, path)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _load_dataclass(tp, data, path)
    if tp in (str, int, float, bool):
        return _load_scalar(tp, data, path)
    raise TypeError(f"configload: unsupported type {tp!r} at {path or '<root>'}")


def _load_scalar(tp: type, data: object, path: str) -> object:
    if tp is bool:
        if isinstance(data, bool):
            return data
        raise ConfigError(path, f"expected true or false, got {describe(data)}")
    if tp is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise ConfigError(path, f"expected an integer, got {describe(data)}")
    if tp is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            if not math.isfinite(data):
                raise ConfigError(path, f"expected a finite number, got {describe(data)}")
            return float(data)
        raise ConfigError(path, f"expected a number, got {describe(data)}")
    if isinstance(data, str):
        return data
    raise ConfigError(path, f"expected a string, got {describe(data)}")


def _load_union(tp: Any, data: object, path: str) -> object:
    args = get_args(tp)
    if data is None:
        if type(None) in args:
            return None
        raise ConfigError(path, "must not be null")
    members = [a for a in args if a is not type(None)]
    if len(members) == 1:
        return load(members[0], data, path)
    errors: list[str] = []
    for member in members:
        try:
            return load(member, data, path)
        except ConfigError as exc:
            errors.append(exc.message)
    raise ConfigError(path, " or ".join(errors))


def _load_literal(tp: Any, data: object, path: str) -> object:
    allowed = get_args(tp)
    for option in allowed:
        if type(option) is type(data) and option == data:
            return option
    choices = ", ".join(repr(a) for a in allowed)
    raise ConfigError(path, f"expected one of {choices}, got {describe(data)}")


def _load_tuple(tp: Any, data: object, path: str) -> tuple[object, ...]:
    args = get_args(tp)
    if len(args) != 2 or args[1] is not Ellipsis:
        raise TypeError(f"configload: only tuple[X, ...] is supported, got {tp!r}")
    if not isinstance(data, list):
        raise ConfigError(path, f"expected a list, got {describe(data)}")
    return tuple(load(args[0], item, join_path(path, i)) for i, item in enumerate(data))


def _load_dict(tp: Any, data: object, path: str) -> dict[str, object]:
    key_type, value_type = get_args(tp)
    if key_type is not str:
        raise TypeError(f"configload: only dict[str, X] is supported, got {tp!r}")
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {describe(data)}")
    out: dict[str, object] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {describe(key)}")
        out[key] = load(value_type, value, join_path(path, key))
    return out


def _load_dataclass(cls: type[T], data: object, path: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            known = ", ".join(fields) or "none"
            where = join_path(path, key) if isinstance(key, str) else path
            raise ConfigError(where, f"unknown key (allowed: {known})")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for name, f in fields.items():
        sub = join_path(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(sub, "required key is missing")
            continue
        value = load(hints[name], data[name], sub)
        _check_range(f.metadata, value, sub)
        kwargs[name] = value
    return _construct(cls, kwargs, path)


def _construct(cls: type[T], kwargs: dict[str, object], path: str) -> T:
    try:
        obj = cls(**kwargs)
        validate = getattr(obj, "validate", None)
        if validate is not None:
            validate()
    except ConfigError as exc:
        raise ConfigError(_join_relative(path, exc.path), exc.message) from None
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    return obj


def _join_relative(base: str, rel: str) -> str:
    if not base:
        return rel
    if not rel:
        return base
    return base + rel if rel.startswith("[") else f"{base}.{rel}"


_BOUNDS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "gt": (operator.gt, "greater than"),
    "ge": (operator.ge, "at least"),
    "lt": (operator.lt, "less than"),
    "le": (operator.le, "at most"),
}


def _check_range(metadata: Mapping[str, object], value: object, path: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    for key, (ok, words) in _BOUNDS.items():
        bound = metadata.get(key)
        if isinstance(bound, int | float) and not ok(value, bound):
            raise ConfigError(path, f"must be {words} {bound}, got {value!r}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError("", f"line {line}: duplicate key {describe(key)}")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> object:
    """Parse one YAML document; ConfigError (path-less) for I/O, syntax and duplicate keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError("", f"invalid YAML: {where}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}") from None
