"""Tokenizers from the `tokenizers` library: trained on the training split (and cached), or loaded.

Special tokens are fixed so that the model and the collator agree without configuration:
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. Every encoding starts with [CLS], so no row of a
batch is ever all padding (ARCHITECTURE.md). Truncation to `max_length` is done by the tokenizer;
padding is the collator's job, so it is always turned off here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from encoder.core.errors import ConfigError, check_choice

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KINDS = ("wordpiece", "bpe")


def as_text(value) -> str:
    """The one reading of a text, in training and in predict: None is "" (the model still sees
    [CLS] [SEP]), anything else its string."""
    return "" if value is None else str(value)


# a character a tokenizer keeps: not whitespace, not a control character, not one of the zero-width format
# characters (U+200B-U+200F, U+2060-U+206F, U+FEFF, soft hyphen, ...) that BERT's normaliser removes
_KEPT = re.compile(r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff\ufff9-\ufffb]")


def blank(value) -> bool:
    """Whether a text reads as nothing: it holds no character a tokenizer keeps ("", spaces, "\\u200b\\x00")."""
    return not _KEPT.search(as_text(value))


def _build(kind: str, lowercase: bool) -> tuple[Tokenizer, type]:
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return tok, trainers.WordPieceTrainer
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        return tok, trainers.BpeTrainer
    raise ConfigError(f"tokenizer.kind={kind!r} is unknown; choose one of {list(KINDS)}")


# WordPiece reads a "word" longer than this as [UNK]; such runs (URLs, base64, "aaaa...") teach a
# tokenizer nothing and make its training quadratic in their length, so training skips them.
MAX_WORD_CHARS = 100
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_WORD_CHARS + 1))
# bytes that `\s` matches (str.isspace): a run of MAX_WORD_CHARS non-space characters spans at least as many bytes
# between two of these, so a text without such a long run of bytes holds no long word
_SPACE_BYTE = np.zeros(256, dtype=bool)
_SPACE_BYTE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


def _without_long_words(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    """`texts` in lists of `size`, each word longer than MAX_WORD_CHARS replaced by a space. The regex is the
    slow part of tokenizer training on one core (1.1 s for 45 MB, while the Rust trainer reads it on every core),
    and most batches hold no long word: a byte scan rules them out in a fifth of that time, and only a batch it
    cannot rule out goes through the regex."""
    texts = iter(texts)
    while batch := list(itertools.islice(texts, size)):
        raw = np.frombuffer("\n".join(batch).encode("utf-8", "surrogatepass"), dtype=np.uint8)
        edges = np.concatenate(([-1], np.flatnonzero(_SPACE_BYTE[raw]), [raw.size]))
        if (np.diff(edges) > MAX_WORD_CHARS + 1).any():  # a run of more than MAX_WORD_CHARS bytes: maybe a long word
            batch = [_LONG_WORD.sub(" ", t) for t in batch]
        yield batch


def train_tokenizer(texts: Iterable[str] | Callable[[], Iterable[str]], kind: str = "wordpiece",
                    vocab_size: int = 8192, min_frequency: int = 2, lowercase: bool = True) -> Tokenizer:
    """The same texts and settings give the same tokenizer, byte for byte (see `_continuing_pieces`). `texts`: a
    list, or a function that gives the texts afresh each call (read twice, never held in memory: a corpus of
    any size)."""
    if not callable(texts) and not isinstance(texts, (list, tuple)):
        texts = list(texts)  # a one-pass iterator: it is read twice
    read = texts if callable(texts) else lambda: texts
    tok, trainer_cls = _build(kind, lowercase)
    extra = {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()} if kind == "bpe" else {}
    pieces = _continuing_pieces(tok, read()) if kind == "wordpiece" else []
    trainer = trainer_cls(vocab_size=vocab_size, min_frequency=min_frequency,
                          special_tokens=SPECIAL_TOKENS + pieces, show_progress=False, **extra)
    tok.train_from_iterator(_without_long_words(read()), trainer=trainer)
    if pieces:  # they were listed to fix their ids; as tokens they are ordinary word pieces
        saved = json.loads(tok.to_str())
        saved["added_tokens"] = [t for t in saved["added_tokens"] if t["content"] in SPECIAL_TOKENS]
        tok = Tokenizer.from_str(json.dumps(saved))
    return finalize(tok)


def _continuing_pieces(tok: Tokenizer, texts: list[str]) -> list[str]:
    """`##c` for every character c the normalised texts hold, sorted. The WordPiece trainer numbers these
    pieces in the iteration order of a hash map, which changes from process to process, and breaks ties
    between equally frequent merges by those numbers: trained twice on the same texts, it gave vocabularies
    of different sizes with thousands of ids apart (tokenizers #1794). Listed up front, they are numbered
    in this order, and training is deterministic."""
    seen, characters = set(), set()
    for batch in _without_long_words(texts):
        seen.update("".join(batch))
    for c in seen:
        characters.update(tok.normalizer.normalize_str(c))
    return sorted(f"##{c}" for c in characters if not c.isspace())


def finalize(tok: Tokenizer) -> Tokenizer:
    """Add [CLS] ... [SEP] (and pair) templates; no padding, no truncation (we set those per use)."""
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is None or sep is None or tok.token_to_id("[PAD]") is None:
        raise ValueError("the tokenizer has no [CLS], [SEP] or [PAD] token; train one with tokenizer=wordpiece")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.no_padding()
    tok.no_truncation()
    return tok


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; set tokenizer.path to a tokenizer.json")
    return finalize(Tokenizer.from_file(str(path)))


def trim(tok: Tokenizer, texts: Iterable[str]) -> Tokenizer:
    """`tok` with only the tokens `texts` use (and its special tokens), in their original order: a pretrained
    encoder's embeddings are most of a small model's parameters, and a task's text uses a fraction of a
    30k-token vocabulary. Text made of kept tokens reads as before; a word needing a dropped piece is [UNK]."""
    saved = json.loads(tok.to_str())
    if saved["model"]["type"] != "WordPiece":
        raise ConfigError(f"tokenizer.trim_to_data trims WordPiece vocabularies (BERT's); this tokenizer is "
                          f"{saved['model']['type']}")
    probe = Tokenizer.from_str(tok.to_str())
    probe.no_truncation()
    used = {i for e in probe.encode_batch(list(texts)) for i in e.ids}
    used |= {t["id"] for t in saved["added_tokens"]}
    kept = sorted(used)  # the original order
    old = {i: token for token, i in saved["model"]["vocab"].items()}
    saved["model"]["vocab"] = {old[i]: new for new, i in enumerate(kept)}
    new_id = {i: new for new, i in enumerate(kept)}
    for added in saved["added_tokens"]:
        added["id"] = new_id[added["id"]]
    saved["post_processor"] = None  # finalize() rebuilds it with the new ids of [CLS] and [SEP]
    return finalize(Tokenizer.from_str(json.dumps(saved)))


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TokenizerConfig:
    """configs/tokenizer/: train one (kind, vocab_size, ...) or load `path` (a tokenizer.json)."""

    kind: str = "wordpiece"  # wordpiece | bpe: trained here; pretrained: `path` is required
    vocab_size: int = 8192
    min_frequency: int = 2
    lowercase: bool = True
    path: str | None = None
    trim_to_data: bool = False  # a loaded (pretrained) vocabulary cut to the tokens the training text uses
    train_samples: int | None = None  # train on the first N training texts only (a large corpus); None: all

    def __post_init__(self):
        check_choice(self.kind, KINDS + ("pretrained",), "tokenizer.kind")
        if self.kind == "pretrained" and not self.path:
            raise ConfigError("tokenizer=pretrained needs the tokenizer to load: add tokenizer.path=/path/to/"
                              "tokenizer.json (or the folder that holds it)")
        if self.train_samples is not None and self.train_samples < 1:
            raise ConfigError(f"tokenizer.train_samples={self.train_samples} must be a positive number of texts "
                              f"(or null: every training text)")
        if self.vocab_size < len(SPECIAL_TOKENS) + 1 or self.min_frequency < 1:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size} and tokenizer.min_frequency="
                              f"{self.min_frequency} must be positive (vocab_size > {len(SPECIAL_TOKENS)})")


def get_tokenizer(cfg: TokenizerConfig, texts_fn, data_fingerprint: str, cache_dir: Path) -> Tokenizer:
    """Load `cfg.path` if given, else train on `texts_fn()` once and cache by data + settings."""
    if cfg.path:
        return trim(load_tokenizer(cfg.path), texts_fn()) if cfg.trim_to_data else load_tokenizer(cfg.path)
    settings = {"kind": cfg.kind, "vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency,
                "lowercase": cfg.lowercase}
    read = texts_fn
    if cfg.train_samples:  # the first N texts (keyed only when set: the tokenizers cached without it stay valid)
        def read():
            return itertools.islice(texts_fn(), cfg.train_samples)
    # "deterministic": tokenizers cached before training was made deterministic are not reused
    key = (settings, cfg.train_samples) if cfg.train_samples else (settings,)
    cached = Path(cache_dir) / "tokenizers" / f"{fingerprint(*key, data_fingerprint, 'deterministic')}.json"
    if cached.exists():
        return load_tokenizer(cached)
    tok = train_tokenizer(read, **settings)  # (it reads the texts twice, 1,000 at a time)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    try:
        tok.save(str(tmp))
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)  # (a full disk: no partial file left behind)
    return tok
