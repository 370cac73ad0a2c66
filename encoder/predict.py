"""Command line: python -m encoder.predict PATH "text" ... [--file texts.txt] -> one JSON line per text.

PATH is a checkpoint (.ckpt) or an export folder (python -m encoder.export).
"""

from __future__ import annotations

import argparse
import json
import sys

from encoder.inference import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoder.predict", description=__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by train.py, or a folder from encoder.export")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="a UTF-8 file with one text per line ('-' for standard input)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--embed", action="store_true", help="print sentence embeddings instead of labels")
    parser.add_argument("--pairs", action="store_true",
                        help="each text is a pair 'first<TAB>second' (models trained with data.text_pair_column)")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the texts
    texts = list(args.texts)
    if args.file:
        try:
            handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8", errors="replace")
        except OSError as e:
            parser.error(f"cannot read --file {args.file}: {e.strerror}")
        with handle:
            texts += [line.rstrip("\n") for line in handle]
    if not texts:
        parser.error("give texts as arguments or --file texts.txt")
    inputs = [tuple(t.split("\t", 1)) if args.pairs and "\t" in t else t for t in texts]
    try:
        predictor = load_model(args.checkpoint, device=args.device, batch_size=args.batch_size)
        if args.embed:
            rows = [{"text": t, "embedding": v} for t, v in zip(texts, predictor.embed(inputs).tolist())]
        else:
            rows = [{"text": t, **r} for t, r in zip(texts, predictor.predict(inputs))]
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
