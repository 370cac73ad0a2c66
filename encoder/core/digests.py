"""The digests that make damage visible: of a file, of a model's tensors, and of a whole checkpoint's content.
Checkpoints record the last two when written and every reader checks them (encoder/core/checkpoint.py); export
manifests and caches keyed by a teacher use the first. Integrity, not authenticity: whoever can edit a file can
rewrite its digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def sha256(path: Path) -> str:
    """A file's sha256, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the model's tensors (names, dtypes, shapes, bytes): checkpoints record it when
    written and every reader checks it, so flipped bytes in a weight are an error, not NaN predictions."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def content_digest(checkpoint: dict, skip: tuple[str, ...] = ()) -> str:
    """sha256 over a checkpoint's whole content but its top-level keys `skip` (its own digests): tensors by their
    bytes, anything else by its repr, dict keys sorted, so the same content read back gives the same digest."""
    digest = hashlib.sha256()

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key in sorted(node, key=str):
                if not (path == "" and key in skip):
                    walk(node[key], f"{path}/{key}")
        elif isinstance(node, (list, tuple)):
            digest.update(f"{path}:{type(node).__name__}:{len(node)};".encode())
            for i, item in enumerate(node):
                walk(item, f"{path}/{i}")
        elif isinstance(node, torch.Tensor):
            tensor = node.detach().cpu().contiguous()
            digest.update(f"{path}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            digest.update(f"{path}={node!r};".encode())

    walk(checkpoint, "")
    return digest.hexdigest()
