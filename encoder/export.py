"""Command line: python -m encoder.export CHECKPOINT OUT_DIR [--onnx] [--format encoder|hf|sentence-transformers]

--format encoder (the default) writes model.safetensors + config.json + tokenizer.json: a folder that
`encoder.load_model(OUT_DIR)` loads without unpickling anything (the format: encoder/core/checkpoint.py).
--onnx adds model.onnx (dynamic batch and sequence axes; inputs input_ids int64 and padding_mask bool,
True = padding; outputs logits and embeddings) for the tasks that can export one.
--format hf writes what `transformers` loads with no code of ours (AutoModelForSequenceClassification,
...ForTokenClassification, ...ForMaskedLM; AutoTokenizer; pipelines), which is also a sentence-transformers
model; --format sentence-transformers writes the encoder alone, for embeddings (encoder/serving/hf.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from encoder import tasks

from encoder.core import checkpoint

from encoder.serving import hf
from encoder.serving import build
from encoder.core.errors import CheckpointError, ConfigError, check_choice


FORMATS = ("encoder", "hf", "sentence-transformers")


def export(source: str | os.PathLike, out_dir: str | os.PathLike, onnx: bool = False, format: str = "encoder",
           int8: bool = False, normalize: bool = False, truncate_dim: int | None = None) -> Path:
    """Export a checkpoint (or re-export an export) into a new or empty folder `out_dir`. `int8`: with
    `onnx`, also model.int8.onnx, its linear layers quantized to int8 by onnxruntime (dynamic quantization).
    `normalize`, `truncate_dim` (the hf and sentence-transformers formats): sentence-transformers' `encode` gives
    unit vectors, or each vector's first `truncate_dim` dimensions (a Matryoshka model)."""
    check_choice(format, FORMATS, "--format")
    if (normalize or truncate_dim is not None) and format == "encoder":
        raise ValueError("--normalize and --truncate-dim shape what sentence-transformers' encode gives: add --format "
                         "sentence-transformers (our own predictor takes them at predict time: predict --embed "
                         "--normalize --truncate-dim N)")
    if normalize and truncate_dim is not None:
        raise ValueError("sentence-transformers normalises a vector before it truncates it (the cut vectors would "
                         "not be unit length): export with --truncate-dim alone and encode with "
                         "normalize_embeddings=True")
    if onnx and format != "encoder":
        raise ValueError("--onnx goes with --format encoder (transformers users export ONNX with optimum)")
    if int8 and not onnx:
        raise ValueError("--int8 quantizes the ONNX graph: add --onnx")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; export into a new folder (nothing was overwritten)")
    saved = checkpoint.read(source)
    task, model = build(saved, source)
    # (a model with segment embeddings, BERT's or one trained on pairs, exports for single texts: segment 0)
    if onnx and not task.onnx:
        able = [t for t in tasks.names() if tasks.get(t).onnx]
        raise ValueError(f"--onnx exports single-text {', '.join(able[:-1])} and {able[-1]} models; this checkpoint "
                         f"is task={saved.task}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:  # written next to `out` and renamed when complete: no half-written export ever sits at `out`
        if format != "encoder":
            width = model.eval().embed(*task.example_input(saved.config)).shape[-1]
            if truncate_dim is not None and not 0 < truncate_dim <= width:
                raise ValueError(f"--truncate-dim {truncate_dim} must be from 1 to the embedding's {width} dimensions")
            hf.write_hf(saved, tmp, sentence_transformers_only=format == "sentence-transformers", normalize=normalize,
                        truncate_dim=truncate_dim)
        else:
            if onnx:
                export_onnx(model, tmp / "model.onnx")
            if int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                # its advice to pre-process is for static (calibrated) quantization. A scale per output unit
                # (per_channel) rather than per matrix: the 2-layer student lost 0.13 points to int8 instead of
                # 0.65 (3 seeds), for about 1% of its speed
                with _dropped(logging.getLogger(), "Please consider to run pre-processing before quantization"):
                    quantize_dynamic(tmp / "model.onnx", tmp / "model.int8.onnx", weight_type=QuantType.QInt8,
                                     per_channel=True)
            extra = ("model.onnx",) * onnx + ("model.int8.onnx",) * int8
            checkpoint.write_export(saved, tmp, extra_files=extra)
        _apply_umask(tmp)
        os.replace(tmp, out)  # onto a missing or empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _apply_umask(folder: Path) -> None:
    """The permissions any new file of the user gets (mkdtemp makes 0700 folders; safetensors 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


class _OnnxGraph(torch.nn.Module):
    """What model.onnx computes: (input_ids, padding_mask) -> (logits, pooled embeddings)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor):
        pooled = self.model.embed(input_ids, padding_mask)
        return self.model.head(pooled), pooled


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """ONNX graph with dynamic batch and sequence axes. Inputs: `input_ids` int64 [batch, seq] and
    `padding_mask` bool [batch, seq] (True = padding, as everywhere); outputs `logits` and `embeddings`."""
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install -e '.[onnx]' in your clone") from None
    model = model.eval()
    ids = torch.full((2, 16), model.cfg.pad_token_id + 1, dtype=torch.long)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[1, 8:] = True  # an example batch; the graph itself is shape-generic
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=model.cfg.max_positions)
    with _quiet_exporter():
        torch.onnx.export(_OnnxGraph(model).eval(), (ids, mask), str(path), dynamo=True, verbose=False,
                          external_data=False,  # one self-contained file (fine below protobuf's 2 GB)
                          input_names=["input_ids", "padding_mask"], output_names=["logits", "embeddings"],
                          dynamic_shapes={"input_ids": {0: batch, 1: seq}, "padding_mask": {0: batch, 1: seq}})


class _NotForUs(logging.Filter):
    """Drops the log records that start with `prefix`."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _dropped(logger: logging.Logger, prefix: str):
    """`logger` without its records that start with `prefix`, for the duration."""
    logger.addFilter(drop := _NotForUs(prefix))
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter reports things that do not concern this graph; each is dropped by its own text."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    with _dropped(registration, "torchvision is not installed"), warnings.catch_warnings():  # no torchvision op
        # both inputs share the batch and seq axes: the exporter says it keeps one name for each
        warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoder.export", description=__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by train.py (or an export folder)")
    parser.add_argument("out_dir", help="a new (or empty) folder")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx (needs the onnx extra: pip install -e '.[onnx]')")
    parser.add_argument("--int8", action="store_true", help="with --onnx: also model.int8.onnx (int8 linear layers)")
    parser.add_argument("--format", default="encoder", choices=FORMATS,
                        help="encoder: ours (default); hf: for transformers and sentence-transformers; "
                             "sentence-transformers: the encoder alone, for embeddings")
    parser.add_argument("--normalize", action="store_true",
                        help="sentence-transformers: encode gives vectors of unit length (a Normalize module)")
    parser.add_argument("--truncate-dim", type=int,
                        help="sentence-transformers: encode gives each vector's first N dimensions (Matryoshka)")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out_dir, onnx=args.onnx, format=args.format, int8=args.int8,
                     normalize=args.normalize, truncate_dim=args.truncate_dim)
    except (CheckpointError, ConfigError, FileExistsError, ValueError, ImportError) as e:
        parser.exit(2, f"error: {e}\n")
    print(f"exported to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
