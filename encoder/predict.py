"""Command line: python -m encoder.predict PATH "text" ... [--file FILE] -> predictions.

PATH is a checkpoint (.ckpt) or an export folder (python -m encoder.export).

--file reads plain text (one text per line), or a table: .csv, .tsv, .jsonl or .parquet, whose text is
in --text-column (default `text`; --text-pair-column for pairs). A table's other columns are kept
beside the prediction (a prediction field that a column already names is called `predicted_<field>`).
Output: JSON lines on stdout, or --output FILE (.jsonl or .csv; in csv a dict field such as `probs`
becomes one column per key; with --embed also .npy: one float32 row per text, in input order, for vector stores
and numpy.load). --embed --truncate-dim N keeps each vector's first N dimensions, --normalize makes it unit length.
Texts are predicted in blocks, with a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from encoder.core.errors import CheckpointError, ConfigError
from encoder.serving import load_model

TABLES = (".csv", ".tsv", ".jsonl", ".parquet")
BLOCK = 8192  # texts predicted at a time: memory stays bounded, batches inside a block are sorted by length


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m encoder.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt written by train.py, or a folder from encoder.export")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="one text per line ('-' for standard input; blank lines are skipped), or a "
                                       "table: .csv, .tsv, .jsonl, .parquet")
    parser.add_argument("--text-column", default="text", help="a table's text column (default: text)")
    parser.add_argument("--text-pair-column", help="a table's second text column (models trained on pairs)")
    parser.add_argument("--output", help="write here instead of stdout: .jsonl or .csv (with --embed also .npy)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--embed", action="store_true", help="print sentence embeddings instead of labels")
    parser.add_argument("--truncate-dim", type=int, help="with --embed: the first N dimensions of each vector (a "
                                                         "model trained with task.loss.matryoshka_dims)")
    parser.add_argument("--normalize", action="store_true", help="with --embed: vectors of unit length (after "
                                                                 "--truncate-dim), for dot-product search")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                        help="onnx: run an export's model.onnx with onnxruntime (export ... --onnx)")
    parser.add_argument("--int8", action="store_true", help="with --backend onnx: the int8 graph (export --onnx --int8)")
    parser.add_argument("--threshold", type=float, help="models that predict several labels per text (task=multilabel): "
                                                         "the probability a label needs (default 0.5)")
    parser.add_argument("--pairs", action="store_true",
                        help="each text is a pair 'first<TAB>second' (models trained with data.text_pair_column)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_intermixed_args(argv)  # options may come before or after the texts
    if args.output and Path(args.output).suffix not in (".jsonl", ".csv", ".npy"):
        parser.exit(2, f"error: --output {args.output} must end in .jsonl or .csv (with --embed also .npy)\n")
    if args.output and Path(args.output).suffix == ".npy" and not args.embed:
        parser.exit(2, f"error: --output {args.output} holds vectors: add --embed, or write .jsonl or .csv\n")
    if (args.truncate_dim is not None or args.normalize) and not args.embed:
        parser.exit(2, "error: --truncate-dim and --normalize shape embeddings: add --embed\n")
    if args.output and Path(args.output).exists():
        parser.exit(2, f"error: --output {args.output} exists; choose a new file (nothing is overwritten)\n")
    if args.output and not Path(args.output).resolve().parent.is_dir():
        parser.exit(2, f"error: --output {args.output}: the folder {Path(args.output).parent} does not exist; "
                       f"create it first\n")
    rows = read_rows(parser, args)
    if not rows and args.file:
        parser.exit(2, f"error: --file {args.file} holds no texts (it is empty, blank or a header without rows)\n")
    if not rows:
        parser.exit(2, "error: give texts as arguments or --file FILE (blank lines are skipped)\n")
    try:
        predictor = load_model(args.checkpoint, device=args.device, batch_size=args.batch_size, backend=args.backend,
                               int8=args.int8)
    except (CheckpointError, ConfigError, ValueError, TypeError, ImportError) as e:
        parser.exit(2, f"error: {e}\n")
    if args.threshold is not None:
        set_threshold(parser, predictor, args)
    try:
        if args.output and args.output.endswith(".npy"):
            write_vectors(predictor, rows, args)
            return 0
        with open_output(args.output, columns(rows)) as write:
            for block in progress(rows, len(rows)):
                inputs = [inputs_of(r, args) for r in block]
                if args.embed:
                    results = [{"embedding": v} for v in embedded(predictor, inputs, args).tolist()]
                else:
                    results = predictor.predict(inputs)
                for row, result in zip(block, results):
                    write(merged(row, result))
    except (CheckpointError, ConfigError, ValueError, TypeError) as e:
        parser.exit(2, f"error: {e}\n")
    except BrokenPipeError:  # the reader stopped early (`| head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail too
    return 0


def write_vectors(predictor, rows: list[dict], args) -> None:
    """--embed --output X.npy: a [texts, width] float32 array in input order, filled block by block (memory holds
    one block) under a temporary name, renamed when complete: no half-written file sits at X.npy."""
    target = Path(args.output)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    vectors = None
    try:
        for start, block in zip(range(0, len(rows), BLOCK), progress(rows, len(rows))):
            block_vectors = embedded(predictor, [inputs_of(r, args) for r in block], args).numpy().astype(np.float32)
            if vectors is None:
                vectors = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32,
                                                    shape=(len(rows), block_vectors.shape[1]))
            vectors[start : start + len(block)] = block_vectors
        vectors.flush()
        del vectors  # (closes the mapping before the rename)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def embedded(predictor, inputs: list, args):
    """The inputs' vectors as --truncate-dim and --normalize shape them."""
    return predictor.embed(inputs, truncate_dim=args.truncate_dim, normalize=args.normalize)


def set_threshold(parser: argparse.ArgumentParser, predictor, args) -> None:
    """--threshold on a predictor that has one (several labels per text), or one line saying why not."""
    if not hasattr(predictor, "threshold"):
        parser.exit(2, f"error: --threshold applies to models that predict several labels per text "
                       f"(task=multilabel); {args.checkpoint} is task={predictor.task_name}\n")
    if not 0.0 <= args.threshold <= 1.0:
        parser.exit(2, f"error: --threshold {args.threshold} must be a probability in [0, 1]\n")
    predictor.threshold = args.threshold


def read_rows(parser: argparse.ArgumentParser, args) -> list[dict]:
    """Every input as a row: {"text": ...} for arguments and plain lines, a table's rows as they are."""
    rows = [{"text": t} for t in args.texts]
    if args.file and Path(args.file).suffix.lower() in TABLES:
        rows += read_table(parser, args.file, args.text_column, args.text_pair_column)
    elif args.file:
        rows += [{"text": t} for t in read_lines(parser, args.file)]
    return rows


def inputs_of(row: dict, args):
    if args.text_pair_column and args.file and args.text_pair_column in row:
        return (row[args.text_column] or "", row[args.text_pair_column] or "")
    text = row.get(args.text_column, row.get("text"))
    text = "" if text is None else text
    return tuple(text.split("\t", 1)) if args.pairs and isinstance(text, str) and "\t" in text else text


def read_lines(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """The non-blank lines of `path` ('-': standard input), or one line naming what is wrong."""
    try:
        with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as handle:
            return [line.rstrip("\r\n") for line in handle if line.strip()]
    except OSError as e:
        parser.exit(2, f"error: cannot read --file {path}: {e.strerror}\n")
    except UnicodeDecodeError as e:
        parser.exit(2, f"error: --file {path} is not valid UTF-8 (byte {e.start}); re-encode it, e.g. iconv -t utf-8\n")


def read_table(parser: argparse.ArgumentParser, path: str, column: str, pair_column: str | None) -> list[dict]:
    """A csv/tsv/jsonl/parquet file's rows, after checking its text column(s) exist."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet  # only for parquet files: serving itself never needs pyarrow

            rows = pyarrow.parquet.read_table(path).to_pylist()
        elif suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            if not all(isinstance(r, dict) for r in rows):
                parser.exit(2, f"error: --file {path}: every line must be one JSON object\n")
        else:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
                header = next(reader, [])
                duplicated = sorted({h for h in header if header.count(h) > 1})
                if duplicated:
                    parser.exit(2, f"error: --file {path} names the column {duplicated[0]!r} twice in its header; "
                                   f"give every column its own name\n")
                rows = []
                for values in reader:
                    if values and len(values) != len(header):  # a cell lost or shifted: refuse, never guess
                        parser.exit(2, f"error: --file {path}: line {reader.line_num} has {len(values)} cells where "
                                       f"the header has {len(header)}; quote cells that hold the delimiter\n")
                    if values:
                        rows.append(dict(zip(header, values)))
    except OSError as e:
        parser.exit(2, f"error: cannot read --file {path}: {e.strerror or e}\n")
    except UnicodeDecodeError as e:
        parser.exit(2, f"error: --file {path} is not valid UTF-8 (byte {e.start}); re-encode it, e.g. iconv -t utf-8\n")
    except (ValueError, csv.Error) as e:  # a line that is not JSON, a damaged parquet file, a broken csv
        parser.exit(2, f"error: --file {path} cannot be read as {suffix[1:]}: {str(e).splitlines()[0]}\n")
    for option, name in (("--text-column", column), ("--text-pair-column", pair_column)):
        if name is None or not rows:
            continue
        if name not in rows[0]:
            parser.exit(2, f"error: --file {path} has no column {name!r} ({option}); its columns are {list(rows[0])}\n")
        missing = next((i for i, row in enumerate(rows) if row.get(name) is None), None)
        if missing is not None:  # (a jsonl line without the key, or null): never predicted as an empty text
            parser.exit(2, f"error: --file {path}: row {missing + 1} has no {name!r} ({option}); give every row "
                           f"its text (an empty string for an empty one)\n")
    return rows


def columns(rows: list[dict]) -> list[str]:
    """Every input column as csv output writes it (a dict's keys as `<column>.<key>`), in the order they first
    appear: the lines of a jsonl file may hold different keys."""
    return list(dict.fromkeys(f"{key}.{sub}" if isinstance(value, dict) else key for row in rows
                              for key, value in row.items() for sub in (value if isinstance(value, dict) else [None])))


def merged(row: dict, result: dict) -> dict:
    """The input row, then the prediction's fields (renamed `predicted_<field>` where a column has the name)."""
    return {**row, **{(f"predicted_{k}" if k in row and k != "text" else k): v for k, v in result.items()}}


def progress(rows: list, total: int) -> Iterator[list]:
    """`rows` in blocks, with a progress bar on stderr when it is a terminal."""
    with tqdm(total=total, unit="text", disable=None, file=sys.stderr) as bar:
        for start in range(0, total, BLOCK):
            block = rows[start : start + BLOCK]
            yield block
            bar.update(len(block))


class open_output:
    """A context manager giving write(row): JSON lines to stdout or a .jsonl file, or csv rows (whose header is
    every input column, then the prediction's fields of the first row; dict fields spread into `<field>.<key>`
    columns, lists as JSON; a row without a column leaves its cell empty)."""

    def __init__(self, path: str | None, columns: list[str] = ()):
        self.path, self.columns = path, list(columns)

    def __enter__(self):
        self.handle = open(self.path, "x", newline="", encoding="utf-8") if self.path else sys.stdout
        self.csv = None
        return self.write

    def write(self, row: dict) -> None:
        if self.path and self.path.endswith(".csv"):
            flat = {}
            for k, v in row.items():
                if isinstance(v, dict):
                    flat.update({f"{k}.{sub}": x for sub, x in v.items()})
                else:
                    flat[k] = json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v
            if self.csv is None:
                fields = [*self.columns, *(k for k in flat if k not in self.columns)]
                self.csv = csv.DictWriter(self.handle, fieldnames=fields, restval="")
                self.csv.writeheader()
            self.csv.writerow(flat)
        else:
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def __exit__(self, *exc) -> None:
        self.handle.flush()
        if self.path:
            self.handle.close()


if __name__ == "__main__":
    sys.exit(main())
