"""Strict conversion of a parsed TOML table into (nested) frozen dataclasses.

Used by :mod:`edge.config`: the dataclass annotations are the schema (Literal,
unions, tuples, lists, enums, nested dataclasses, bool/int/float/str), so a
typo or a wrong type is an error naming the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from edge.errors import ConfigError

T = TypeVar("T")


def _check_range(
    key: str, value: Any, where: str, ranges: Mapping[str, tuple[float, float]]
) -> None:
    """Refuse a non-finite float, or a number outside ``ranges[key]``: one line, key and range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high = ranges.get(key, (-math.inf, math.inf))
    allowed = f"{low!r}..{high!r}" if key in ranges else "a finite number"
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{where}: key '{key}' = {value!r} is out of range: allowed {allowed}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(
    value: Any, tp: Any, key: str, where: str, ranges: Mapping[str, tuple[float, float]]
) -> Any:
    """Check and convert one TOML value to the annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"{where}: key '{key}' must be {expected}, got {type(value).__name__} {value!r}",
            "fix the value in the configuration file",
        )

    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None and len(non_none) < len(args):
            return None
        for a in non_none:
            try:
                return _convert(value, a, key, where, ranges)
            except ConfigError:
                continue
        raise bad(" or ".join(_type_name(a) for a in non_none))
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise bad("a list")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _convert(v, args[0], f"{key}[{i}]", where, ranges) for i, v in enumerate(value)
            )
        if origin is tuple:
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} values")
            return tuple(
                _convert(v, a, f"{key}[{i}]", where, ranges)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        return [_convert(v, args[0], f"{key}[{i}]", where, ranges) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad("a table")
        return build_dataclass(tp, value, key, where, None, ranges)  # type: ignore[arg-type]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise bad("one of " + ", ".join(repr(m.value) for m in tp)) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise ConfigError(f"{where}: key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


def build_dataclass(
    cls: type[T],
    data: dict[str, Any],
    prefix: str,
    where: str,
    origins: dict[str, str] | None,
    ranges: Mapping[str, tuple[float, float]],
) -> T:
    """``cls`` built from a parsed TOML table, strictly: an unknown key, a wrong type or a
    number outside ``ranges`` (by dotted key; floats always finite) is a ConfigError naming
    the key and ``where``. ``origins`` (when given) records ``where`` or ``default`` for
    every leaf key, nested sections included."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(
                f"{where}: unknown key '{full}'",
                "valid keys here are " + ", ".join(sorted(names)),
            )
    kwargs = {}
    for name in names:
        full = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        nested = dataclasses.is_dataclass(tp)
        if nested and origins is not None:
            # Recurse even when absent, so that every leaf records its origin.
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{where}: '{full}' must be a table ([{full}])")
            kwargs[name] = build_dataclass(tp, section, full, where, origins, ranges)
        elif name in data:
            kwargs[name] = _convert(data[name], tp, full, where, ranges)
            _check_range(full, kwargs[name], where, ranges)
            if origins is not None:
                origins[full] = where
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: section '{prefix or 'top level'}' is invalid: {exc}") from None
    if origins is not None:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            full = f"{prefix}.{f.name}" if prefix else f.name
            if not dataclasses.is_dataclass(hints[f.name]):
                origins.setdefault(full, "default")
    return obj
