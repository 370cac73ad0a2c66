"""The config schema of `python train.py`: Hydra structured configs, and the value rules they cannot state.

Types and unknown keys are checked by OmegaConf while Hydra composes the config: `TrainConfig` is
registered in Hydra's ConfigStore as `train_schema`, which configs/train.yaml lists first in its
defaults, so every group node is typed by its dataclass (`model` by `ModelNode`, `data` by
`DataConfig`, ...). What remains ours is the value rules, each stated once: a dataclass's
`__post_init__` for the rules of one group (ranges, choices, divisibility), and `validate()` below for
rules across groups. `validate()` turns the composed config into those dataclasses, so every rule
runs before any data is loaded.

The trainer group's schema is read off Lightning's own signature (trainer_arguments.py); the resolvers the configs
use are in resolvers.py; what happens before Hydra starts a run (composing, checking, deciding the run directory)
is in launch.py.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from encoder.core.errors import ConfigError, check_choice
from encoder.core.options import ModelConfig
from encoder.core.tokenizer import TokenizerConfig
from encoder.training.data.sources import SOURCES
from encoder.training.trainer_arguments import trainer_schema

SCHEDULES = ("cosine", "linear", "constant", "wsd")
NONFINITE = ("stop", "skip")
LONG_TEXTS = ("truncate", "chunk")
DERIVED = ("vocab_size", "pad_token_id", "num_labels")  # decided by the tokenizer and the data


@dataclass
class ModelNode(ModelConfig):
    """configs/model/: the architecture (what checkpoints store), plus how this run starts and runs it."""

    unpad: bool = True  # run everything but attention on real tokens only (same function, faster)
    compile: bool = False  # torch.compile the model for training (measure first: benchmarks/README.md)
    init_from: Optional[str] = None  # start from a pretrained encoder: a known name, a folder or a .ckpt
    # which of init_from's layers to keep, in order (a student made of its teacher's layers, as DistilBERT
    # is); null: all of them. num_layers must be the number kept.
    init_layers: Optional[List[int]] = None
    # with init_from: a model.ffn_dim below the pretrained encoder's keeps, in each layer, the ffn_dim feed-forward
    # units of largest weights (a narrower student, as structured pruning makes one); false: the widths must match
    prune_ffn: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.prune_ffn and not self.init_from:
            raise ConfigError("model.prune_ffn narrows a pretrained encoder's feed-forward layers: set model.init_from "
                              "too (or drop model.prune_ffn)")
        if self.init_layers is None:
            return
        layers = list(self.init_layers)
        if not self.init_from:
            raise ConfigError("model.init_layers picks layers of a pretrained encoder: set model.init_from too "
                              "(or drop model.init_layers)")
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise ConfigError(f"model.init_layers={layers} must list distinct layer indices >= 0, e.g. [0,1,2]")
        if len(layers) != self.num_layers:
            raise ConfigError(f"model.init_layers={layers} keeps {len(layers)} layers but model.num_layers="
                              f"{self.num_layers}; set model.num_layers={len(layers)}")


@dataclass
class OptimConfig:
    """configs/optim/: AdamW and its learning-rate schedule."""

    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_ratio: float = 0.1  # of all optimizer steps, unless warmup_steps is set
    warmup_steps: Optional[int] = None
    schedule: str = "linear"
    min_lr_ratio: float = 0.0
    decay_ratio: float = 0.1  # schedule=wsd: the share of all steps, at the end, over which the rate decays
    # None: the fused kernel on CPU and CUDA (on CPU the optimizer step is 4x, a training step ~1.09x faster)
    fused: Optional[bool] = None

    def __post_init__(self):
        check_choice(self.schedule, SCHEDULES, "optim.schedule")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr={self.lr!r} must be a positive number")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay={self.weight_decay} must be >= 0")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps={self.warmup_steps} must be >= 0 (or null: warmup_ratio decides)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)} must be two numbers in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0.0 < self.decay_ratio <= 1.0:
            raise ConfigError(f"optim.decay_ratio={self.decay_ratio} must be in (0, 1] (the share of the steps that "
                              f"schedule=wsd spends decaying)")


@dataclass
class DataConfig:
    """configs/data/: which texts and labels, and how they are batched (encoder.training.data)."""

    _target_: str = "encoder.training.data.datamodule.TextDataModule"
    path: str = "csv"  # a `datasets` builder (csv | json | parquet | text) or a Hub dataset name
    name: Optional[str] = None  # Hub config name
    revision: Optional[str] = None  # Hub: a branch, tag or commit
    data_files: Any = None  # {split: path or glob}, or one path
    source: Optional[str] = None  # an offline source (encoder/training/data/sources.py)
    splits: Dict[str, Optional[str]] = field(default_factory=dict)  # our split -> the data's; null: none
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    negative_columns: List[str] = field(default_factory=list)  # task=contrastive: hard negatives, each encoded alone
    label_column: Optional[str] = "label"
    label_names: Optional[List[str]] = None
    val_fraction: float = 0.1  # 0: no rows carved; validation reads the training rows (a few-row run's fixed schedule)
    max_length: int = 128
    long_texts: str = "truncate"
    packing: bool = False  # texts joined by [SEP] into rows of exactly max_length (task=mlm's default)
    document_attention: bool = False  # packed rows: each text attends within itself, positions from its start
    streaming: bool = False  # read the corpus as a stream, tokenized and packed on the fly (data/streaming.py)
    shuffle_buffer: Optional[int] = None  # a stream's texts are shuffled among this many (null: 10,000; 0: none)
    mlm_probability: float = 0.0
    batch_size: int = 32
    eval_batch_size: int = 128
    group_by_length: bool = True
    pad_to_multiple_of: int = 8
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    num_workers: int = 0
    num_proc: Optional[int] = None  # processes that tokenize (datasets.map); null: this one
    pin_memory: bool = False
    persistent_workers: bool = True

    def __post_init__(self):
        self.splits = {"train": "train", "validation": "validation", "test": "test", **self.splits}
        if self.source is not None:
            check_choice(self.source, SOURCES, "data.source")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} must be in [0, 1) (0: validation reads the "
                              f"training rows)")
        check_choice(self.long_texts, LONG_TEXTS, "data.long_texts")
        if not 0.0 <= self.mlm_probability < 1.0:
            raise ConfigError(f"data.mlm_probability={self.mlm_probability} must be in [0, 1) (BERT: 0.15)")
        if self.long_texts == "chunk" and self.text_pair_column:
            raise ConfigError("data.long_texts=chunk splits single texts; with data.text_pair_column use truncate")
        if self.packing and self.text_pair_column:
            raise ConfigError("data.packing=true joins single texts; with data.text_pair_column set data.packing=false")
        if self.max_length < 2 + (self.long_texts == "chunk" or self.packing):
            raise ConfigError(f"data.max_length={self.max_length} must be at least 2 ([CLS] and [SEP])")
        if self.num_proc is not None and self.num_proc < 1:
            raise ConfigError(f"data.num_proc={self.num_proc} must be a positive number of processes (null: this one)")
        if self.document_attention and not self.packing:
            raise ConfigError("data.document_attention=true keeps attention within each text of a packed row: it "
                              "needs data.packing=true (task=mlm's default)")
        if self.streaming and not self.packing:
            raise ConfigError("data.streaming=true reads a corpus into packed rows as it trains: set data.packing=true "
                              "(task=mlm's default)")
        if self.shuffle_buffer is not None and not self.streaming:
            raise ConfigError("data.shuffle_buffer shuffles a stream; without data.streaming=true every epoch is "
                              "shuffled whole already: remove data.shuffle_buffer")
        if self.shuffle_buffer is not None and self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer={self.shuffle_buffer} must be 0 (the files' order) or more texts")
        if self.streaming and (self.num_proc or 1) > 1:
            raise ConfigError("data.streaming=true tokenizes in the DataLoader as it reads: set data.num_proc=null and "
                              "use data.num_workers for more processes")
        for key in ("batch_size", "eval_batch_size", "pad_to_multiple_of"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)} must be a positive integer")


@dataclass
class TaskConfig:
    """configs/task/: which task (encoder/tasks/) and what to do when its training loss is not finite."""

    name: str = "classification"
    on_nonfinite_loss: str = "stop"  # stop | skip
    loss: Dict[str, Any] = field(default_factory=dict)  # the task's loss and options (task=contrastive); {}: its own
    truncate_dim: Optional[int] = None  # task=contrastive: score the first N dimensions of each vector; null: all

    def __post_init__(self):  # (the name is checked against the registry in validate(), which imports the tasks)
        check_choice(self.on_nonfinite_loss, NONFINITE, "task.on_nonfinite_loss")


@dataclass
class DistillConfig:
    """configs/distill/: teach the model with a trained teacher's outputs (encoder/tasks/distillation.py)."""

    teacher: Optional[str] = None  # a .ckpt or export of the same task and labels; null: no distillation
    temperature: float = 2.0  # softens both distributions (classification); the KL term is scaled by T^2
    alpha: float = 0.5  # weight of the teacher term; 1 - alpha on the gold labels
    extra_text: Optional[str] = None  # unlabelled text the teacher labels: an offline source name or files
    extra_text_column: str = "text"
    augment: int = 0  # N variants of each training text (masked words, swapped words, n-grams) the teacher labels
    augment_seed: int = 0  # the variants' own seed: every training seed reuses them (and their cached labels)
    batch_size: int = 128  # teacher inference batch

    def __post_init__(self):
        if not self.temperature > 0:
            raise ConfigError(f"distill.temperature={self.temperature} must be positive")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill.alpha={self.alpha} must be in [0, 1]")
        if self.extra_text and not self.teacher:
            raise ConfigError("distill.extra_text needs distill.teacher: only a teacher can label it")
        if not isinstance(self.augment, int) or self.augment < 0:
            raise ConfigError(f"distill.augment={self.augment!r} must be a whole number of variants per text (0: none)")
        if self.augment and not self.teacher:
            raise ConfigError("distill.augment needs distill.teacher: only a teacher can label the variants")
        if self.batch_size < 1:
            raise ConfigError(f"distill.batch_size={self.batch_size} must be a positive integer")


TrainerConfig = trainer_schema()  # lightning.Trainer's own arguments (encoder/training/trainer_arguments.py)


@dataclass
class TrainConfig:
    """The whole config of `python train.py` (configs/train.yaml and its groups)."""

    model: ModelNode = field(default_factory=ModelNode)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # lightning.Trainer's own arguments
    callbacks: Dict[str, Any] = field(default_factory=dict)
    logger: Dict[str, Any] = field(default_factory=dict)  # name -> a Lightning logger; several at once
    paths: Dict[str, str] = field(default_factory=dict)
    name: str = MISSING
    seed: int = 42
    ckpt_path: Optional[str] = None
    resume: Optional[str] = None
    train: bool = True  # false: evaluate ckpt_path on the data's test split, no training
    test: bool = True
    predictions: bool = False  # also write predictions.jsonl for the test split
    objective: str = MISSING


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


@dataclass
class Checked:
    """The typed, checked groups of a run's config."""

    model: ModelNode
    data: DataConfig
    tokenizer: TokenizerConfig
    optim: OptimConfig
    task: TaskConfig
    distill: DistillConfig


def validate(cfg: DictConfig) -> Checked:
    """Every value rule, before data loading: one ConfigError line naming the key."""
    from encoder import tasks  # (here, not above: a config is composed and its keys checked before torch loads)
    from encoder.tasks.distillation import check_teaching

    _check_known_keys(cfg)
    checked = Checked(**{key: OmegaConf.to_object(cfg[key])
                         for key in ("model", "data", "tokenizer", "optim", "task", "distill")})
    model, data, task = checked.model, checked.data, tasks.get(checked.task.name)
    for key in DERIVED:
        if getattr(model, key) != getattr(ModelConfig, key):
            raise ConfigError(f"model.{key} is decided by the tokenizer and the data; leave it unset "
                              f"(tokenizer.vocab_size sets the vocabulary, data.label_names the labels)")
    _check_trainer(cfg.trainer)
    if data.max_length > model.max_positions:
        raise ConfigError(f"data.max_length={data.max_length} exceeds model.max_positions={model.max_positions}; "
                          f"lower data.max_length or raise model.max_positions")
    if data.streaming and not (cfg.trainer.get("max_steps") or -1) > 0:
        raise ConfigError("data.streaming=true has no length to plan a schedule from: set trainer.max_steps (e.g. "
                          "100000)")
    if data.packing and (task.label_kind is not None or task.carries or task.texts_apart):
        raise ConfigError(f"data.packing=true joins texts into rows that belong to no one text, so task={task.name} "
                          f"(a label or a teacher's output per text) cannot use it; set data.packing=false")
    if task.masks_tokens and not data.mlm_probability:
        raise ConfigError(f"task={task.name} needs data.mlm_probability > 0 (0.15 as in BERT); "
                          f"configs/task/{task.name}.yaml sets it")
    if checked.tokenizer.trim_to_data and not (checked.tokenizer.path or checked.model.init_from):
        raise ConfigError("tokenizer.trim_to_data cuts a loaded vocabulary to the training text: set model.init_from "
                          "or tokenizer.path (a trained tokenizer already fits its data)")
    if checked.distill.augment and checked.data.text_pair_column:
        raise ConfigError("distill.augment varies single texts; with data.text_pair_column set distill.augment=0")
    # (refused in one line by a task with one loss, or a bad option)
    task = task.with_loss(checked.task.loss).evaluated_at(checked.task.truncate_dim)
    task.check_data(data)
    check_teaching(task, dataclasses.asdict(checked.distill))  # (encoder/tasks/distillation.py: stated there once)
    if task.texts_apart and not data.text_pair_column:
        raise ConfigError(f"task={task.name} learns from pairs: set data.text_pair_column to the column of each "
                          f"text's positive (data.text_column holds the anchors)")
    if task.texts_apart and data.batch_size < 2:
        raise ConfigError(f"task={task.name} takes the other positives of a batch as negatives: data.batch_size="
                          f"{data.batch_size} has none; use 2 or more (sentence-transformers: 32 and up)")
    if data.negative_columns and not task.texts_apart:
        raise ConfigError(f"data.negative_columns are hard negatives of a task that encodes its texts apart "
                          f"(task=contrastive); task={task.name} does not: drop them")
    if task.fits_head and data.batch_size < 2:
        raise ConfigError(f"task.loss.name=setfit learns from pairs of a batch's rows: data.batch_size="
                          f"{data.batch_size} has none; use 2 or more (experiment=small_data: 16)")
    if data.mlm_probability and not task.masks_tokens:
        raise ConfigError(f"data.mlm_probability={data.mlm_probability} masks tokens, which only task=mlm uses; "
                          f"set it to 0")
    return checked


def _check_trainer(trainer: DictConfig) -> None:
    """The Trainer values Lightning itself accepts but that make no sense (it checks the others)."""
    for key, low in (("accumulate_grad_batches", 1), ("log_every_n_steps", 1), ("gradient_clip_val", 0)):
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
            raise ConfigError(f"trainer.{key}={value} must be at least {low}")


def _check_known_keys(node: DictConfig, prefix: str = "") -> None:
    """Keys added with `+` to a typed group (`+model.hidden=12`) pass composition; refuse them by name."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        names = [f.name for f in dataclasses.fields(schema)]
        unknown = [k for k in node if k not in names and not (k == "hydra" and not prefix)]
        if unknown:
            raise unknown_key(f"{prefix}{unknown[0]}", names)
        for key in names:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                _check_known_keys(child, f"{prefix}{key}.")


def unknown_key(key: str, known: list[str]) -> ConfigError:
    """`unknown key a.b`, with the closest known key (a typo, most likely) and the known keys."""
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, known, n=1)
    guess = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    extra = (" (a callback or logger takes arguments of its own: add a new one with +key=value)"
             if parent.split(".")[0] in ("callbacks", "logger") else "")
    return ConfigError(f"unknown key {key}{guess}; known keys are {sorted(known)}{extra}")
