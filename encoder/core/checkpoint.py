"""The checkpoint and export format, owned here and nowhere else.

A checkpoint (`.ckpt`, written by Lightning during `python train.py`) holds, besides Lightning's own
training state:
- `hyper_parameters`: `task` (its name in encoder/tasks/), `model` (the architecture: every
  `ModelConfig` field), `tokenizer_json`, `label_names` (null for MLM), `max_length`, and how the run
  trained (`optim`, `on_nonfinite_loss`, `unpad`, `compile`, `distill`), which loading ignores;
- `state_dict`: the task model's weights under `model.`;
- `rng`: the random state that makes a resume exact (encoder/training/module.py);
- `weights_sha256` (the model's tensors) and `checkpoint_sha256` (everything else but these two: hyper-parameters,
  optimizer and scheduler state, loops, RNG), recorded by `stamp` as it is written (encoder/core/digests.py
  computes them) and checked by every reader.

It is read with `torch.load(weights_only=True)`, which rebuilds tensors and plain Python types only
and never runs code hidden in a pickle.

An export (`python -m encoder.export`) is a folder of `model.safetensors`, `tokenizer.json` and
`config.json` (format, task, architecture, labels, max_length, and a manifest: the sha256 of every file of the
export, ONNX graphs included, and of config.json's own content). Reading it needs `json` and `safetensors` only.

Both read into a `Saved`. `full_config()` computes the fields the data decides (vocabulary size, padding id,
number of labels, segment embeddings for pairs) for every model train.py builds, a checkpoint or export is read
into, or a teacher folder is run as; a task fixes its own in `Task.architecture` (embedding: the head's width).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder.core.digests import content_digest, sha256, weights_digest
from encoder.core.errors import CheckpointError
from encoder.core.model import ModelConfig

EXPORT_FORMAT = "encoder-export-v1"
EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer.json")
OPTIONAL_EXPORT_FILES = ("model.onnx", "model.int8.onnx")  # export --onnx [--int8]: listed in the manifest too
# run switches, not architecture (stored with it before 0.2)
RUN_SWITCHES = ("unpad", "compile", "init_from", "init_layers", "prune_ffn")


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
        return full_config(self.model, self.tokenizer_json, self.label_names)


def full_config(model: dict, tokenizer_json: str, label_names: list[str] | None = None,
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
        # torch names the global it refused ("Unsupported global: GLOBAL x.y", or "Trying to load unsupported
        # GLOBAL x.y whose module x is blocked"): the file asks to run code. Other unpickling errors are damage.
        refused = next((line.strip() for line in str(e).splitlines() if "unsupported global" in line.lower()), None)
        operand = next((line.strip() for line in str(e).splitlines() if "Unsupported operand" in line), None)
        if operand is not None:
            raise CheckpointError(f"{path} is not a readable checkpoint (damaged, or not written by encoder's "
                                  f"train.py): its pickle uses an instruction a weights-only read refuses "
                                  f"({operand.lower()}), so nothing in it ran") from None
        if refused is None:
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): it does not "
                                  f"unpickle") from None
        what = refused[refused.find("GLOBAL "):].split(" whose ")[0].split(" was not ")[0].rstrip(".")
        raise CheckpointError(f"refusing to load {path}: the file asks to run code as it is read ({what}), which "
                              f"was refused; only load checkpoints written by encoder") from None
    except Exception as e:  # noqa: BLE001 - damaged bytes make the unpickler raise anything (IndexError, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) \
            or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path} is not a checkpoint written by encoder's train.py (it has no state_dict "
                              f"and hyper_parameters)")
    return ckpt


DIGESTS = ("weights_sha256", "checkpoint_sha256")


def stamp(checkpoint: dict) -> None:
    """Called as a checkpoint is written (EncoderModule.on_save_checkpoint, after everything else is in it):
    record the weights' digest, and one of everything a reader or a resume uses (hyper-parameters, optimizer
    and scheduler state, loops, RNG)."""
    checkpoint["weights_sha256"] = weights_digest(_model_weights(checkpoint["state_dict"]))
    checkpoint["checkpoint_sha256"] = content_digest(checkpoint, skip=DIGESTS)


def _model_weights(state_dict: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}


def read_checkpoint(path: str | os.PathLike) -> Saved:
    return saved_of(load_checkpoint(path), path)


def saved_of(ckpt: dict, path: str | os.PathLike) -> Saved:
    """A checkpoint dict (`load_checkpoint`) as a `Saved`, after checking its digests."""
    hp = ckpt["hyper_parameters"]
    missing = [k for k in ("model", "tokenizer_json", "max_length") if k not in hp]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)} in its hyper_parameters; it was not written "
                              f"by encoder's train.py")
    state = _model_weights(ckpt["state_dict"])
    recorded = ckpt.get("weights_sha256")  # checkpoints written before 0.2 have none
    if recorded is not None and weights_digest(state) != recorded:
        raise CheckpointError(f"{path}: its weights do not match the digest recorded when it was written (the file "
                              f"was damaged or modified); use another checkpoint (e.g. last.ckpt or best-*.ckpt)")
    recorded = ckpt.get("checkpoint_sha256")  # checkpoints written before 0.3 have none
    if recorded is not None and content_digest(ckpt, skip=DIGESTS) != recorded:
        raise CheckpointError(f"{path}: its hyper-parameters or training state (optimizer, schedule, loops) do not "
                              f"match the digest recorded when it was written (the file was damaged or modified); "
                              f"use another checkpoint (e.g. last.ckpt or best-*.ckpt)")
    # older checkpoints record the task next to the hyperparameters, the oldest not at all
    task = hp.get("task") or ckpt.get("task") or "classification"
    return Saved(task, hp["model"], hp["tokenizer_json"], hp.get("label_names"), hp["max_length"], state)


# ---- exports -------------------------------------------------------------------------------
def _config_digest(config: dict) -> str:
    """sha256 of config.json's content (all of it but the hashes themselves)."""
    content = {k: v for k, v in config.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_export(saved: Saved, folder: Path, extra_files: tuple[str, ...] = ()) -> None:
    """Write `saved` as an export into `folder` (which must exist and be empty). `extra_files` are
    files already written there (e.g. model.onnx). config.json records the sha256 of every file and of
    its own content (a manifest): a change to any of them that decides an output is refused on load."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in saved.state.items()}, folder / "model.safetensors",
              metadata={"format": EXPORT_FORMAT})
    (folder / "tokenizer.json").write_text(saved.tokenizer_json, encoding="utf-8")
    config = {"format": EXPORT_FORMAT, "task": saved.task, "model": saved.model, "label_names": saved.label_names,
              "max_length": saved.max_length}
    files = ["model.safetensors", "tokenizer.json", *extra_files]
    config["sha256"] = {"config": _config_digest(config), **{name: sha256(folder / name) for name in files}}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an export of ours (rather than, say, a Hugging Face BERT folder)."""
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_export(folder: Path) -> Saved:
    """An export folder, after checking every file and config.json's content against its manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = _export_config(folder)
    manifest = config.get("sha256") if isinstance(config.get("sha256"), dict) else {}
    absent = [name for name in manifest if name != "config" and not (folder / name).is_file()]
    if absent:
        raise CheckpointError(f"{folder}: {', '.join(absent)} {'is' if len(absent) == 1 else 'are'} listed in "
                              f"config.json but missing; copy the whole export folder, or re-export it")
    unlisted = [name for name in ("config", *EXPORT_FILES[1:], *OPTIONAL_EXPORT_FILES)
                if name not in manifest and (name == "config" or (folder / name).is_file())]
    if unlisted:
        raise CheckpointError(f"{folder}: {', '.join(unlisted)} {'is' if len(unlisted) == 1 else 'are'} not in "
                              f"config.json's sha256 manifest (edited, or added after the export), so "
                              f"{'it' if len(unlisted) == 1 else 'they'} cannot be checked; re-export the model")
    changed = [name for name, expected in manifest.items()
               if (_config_digest(config) if name == "config" else sha256(folder / name)) != expected]
    if changed or "model.safetensors" not in manifest:
        raise CheckpointError(f"{folder}: {', '.join(changed or ['model.safetensors'])} "
                              f"{'does' if len(changed) < 2 else 'do'} not match the sha256 in config.json: the export "
                              f"was modified or corrupted; re-export it")
    try:
        state = load_file(folder / "model.safetensors")
    except SafetensorError as e:
        raise CheckpointError(f"{folder / 'model.safetensors'} is not a valid safetensors file ({e})") from None
    return Saved(config.get("task") or "classification", config["model"],
                 (folder / "tokenizer.json").read_text(encoding="utf-8"), config.get("label_names"),
                 config["max_length"], state)


def _export_config(folder: Path) -> dict:
    missing = [n for n in EXPORT_FILES if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(f"{folder} lacks {', '.join(missing)}; pass a folder written by "
                              f"python -m encoder.export, or a .ckpt file")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / 'config.json'} is not valid JSON ({e}); re-export the model") from None
    if isinstance(config, dict) and config.get("model_type") == "bert":  # our --format hf / sentence-transformers
        kind = (config.get("architectures") or ["BertModel"])[0]
        runner = "SentenceTransformer(folder).encode" if kind == "BertModel" else "pipeline"
        raise CheckpointError(f"{folder} is a Hugging Face {kind} folder, not an encoder export: run it with "
                              f"transformers ({runner}), train from it with model.init_from={folder}, or predict "
                              f"with the export of the default format (python -m encoder.export CKPT DIR)")
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{folder / 'config.json'} is not an encoder export (format {found!r})")
    missing = [k for k in ("model", "max_length") if not isinstance(config.get(k), (dict if k == "model" else int))]
    if missing:
        raise CheckpointError(f"{folder / 'config.json'} has no valid {', '.join(missing)}; re-export the model")
    return config


def task_of(path: str | os.PathLike) -> str:
    """The task a checkpoint or export was trained for, read without checking its weights (`read` checks them)."""
    path = Path(path)
    if path.is_dir():
        return _export_config(path).get("task") or "classification"
    ckpt = load_checkpoint(path)
    return ckpt["hyper_parameters"].get("task") or ckpt.get("task") or "classification"


def read(path: str | os.PathLike) -> Saved:
    """A checkpoint file or an export folder."""
    path = Path(path)
    return read_export(path) if path.is_dir() else read_checkpoint(path)
