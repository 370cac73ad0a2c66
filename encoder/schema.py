"""Config checking: unknown keys and wrong types fail in one line that names the key.

`build(SomeDataclass, values, "model")` turns a plain dict (a Hydra node, a checkpoint's
hyperparameters) into the dataclass, recursing into nested dataclasses; `check_call(fn, values,
"data")` checks keyword arguments against a function's signature (for classes we do not own).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Union


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the fix in one line."""


def check_choice(value: Any, choices, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is unknown; choose one of {sorted(choices)}")


def _describe(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def matches(value: Any, tp) -> bool:
    """Does `value` fit the annotation `tp`? Unknown annotations are not checked."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else True
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (tp, dict))
    return True


def _check(name: str, value: Any, tp, prefix: str) -> None:
    if not matches(value, tp):
        raise ConfigError(f"{prefix}.{name}={value!r} has the wrong type; expected {_describe(tp)}")


def build(cls, values: dict | None, prefix: str):
    """`cls(**values)` with unknown keys and wrong types reported by name; nested dataclasses too."""
    values = dict(values or {})
    values.pop("_target_", None)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]}; known keys are {names}")
    for name, value in values.items():
        _check(name, value, hints[name], prefix)
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            values[name] = build(hints[name], value, f"{prefix}.{name}")
    return cls(**values)


def check_call(fn, values: dict, prefix: str, check_types: bool = True) -> None:
    """Keyword arguments `values` (minus `_target_`) must be parameters of `fn`, of the right type."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    hints = typing.get_type_hints(fn) if check_types else {}
    for name, value in values.items():
        if name.startswith("_"):
            continue
        if name not in params:
            known = [p for p in params if p != "self"]
            raise ConfigError(f"unknown key {prefix}.{name}; known keys are {known}")
        if name in hints:
            _check(name, value, hints[name], prefix)
