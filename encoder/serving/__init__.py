"""Serving: `encoder.load_model(path)` gives a task's `Predictor`, with `predict(texts)` and `embed(texts)`.

This module, the tasks' predictors and what they use (the model, the tokenizer, the collator and
encoder/core/checkpoint.py) import neither Lightning, torchmetrics, datasets, pandas nor matplotlib:
serving a model needs torch, tokenizers and safetensors only. It sits above the tasks: it asks the task
registry which model and predictor a checkpoint's task has.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder import tasks

from encoder.core import checkpoint
from encoder.core.errors import CheckpointError
from encoder.core.predictor import OnnxModel, Predictor


def check_device(device: str | torch.device) -> None:
    """A device torch knows and this machine has, or one ValueError line."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device torch knows; use cpu, cuda, cuda:1 or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(kind, False):
        hint = f" (this torch {torch.__version__} was built without CUDA)" if kind == "cuda" and not torch.version.cuda else ""
        raise ValueError(f"device={device!r}: no {kind} device is available here{hint}; use cpu")


def load_model(path: str | os.PathLike, device: str = "cpu", batch_size: int = 64, backend: str = "torch",
               int8: bool = False) -> Predictor:
    """The `Predictor` of a `.ckpt` written by `python train.py` or of a folder written by
    `python -m encoder.export` (safetensors + JSON: no pickle at all). `backend="onnx"` runs the export's
    model.onnx with onnxruntime instead (CPU), `int8=True` its int8 graph (export --onnx --int8)."""
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend={backend!r} is unknown; choose torch or onnx")
    if int8 and backend != "onnx":
        raise ValueError("int8 runs through onnxruntime: backend='onnx' (predict --backend onnx --int8) on an export "
                         "made with --onnx --int8")
    check_device(device)
    saved = checkpoint.read(path)
    if backend == "onnx":
        name = "model.int8.onnx" if int8 else "model.onnx"
        if not (Path(path) / name).is_file():
            raise CheckpointError(f"{path} has no {name}; export it with python -m encoder.export CKPT DIR --onnx"
                                  f"{' --int8' if int8 else ''}")
        task, model = tasks.get(saved.task), OnnxModel(Path(path) / name, saved.config)
    else:
        task, model = build(saved, path)
    predictor = task.predictor_class(model, Tokenizer.from_str(saved.tokenizer_json), saved.max_length, batch_size,
                                     saved.label_names)
    predictor.task_name = saved.task
    return predictor.to(device)


def build(saved: checkpoint.Saved, source: str | os.PathLike):
    """(the task, its model with the saved weights); one CheckpointError line when they do not fit."""
    if saved.task not in tasks.names():
        raise CheckpointError(f"{source} holds a model for task {saved.task!r}, which this version of encoder does "
                              f"not know (it knows {tasks.names()}); upgrade encoder")
    task = tasks.get(saved.task)
    try:
        model = task.build_model(saved.config)
        model.load_state_dict(saved.state)
    except (RuntimeError, ValueError, TypeError) as e:  # ConfigError is a ValueError
        lines = [line.strip() for line in str(e).strip().splitlines()] or [type(e).__name__]
        first = next((line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                     lines[0])
        raise CheckpointError(f"{source}: its weights do not fit the architecture it describes ({first}); "
                              f"re-export it from its checkpoint") from None
    return task, model
