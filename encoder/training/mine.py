"""Command line: python -m encoder.training.mine EMBEDDER PAIRS OUT [--negatives N] [--range FROM TO] [--margin M] -> OUT.

Hard negatives for task=contrastive, as sentence-transformers' mine_hard_negatives finds them: every distinct
positive of PAIRS (and every text of --corpus) is a candidate; each anchor's candidates are ranked by EMBEDDER (the
cosine of its vectors) or by BM25 (EMBEDDER `bm25`), and its negatives are its best-ranked candidates
- within ranks FROM to TO (1: the best candidate that is not one of its own positives): the very top holds most of
  the false negatives, documents as right as the positive that nobody paired with it;
- scoring at most the positive's own score minus M (the usual false-negative filter; cosine for an embedder).
OUT (.jsonl or .csv) is PAIRS' rows with N more columns, negative_1 ... negative_N, for
    python train.py task=contrastive data=local_files data.data_files.train=OUT data.text_column=... \\
        data.text_pair_column=... 'data.negative_columns=[negative_1]'
An anchor with fewer than N candidates left is left out (the count is printed). Mine the training split only: a
held-out text among the candidates would leak into training.

EMBEDDER: a checkpoint or export of ours, a sentence-transformers or BERT-style folder, all-MiniLM-L6-v2, or bm25
(pip install 'encoder[bm25]'). Memory holds the scores of one block of anchors against one block of the corpus,
whatever the corpus size; the corpus vectors go to a file under --cache-dir, keyed by the embedder's
weights and the corpus, which the next mining of the same corpus reads back instead of embedding it again: memory
stays flat in the corpus size (benchmarks/mining.py measures it).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

from encoder.core.errors import CheckpointError, ConfigError
from encoder.predict import open_output, read_table
from encoder.training.data.teacher import PRETRAINED, embedder, embedder_digest
from encoder.training.packages import default_cache_dir

BLOCK = 1024  # anchors scored at once, and corpus rows per block: the scores in memory are BLOCK x BLOCK


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m encoder.training.mine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embedder", help="a checkpoint or export, a sentence-transformers folder, all-MiniLM-L6-v2, "
                                         "or bm25")
    parser.add_argument("pairs", help="the training pairs: .csv, .tsv, .jsonl or .parquet")
    parser.add_argument("out", help="a new .jsonl or .csv: the pairs with negative_1 ... negative_N")
    parser.add_argument("--anchor-column", default="anchor")
    parser.add_argument("--positive-column", default="positive")
    parser.add_argument("--corpus", help="more candidate documents: a text file, one per line")
    parser.add_argument("--negatives", type=int, default=1, help="negatives per anchor (default 1)")
    parser.add_argument("--range", type=int, nargs=2, default=(10, 50), metavar=("FROM", "TO"),
                        help="the candidate ranks negatives come from (default 10 50)")
    parser.add_argument("--margin", type=float, default=0.05,
                        help="a negative scores at most the positive's score minus this (default 0.05)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts embedded at once")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()), help="default: $ENCODER_CACHE or ~/.cache/encoder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = arguments()
    args = parser.parse_args(argv)
    first, last = args.range
    if args.negatives < 1 or not 1 <= first <= last or args.margin < 0:
        parser.exit(2, f"error: --negatives {args.negatives} must be 1 or more, --range {first} {last} ranks from 1 "
                       f"up (FROM <= TO), and --margin {args.margin} 0 or more\n")
    if args.negatives > last - first + 1:
        parser.exit(2, f"error: --range {first} {last} holds {last - first + 1} ranks, fewer than --negatives "
                       f"{args.negatives}\n")
    if Path(args.out).suffix not in (".jsonl", ".csv"):
        parser.exit(2, f"error: {args.out} must end in .jsonl or .csv\n")
    if Path(args.out).exists():
        parser.exit(2, f"error: {args.out} exists; choose a new file (nothing is overwritten)\n")
    rows = read_table(parser, args.pairs, args.anchor_column, args.positive_column)
    if not rows:
        parser.exit(2, f"error: {args.pairs} holds no pairs\n")
    anchors = [str(r[args.anchor_column]) for r in rows]
    corpus = list(dict.fromkeys([str(r[args.positive_column]) for r in rows] + extra_corpus(parser, args.corpus)))
    index = {text: i for i, text in enumerate(corpus)}
    own = [index[str(r[args.positive_column])] for r in rows]
    positives_of: dict[str, set[int]] = {}  # an anchor paired with several positives: none of them is a negative
    for anchor, doc in zip(anchors, own):
        positives_of.setdefault(anchor, set()).add(doc)
    try:
        score = bm25_scorer(corpus) if args.embedder == "bm25" else embedding_scorer(args, corpus)
    except (CheckpointError, ConfigError, ValueError, ImportError) as e:
        parser.exit(2, f"error: {e}\n")
    kept = 0
    with open_output(args.out, [*rows[0], *(f"negative_{k + 1}" for k in range(args.negatives))]) as write:
        for start in range(0, len(rows), BLOCK):
            block = range(start, min(start + BLOCK, len(rows)))
            # the best last + (its positives) candidates: enough to rank `last` candidates that are not positives
            depth = min(len(corpus), last + max(len(positives_of[anchors[i]]) for i in block))
            top_scores, top_docs, own_scores = score([anchors[i] for i in block], [own[i] for i in block], depth)
            for row, i in enumerate(block):
                ranked = [(s, d) for s, d in zip(top_scores[row].tolist(), top_docs[row].tolist())
                          if d not in positives_of[anchors[i]]][first - 1 : last]
                negatives = [corpus[d] for s, d in ranked if s <= own_scores[row] - args.margin][: args.negatives]
                if len(negatives) == args.negatives:
                    write({**rows[i], **{f"negative_{k + 1}": text for k, text in enumerate(negatives)}})
                    kept += 1
    print(f"{args.out}: {kept} of {len(rows)} pairs with {args.negatives} negative(s) each (ranks {first}-{last}, "
          f"margin {args.margin}); {len(rows) - kept} left out with too few candidates", file=sys.stderr)
    return 0


def extra_corpus(parser: argparse.ArgumentParser, path: str | None) -> list[str]:
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        parser.exit(2, f"error: cannot read --corpus {path}: {e}\n")


def embedding_scorer(args, corpus: list[str]):
    """score(anchors, their positives' rows, depth) -> ([anchors, depth] best cosines, their corpus rows, [anchors]
    each anchor's cosine with its positive), from an embedder's unit vectors; the corpus's cached on disk, read back
    a block at a time."""
    name = str(PRETRAINED[args.embedder](args.cache_dir)) if args.embedder in PRETRAINED else args.embedder
    if not Path(name).exists():
        raise ConfigError(f"{args.embedder} is neither a file, a folder, bm25 nor a known name such as "
                          f"{', '.join(PRETRAINED)}")
    model = embedder(name, args.batch_size)
    path = Path(args.cache_dir) / "mined" / key(embedder_digest(Path(name)), corpus)
    if not path.exists():
        write_vectors(model, corpus, path)

    def score(texts: list[str], own: list[int], depth: int):
        queries = model.embed(texts, normalize=True)
        best_scores, best_docs = torch.empty(len(texts), 0), torch.empty(len(texts), 0, dtype=torch.long)
        own_scores = torch.zeros(len(texts))
        own = torch.tensor(own)
        for begin, documents in read_vectors(path):  # a running top-`depth` over blocks of the corpus
            scores = queries @ documents.T
            here = (own >= begin) & (own < begin + len(documents))
            own_scores[here] = scores[here, own[here] - begin]
            every_score = torch.cat([best_scores, scores], 1)
            every_doc = torch.cat([best_docs, torch.arange(begin, begin + len(documents)).expand_as(scores)], 1)
            best_scores, at = every_score.topk(min(depth, every_score.shape[1]), dim=1)
            best_docs = every_doc.gather(1, at)
        return best_scores, best_docs, own_scores.tolist()

    return score


def write_vectors(model, corpus: list[str], path: Path) -> None:
    """The corpus's unit vectors to `path` (.npy), block by block (memory holds one), under a temporary name renamed
    when complete: a run stopped half-way leaves no half-written cache."""
    map_large_allocations()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:
            for begin in range(0, len(corpus), BLOCK):
                block = model.embed(corpus[begin : begin + BLOCK], normalize=True).numpy().astype("<f4")
                if begin == 0:
                    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                             "shape": (len(corpus), block.shape[1])})
                f.write(block.tobytes())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def map_large_allocations() -> None:
    """glibc's malloc raises its mmap threshold each time a large mapped block is freed; the model's activations
    then come from the heap, which keeps what it frees resident, and a process embedding block after block grows
    with the corpus (first minings of 1,000 pairs: 506, 862 and 2,198 MiB at 1x, 10x and 100x the corpus). Fixed at
    1 MiB (M_MMAP_THRESHOLD, as MALLOC_MMAP_THRESHOLD_ would set it), every block that large is mapped and handed
    back when freed. Elsewhere than glibc there is no mallopt: nothing to do."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, 1 << 20)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def read_vectors(path: Path):
    """(first row, [BLOCK, width] tensor) for each block of a .npy file of vectors, read block by block (not
    memory-mapped: the pages of a mapping would stay resident, and memory would grow with the corpus)."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        (rows, width), _, _ = np.lib.format.read_array_header_1_0(f)
        for begin in range(0, rows, BLOCK):
            count = min(BLOCK, rows - begin) * width
            yield begin, torch.from_numpy(np.fromfile(f, dtype="<f4", count=count).reshape(-1, width))


def key(embedder_id: str, corpus: list[str]) -> str:
    """The cache file of these texts embedded by that embedder."""
    digest = hashlib.sha256(embedder_id.encode())
    for text in corpus:
        digest.update(text.encode("utf-8") + b"\0")
    return f"{digest.hexdigest()[:24]}.npy"


def bm25_scorer(corpus: list[str]):
    """score(...) as `embedding_scorer`'s, from BM25 (bm25s, its defaults; English stopwords)."""
    try:
        import bm25s
    except ImportError:
        raise ImportError("mining with bm25 needs bm25s: pip install 'encoder[bm25]'") from None
    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    def score(texts: list[str], own: list[int], depth: int):
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        docs, scores = index.retrieve(tokens, k=depth, show_progress=False, n_threads=0)
        mine = [float(index.get_scores(words)[d]) for words, d in zip(bm25s.tokenize(texts, stopwords="en",
                                                                     return_ids=False, show_progress=False), own)]
        return torch.from_numpy(np.asarray(scores, dtype=np.float32)), torch.from_numpy(np.asarray(docs)), mine

    return score


if __name__ == "__main__":
    sys.exit(main())
