"""Command line: python -m encoder.export CHECKPOINT OUT_DIR [--onnx]

Writes model.safetensors + config.json + tokenizer.json: a folder that `encoder.load_model(OUT_DIR)`
loads without unpickling anything. --onnx adds model.onnx (dynamic batch and sequence axes;
inputs input_ids int64 and padding_mask bool, True = padding; outputs logits and embeddings).
"""

from __future__ import annotations

import argparse
import sys

from encoder.inference import export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoder.export", description=__doc__)
    parser.add_argument("checkpoint", help="a .ckpt written by train.py")
    parser.add_argument("out_dir", help="a new (or empty) folder")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (needs encoder[onnx])")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out_dir, onnx=args.onnx)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        parser.exit(2, f"error: {e}\n")
    print(f"exported to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
