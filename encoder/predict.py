"""Command line: python -m encoder.predict PATH "text" ... [--file texts.txt] -> one JSON line per text.

PATH is a checkpoint (.ckpt) or an export folder (python -m encoder.export).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from encoder.errors import CheckpointError, ConfigError
from encoder.predictor import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoder.predict", description=__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by train.py, or a folder from encoder.export")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="a UTF-8 file with one text per line ('-' for standard input); "
                                       "blank lines separate texts and are not predicted")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--embed", action="store_true", help="print sentence embeddings instead of labels")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                        help="onnx: run an export's model.onnx with onnxruntime (export ... --onnx)")
    parser.add_argument("--int8", action="store_true", help="with --backend onnx: the int8 graph (export --onnx --int8)")
    parser.add_argument("--pairs", action="store_true",
                        help="each text is a pair 'first<TAB>second' (models trained with data.text_pair_column)")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the texts
    texts = list(args.texts) + (read_lines(parser, args.file) if args.file else [])
    if not texts:
        parser.exit(2, "error: give texts as arguments or --file texts.txt (blank lines are skipped)\n")
    inputs = [tuple(t.split("\t", 1)) if args.pairs and "\t" in t else t for t in texts]
    try:
        predictor = load_model(args.checkpoint, device=args.device, batch_size=args.batch_size, backend=args.backend,
                               int8=args.int8)
        if args.embed:
            rows = [{"text": t, "embedding": v} for t, v in zip(texts, predictor.embed(inputs).tolist())]
        else:
            rows = [{"text": t, **r} for t, r in zip(texts, predictor.predict(inputs))]
    except (CheckpointError, ConfigError, ValueError, TypeError) as e:
        parser.exit(2, f"error: {e}\n")
    try:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail too
    return 0


def read_lines(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """The non-blank lines of `path` ('-': standard input), or one line naming what is wrong."""
    try:
        with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as handle:
            return [line.rstrip("\r\n") for line in handle if line.strip()]
    except OSError as e:
        parser.exit(2, f"error: cannot read --file {path}: {e.strerror}\n")
    except UnicodeDecodeError as e:
        parser.exit(2, f"error: --file {path} is not valid UTF-8 (byte {e.start}); re-encode it, e.g. iconv -t utf-8\n")


if __name__ == "__main__":
    sys.exit(main())
