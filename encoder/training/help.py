"""`python train.py --help`: the config groups and their options, then every key of the chosen configs with the
comment its yaml file gives it. Reads the yaml files only: train.py answers --help before importing torch or
Lightning (seconds on a busy machine)."""

from __future__ import annotations

from pathlib import Path

import yaml


def help_text(config_dir: str, config_name: str, overrides: list[str]) -> str:
    """`python train.py --help [group=option ...]`: the groups and their options, then every key of the
    chosen configs as their yaml files write it, one-line comments included (what each key does)."""
    root = Path(config_dir)
    entry = (root / f"{config_name}.yaml").read_text(encoding="utf-8")
    defaults = {k: v for d in yaml.safe_load(entry)["defaults"] if isinstance(d, dict) for k, v in d.items()}
    chosen = {**defaults, **dict(o.split("=", 1) for o in overrides if "=" in o and o.split("=")[0] in defaults)}
    header = yaml.safe_load(entry)["hydra"]["help"]["header"]
    lines = [header, "", "Config groups (pick one with group=option; default in brackets):"]
    for group in defaults:
        options = sorted(p.stem for p in (root / group).glob("*.yaml"))
        lines.append(f"  {group:15s} " + ", ".join(f"[{o}]" if o == chosen[group] else o for o in options))
    lines += ["", f"== {config_name}.yaml (top-level keys) ==", _keys_only(entry)]
    for group, option in chosen.items():
        if option not in (None, "null"):
            for path in _with_bases(root / group, option):
                lines += ["", f"== {group}: {path.relative_to(root)} ==", _keys_only(path.read_text(encoding="utf-8"))]
    lines += ["", "Override any key with key=value (e.g. optim.lr=1e-3); python train.py --cfg job prints the "
              "composed config. Every group's schema: encoder/training/config.py."]
    return "\n".join(lines)


def _with_bases(folder: Path, option: str) -> list[Path]:
    """A group option's yaml file, after the same-group files it extends (its `defaults`)."""
    path = folder / f"{option}.yaml"
    if not path.is_file():
        return []
    bases = [d for d in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("defaults", [])
             if isinstance(d, str) and d != "_self_"]
    return [p for base in bases for p in _with_bases(folder, base)] + [path]


def _keys_only(text: str) -> str:
    """A yaml file without its `defaults:` and `hydra:` blocks (those are Hydra's, not keys of ours)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            skipping = line.startswith(("defaults:", "hydra:"))
        if not skipping:
            out.append(line)
    return "\n".join(out).strip()
