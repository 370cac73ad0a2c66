"""The config schema checks that run before any data is loaded, and the `unused_dir` resolver.

The model's schema is `encoder.model.ModelConfig`, the optimizer's `OptimConfig` below; data and
trainer nodes are checked against the signatures of `TextDataModule` and `lightning.Trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from encoder.model import ModelConfig
from encoder.schema import ConfigError, build, check_call, check_choice

SCHEDULES = ("cosine", "linear", "constant")
NONFINITE = ("stop", "skip")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (configs/optim/)."""

    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_ratio: float = 0.1  # of all optimizer steps, unless warmup_steps is set
    warmup_steps: int | None = None
    schedule: str = "linear"
    min_lr_ratio: float = 0.0
    fused: bool | None = None  # None: the fused kernel on GPU, the plain one on CPU

    def __post_init__(self):
        check_choice(self.schedule, SCHEDULES, "optim.schedule")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr={self.lr!r} must be a positive number")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay={self.weight_decay} must be >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)} must be two numbers in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")


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


def check_max_length(max_length: int, cfg: ModelConfig) -> None:
    if max_length > cfg.max_positions:
        raise ConfigError(f"data.max_length={max_length} exceeds model.max_positions={cfg.max_positions}; "
                          f"lower data.max_length or raise model.max_positions")


def validate(cfg: DictConfig) -> None:
    """Fail in one line, before data loading, on what the config alone can tell is wrong."""
    import lightning as L

    from encoder.data import TextDataModule
    from encoder.data.tokenizer import TokenizerConfig

    plain = resolved(cfg)
    # vocabulary and labels come from the data later; placeholders let the rest be checked now
    arch = ModelConfig.from_dict({**plain["model"], "vocab_size": 8, "pad_token_id": 0, "num_labels": 2})
    build(OptimConfig, plain["optim"], "optim")
    build(TokenizerConfig, plain["tokenizer"], "tokenizer")
    check_call(TextDataModule.__init__, plain["data"], "data")
    check_call(L.Trainer.__init__, plain["trainer"], "trainer", check_types=False)
    check_max_length(plain["data"]["max_length"], arch)
    from encoder import module

    tasks = {cls.__name__: cls for cls in vars(module).values()
             if isinstance(cls, type) and issubclass(cls, module.EncoderTask) and cls.task}
    target = plain["task"].get("_target_", "")
    if target.rsplit(".", 1)[-1] not in tasks or not target.startswith("encoder."):
        raise ConfigError(f"task._target_={target!r} is not one of encoder's tasks "
                          f"{sorted('encoder.module.' + n for n in tasks)}; pick one with task=...")
    task = tasks[target.rsplit(".", 1)[-1]]
    check_call(task.__init__, plain["task"], "task")
    check_choice(plain["task"].get("on_nonfinite_loss", "stop"), NONFINITE, "task.on_nonfinite_loss")
    if task.task == "mlm" and not plain["data"].get("mlm_probability"):
        raise ConfigError("task=mlm needs data.mlm_probability > 0 (0.15 as in BERT); configs/task/mlm.yaml sets it")
    if (task.task == "regression") != bool(plain["data"].get("regression")):
        raise ConfigError("task=regression and data.regression=true go together (numeric labels); "
                          "pick task=regression, which sets both")
    if (task.task == "token_classification") != bool(plain["data"].get("word_labels")):
        raise ConfigError("task=token_classification and data.word_labels=true go together (a label per word); "
                          "pick task=token_classification, which sets both")
    if task.task != "mlm" and plain["data"].get("mlm_probability"):
        raise ConfigError(f"data.mlm_probability={plain['data']['mlm_probability']} masks tokens, which only "
                          f"task=mlm uses; set it to 0")
