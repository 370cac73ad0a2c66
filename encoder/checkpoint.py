"""The checkpoint and export format, owned here and nowhere else.

A checkpoint (`.ckpt`, written by Lightning during `python train.py`) holds, besides Lightning's own
training state:
- `hyper_parameters`: `task` (its name in encoder/tasks/), `model` (the architecture: every
  `ModelConfig` field), `tokenizer_json`, `label_names` (null for MLM), `max_length`, and how the run
  trained (`optim`, `on_nonfinite_loss`, `unpad`, `compile`), which loading ignores;
- `state_dict`: the task model's weights under `model.`;
- `rng`: the random state that makes a resume exact (encoder/training/module.py).

It is read with `torch.load(weights_only=True)`, which rebuilds tensors and plain Python types only
and never runs code hidden in a pickle.

An export (`python -m encoder.export`) is a folder of `model.safetensors`, `tokenizer.json` and
`config.json` (format, task, architecture, labels, max_length, the sha256 of its weight files).
Reading it needs `json` and `safetensors` only.

Both read into a `Saved`; `architecture()` is the one place where the fields that the data decides
(vocabulary size, padding id, number of labels, segment embeddings for pairs) are computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder.errors import CheckpointError
from encoder.model import ModelConfig

EXPORT_FORMAT = "encoder-export-v1"
EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer.json")
RUN_SWITCHES = ("unpad", "compile", "init_from")  # stored with the architecture before 0.2: not architecture


@dataclass
class Saved:
    """What every checkpoint and export holds, for loading a model without its training."""

    task: str
    model: dict  # the architecture (derived fields may be missing in older checkpoints)
    tokenizer_json: str
    label_names: list[str] | None
    max_length: int
    state: dict[str, torch.Tensor]  # the task model's weights

    @property
    def config(self) -> ModelConfig:
        return architecture(self.model, self.tokenizer_json, self.label_names)


def architecture(model: dict, tokenizer_json: str, label_names: list[str] | None = None,
                 text_pairs: bool = False) -> ModelConfig:
    """The model's full architecture: the configured fields plus those the data decides, computed
    here only: `vocab_size` and `pad_token_id` from the tokenizer, `num_labels` from the labels, and
    segment embeddings (`type_vocab_size=2`) for text pairs when the config has none."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    values = {k: v for k, v in model.items() if k not in RUN_SWITCHES}
    values.update(vocab_size=tokenizer.get_vocab_size(), pad_token_id=tokenizer.token_to_id("[PAD]"))
    if label_names is not None:
        values["num_labels"] = len(label_names)
    if text_pairs and not values.get("type_vocab_size"):
        values["type_vocab_size"] = 2
    return ModelConfig.from_dict(values)


def first_difference(ours: Saved, theirs: Saved) -> tuple[str, object, object] | None:
    """(what, ours, theirs) for the first thing that makes two models different models: the task, an
    architecture field, max_length, the labels, or the tokenizer (its vocabulary and rules, not its
    truncation setting); None when they are the same model."""
    if ours.task != theirs.task:
        return "task", ours.task, theirs.task
    a, b = _flat(dataclasses.asdict(ours.config)), _flat(dataclasses.asdict(theirs.config))
    for key in a:
        if key not in ("vocab_size", "pad_token_id", "num_labels") and a[key] != b.get(key):
            return f"model.{key}", a[key], b.get(key)
    if ours.max_length != theirs.max_length:
        return "data.max_length", ours.max_length, theirs.max_length
    if ours.label_names != theirs.label_names:
        return "labels", ours.label_names, theirs.label_names
    if _rules(ours.tokenizer_json) != _rules(theirs.tokenizer_json):
        return "tokenizer", f"{a['vocab_size']} tokens", f"{b['vocab_size']} tokens"
    return None


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _rules(tokenizer_json: str) -> str:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_truncation()  # max_length is compared on its own
    tokenizer.no_padding()
    return tokenizer.to_str()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- checkpoints ---------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict, read with weights_only=True; every failure is one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .ckpt file "
                              f"(train.py prints it as 'best checkpoint')")
    try:
        # mmap (zip checkpoints only): reading the hyperparameters of a large checkpoint loads little
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"refusing to load {path}: it needs arbitrary Python objects to unpickle, which "
                              f"could run code ({first}); only load checkpoints written by encoder") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) \
            or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path} is not a checkpoint written by encoder's train.py (it has no state_dict "
                              f"and hyper_parameters)")
    return ckpt


def read_checkpoint(path: str | os.PathLike) -> Saved:
    ckpt = load_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    missing = [k for k in ("model", "tokenizer_json", "max_length") if k not in hp]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)} in its hyper_parameters; it was not written "
                              f"by encoder's train.py")
    # older checkpoints record the task next to the hyperparameters, the oldest not at all
    task = hp.get("task") or ckpt.get("task") or "classification"
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return Saved(task, hp["model"], hp["tokenizer_json"], hp.get("label_names"), hp["max_length"], state)


# ---- exports -------------------------------------------------------------------------------
def write_export(saved: Saved, folder: Path, extra_files: tuple[str, ...] = ()) -> None:
    """Write `saved` as an export into `folder` (which must exist and be empty). `extra_files` are
    files already written there (e.g. model.onnx) whose hash goes into config.json too."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in saved.state.items()}, folder / "model.safetensors",
              metadata={"format": EXPORT_FORMAT})
    (folder / "tokenizer.json").write_text(saved.tokenizer_json, encoding="utf-8")
    files = ["model.safetensors", *extra_files]
    config = {"format": EXPORT_FORMAT, "task": saved.task, "model": saved.model, "label_names": saved.label_names,
              "max_length": saved.max_length, "sha256": {name: sha256(folder / name) for name in files}}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an export of ours (rather than, say, a Hugging Face BERT folder)."""
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_export(folder: Path) -> Saved:
    """An export folder, after checking its weights against the sha256 in config.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    missing = [n for n in EXPORT_FILES if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(f"{folder} lacks {', '.join(missing)}; pass a folder written by "
                              f"python -m encoder.export, or a .ckpt file")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / 'config.json'} is not valid JSON ({e}); re-export the model") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{folder / 'config.json'} is not an encoder export (format {found!r})")
    if sha256(folder / "model.safetensors") != config.get("sha256", {}).get("model.safetensors"):
        raise CheckpointError(f"{folder / 'model.safetensors'} does not match the sha256 in config.json: "
                              f"the export was modified or corrupted; re-export it")
    try:
        state = load_file(folder / "model.safetensors")
    except SafetensorError as e:
        raise CheckpointError(f"{folder / 'model.safetensors'} is not a valid safetensors file ({e})") from None
    return Saved(config.get("task") or "classification", config["model"],
                 (folder / "tokenizer.json").read_text(encoding="utf-8"), config.get("label_names"),
                 config["max_length"], state)


def read(path: str | os.PathLike) -> Saved:
    """A checkpoint file or an export folder."""
    path = Path(path)
    return read_export(path) if path.is_dir() else read_checkpoint(path)
