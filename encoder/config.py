"""Config checks that run before any data is loaded, and the `unused_dir` resolver for run dirs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from encoder.model import ConfigError, ModelConfig

SCHEDULES = ("cosine", "linear", "constant")


def unused_dir(path: str) -> str:
    """`path` if it does not exist yet, else the first free `path-1`, `path-2`, ...

    Registered with use_cache=True, so Hydra resolves it once per run and never reuses (and
    overwrites) an earlier run's directory, even when two runs start in the same second.
    """
    candidate, n = Path(path), 0
    while candidate.exists():
        n += 1
        candidate = Path(f"{path}-{n}")
    return str(candidate)


if not OmegaConf.has_resolver("unused_dir"):
    OmegaConf.register_new_resolver("unused_dir", unused_dir, use_cache=True)


def resolved(cfg: DictConfig) -> dict:
    """The run's config as plain, resolved values (without Hydra's own `hydra` node)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def check_optim(optim: dict) -> None:
    if optim.get("schedule", "cosine") not in SCHEDULES:
        raise ConfigError(f"optim.schedule={optim['schedule']!r} is unknown; choose one of {list(SCHEDULES)}")
    lr = optim.get("lr", 1.0)
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"optim.lr={lr!r} must be a positive number")
    if optim.get("weight_decay", 0.0) < 0:
        raise ConfigError(f"optim.weight_decay={optim['weight_decay']} must be >= 0")
    if not 0.0 <= optim.get("warmup_ratio", 0.0) < 1.0:
        raise ConfigError(f"optim.warmup_ratio={optim['warmup_ratio']} must be in [0, 1)")


def check_max_length(max_length: int, cfg: ModelConfig) -> None:
    if max_length > cfg.max_positions:
        raise ConfigError(f"data.max_length={max_length} exceeds model.max_positions={cfg.max_positions}; "
                          f"lower data.max_length or raise model.max_positions")


def validate(cfg: DictConfig) -> None:
    """Fail in one line, before data loading, on what the config alone can tell is wrong."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    # vocabulary and labels come from the data later; placeholders let the rest be checked now
    arch = ModelConfig.from_dict({**model, "vocab_size": 8, "pad_token_id": 0, "num_labels": 2})
    check_optim(OmegaConf.to_container(cfg.optim, resolve=True))
    check_max_length(cfg.data.max_length, arch)
