"""The schema of configs/trainer/: `lightning.Trainer`'s own arguments, read off its signature once per Lightning
version and cached, so that a config is typed and checked without importing Lightning (seconds on a busy machine:
benchmarks/startup.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
from dataclasses import field
from pathlib import Path
from typing import Any, Optional


def trainer_schema() -> type:
    """configs/trainer/: `lightning.Trainer`'s own arguments, typed by its own annotations where OmegaConf
    can check them (int, float, bool, str, optional ones) and `Any` elsewhere. Lightning checks the rest
    of the values when train.py builds the Trainer, before any data is loaded.

    Reading them means importing Lightning (seconds); they are read once per Lightning version and kept
    in the cache (trainer-arguments-<version>.json), so a mistake in the overrides is answered before
    Lightning is imported (benchmarks/startup.py)."""
    simple = {"int": int, "float": float, "bool": bool, "str": str}
    try:
        version = importlib.metadata.version("lightning")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    cached = Path(os.environ.get("ENCODER_CACHE", Path.home() / ".cache" / "encoder")) / \
        f"trainer-arguments-{version}.json"
    try:
        arguments = json.loads(cached.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        arguments = _trainer_arguments()
        with contextlib.suppress(OSError):  # a read-only cache: read them again next time
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(arguments), encoding="utf-8")
            os.replace(tmp, cached)
    fields = [("_target_", str, field(default="lightning.pytorch.Trainer"))]
    for name, kind, optional, default in arguments:
        hint = Any if kind is None else Optional[simple[kind]] if optional else simple[kind]
        fields.append((name, hint, field(default=default)))
    return dataclasses.make_dataclass("TrainerConfig", fields)


def _trainer_arguments() -> list:
    """[name, simple type name or None, optional, default] for each argument of `lightning.Trainer`."""
    import inspect
    import typing

    import lightning as L

    hints = typing.get_type_hints(L.Trainer.__init__)
    simple = (int, float, bool, str)
    out = []
    for name, parameter in inspect.signature(L.Trainer.__init__).parameters.items():
        if name in ("self", "callbacks", "logger"):  # train.py passes those
            continue
        hint = hints.get(name, Any)
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = typing.get_origin(hint) is typing.Union and len(options) == 1 and options[0] in simple \
            and len(typing.get_args(hint)) == 2
        kind = hint.__name__ if hint in simple else options[0].__name__ if optional else None
        default = parameter.default if isinstance(parameter.default, (*simple, type(None))) else None
        out.append([name, kind, optional, default])
    return out
