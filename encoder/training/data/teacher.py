"""The teacher's half of distillation (training layer): a teacher reads the raw texts once, before training, and
its outputs become a `teacher` column of the data, cached by `datasets` next to the tokenized data and keyed by
the teacher's weights and the data's fingerprint; it never runs inside the training loop.

- `build_task(name, distill)`: the task a run trains: the task called `name` itself, taught by a task teacher
  (`encoder/tasks/distillation.py`'s `Distilled`: its loss and metrics), or a task that learns from a teacher by
  itself (`needs_teacher`: task=embedding), given the width of the teacher's vectors.
- `add_teacher_column(task, raw, ...)`: the raw splits with what the task learns from its teacher
  (`Task.learns_from`): a task teacher's "outputs", logits (classification) or value (regression), read by
  `load_model`; or a sentence embedder's L2-normalised "embeddings" (`embedder`: a checkpoint or export of ours,
  or a BERT-style or sentence-transformers folder).
- `distill.extra_text`: unlabelled text (an offline source or files) the teacher labels, appended to the
  training split, without any text that reads as a validation or test text.
- `distill.augment`: N variants of each training text by rules that need no external resource (Tang et al.
  2019), seeded, written once to the cache and labelled by the teacher only.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import concatenate_datasets, load_dataset

from encoder import tasks
from encoder.core import checkpoint
from encoder.core.digests import sha256
from encoder.core.errors import ConfigError, DataError
from encoder.core.model import TaskModel
from encoder.core.predictor import Predictor
from encoder.core.tokenizer import as_text, fingerprint, load_tokenizer
from encoder.serving import load_model
from encoder.tasks import Task
from encoder.tasks.distillation import Distilled, check_teaching
from encoder.training import pretrained
from encoder.training.data.augment import augment
from encoder.training.data.loading import load_error
from encoder.training.data.sources import SOURCES
from encoder.training.pretrained import PRETRAINED

log = logging.getLogger(__name__)
teacher_batches_run = 0  # how many batches a task teacher has labelled in this process (tests read it)


def teacher_options(distill, cache_dir: str | Path | None = None) -> dict | None:
    """DistillConfig's fields as build_task takes them, with a known teacher name (all-MiniLM-L6-v2) resolved to
    its folder (fetched once into `cache_dir`); None without a teacher. A teacher that is not there is one line."""
    if not distill.teacher:
        return None
    options = dataclasses.asdict(distill)
    if options["teacher"] in PRETRAINED:
        options["teacher"] = str(PRETRAINED[options["teacher"]](cache_dir))
    if not Path(options["teacher"]).exists():
        raise ConfigError(f"distill.teacher={options['teacher']} is neither a file, a folder nor a known name such as "
                          f"{', '.join(PRETRAINED)}")
    return options


def build_task(name: str, distill: dict | None, loss: dict | None = None,
               truncate_dim: int | None = None) -> Task | Distilled:
    """The task called `name` (encoder/tasks/) with the loss `task.loss` configures (and `task.truncate_dim`),
    itself or taught by `distill["teacher"]` (DistillConfig's fields)."""
    task = tasks.get(name).with_loss(loss or {}).evaluated_at(truncate_dim)
    check_teaching(task, distill or {})
    if not distill or not distill.get("teacher"):
        return task
    if task.needs_teacher or task.teachable:  # a task that learns from a teacher by itself: it needs its width
        width = embedder(distill["teacher"], distill.get("batch_size", 128)).embed(["width"]).shape[-1]
        return task.with_teacher(teacher_width=width, **distill)
    return Distilled(task, **distill)


def add_teacher_column(task: Task | Distilled, raw: dict, data, label_names: list[str] | None,
                       cache_dir: Path) -> dict:
    """The raw splits (after the label checks, before tokenization) with the `teacher` column of what `task`
    learns from its teacher (`Task.learns_from`); `raw` itself for a task without one."""
    if task.learns_from == "outputs":
        return _task_outputs(task, raw, data, label_names, cache_dir)
    if task.learns_from == "embeddings":
        return _embeddings(task, raw, data, cache_dir)
    return raw


def _task_outputs(task: Distilled, raw: dict, data, label_names: list[str] | None, cache_dir: Path) -> dict:
    """`raw` splits with a `teacher` column: the teacher's outputs (logits, or its value), with the extra text and
    the augmented variants it labels appended to train."""
    predictor = load_model(task.teacher, device="cuda" if torch.cuda.is_available() else "cpu",
                           batch_size=task.batch_size)
    if predictor.task_name != task.name or predictor.label_names != label_names:
        raise DataError(f"distill.teacher={task.teacher} was trained for task={predictor.task_name} with labels "
                        f"{predictor.label_names}; this run is task={task.name} with labels {label_names}: "
                        f"train the teacher on this data first")
    digest = _weights_digest(Path(task.teacher))
    columns = [c for c in (data.text_column, data.text_pair_column, data.label_column) if c]
    out = {split: _label(ds.select_columns(columns), predictor, data, digest) for split, ds in raw.items()}
    cached = next((f["filename"] for ds in out.values() for f in ds.cache_files), "memory")
    log.info("distillation: teacher %s (weights %s), its outputs cached in %s (reused while the teacher and "
             "the data are unchanged)", task.teacher, digest, Path(cached).parent)
    if task.extra_text:
        extra = _extra_texts(task.extra_text, task.extra_text_column, data, raw, cache_dir, predictor.tokenizer)
        extra = _label(extra, predictor, data, digest)
        out["train"] = _concatenate(out["train"], extra, data)
        log.info("distillation: %d extra texts labelled by the teacher join %d training examples",
                 len(extra), len(raw["train"]))
    if task.augment:
        variants = _variants(raw, data, task.augment, task.augment_seed, cache_dir, predictor.tokenizer)
        if variants is not None:
            out["train"] = _concatenate(out["train"], _label(variants, predictor, data, digest), data)
        log.info("distill.augment: %d variants of the training texts, labelled by the teacher, join them",
                 len(variants or []))
    return out


def _embeddings(task: Task, raw: dict, data, cache_dir: Path) -> dict:
    """`raw` splits with a `teacher` column: the teacher's L2-normalised sentence vector of each text (extra text
    appended to train); for a task whose example is several texts (`texts_apart`), the vectors of each of its texts
    ([texts, width] per example: the anchor, the positive, the negatives the split has)."""
    predictor = embedder(task.teacher, task.batch_size)
    digest = embedder_digest(Path(task.teacher))
    if task.extra_text:
        extra = _extra_texts(task.extra_text, task.extra_text_column, data, raw, cache_dir, predictor.tokenizer)
        train = raw["train"].select_columns([data.text_column])
        raw = {**raw, "train": concatenate_datasets([train, extra.cast(train.features)])}  # (.txt: string, csv: large)
        log.info("task=%s: %d extra texts join %d training texts", task.name, len(extra),
                 len(raw["train"]) - len(extra))

    def run_teacher(batch: dict, columns: list[str]) -> dict:
        vectors = [predictor.embed([as_text(t) for t in batch[c]], normalize=True) for c in columns]
        return {"teacher": (torch.stack(vectors, 1) if task.texts_apart else vectors[0]).tolist()}

    out = {}
    for split, ds in raw.items():
        if task.texts_apart:  # every text of an example, and what else it carries (a graded pair's score)
            texts = [c for c in (data.text_column, data.text_pair_column, *data.negative_columns) if c in ds.column_names]
            kept = texts + [c for c in task.carries if c in ds.column_names]
        else:
            texts = kept = [data.text_column]
        out[split] = ds.select_columns(kept).map(
            run_teacher, fn_kwargs={"columns": texts}, batched=True, batch_size=1024,
            desc=f"teacher embeddings ({split})",
            new_fingerprint=fingerprint(ds._fingerprint, *kept, digest, "embedding-v1"))
    log.info("task=%s: teacher %s (%d-wide vectors, weights %s)", task.name, task.teacher,
             torch.tensor(next(iter(out.values()))[0]["teacher"]).shape[-1], digest)
    return out



@functools.lru_cache(maxsize=2)  # (build_task() asks it for the width, add_teacher_column() for the vectors: one load)
def embedder(teacher: str, batch_size: int = 128) -> Predictor:
    """A teacher's `embed`: a checkpoint or export of ours (its own pooled vectors, through its task's model), or a
    BERT-style or sentence-transformers folder, read as `model.init_from` reads it (encoder/training/pretrained.py:
    its last layer pooled as its 1_Pooling config says, the mean when it says nothing, as all-MiniLM-L6-v2). A
    known name arrives here as its folder (`teacher_options`)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(teacher)  # (teacher_options checked that it exists)
    if path.is_file() or checkpoint.is_export(path):
        return load_model(path, device=device, batch_size=batch_size)
    folder = pretrained.load(str(path))
    tokenizer = load_tokenizer(folder.tokenizer_path)
    cfg = checkpoint.full_config({**folder.arch, "pooling": folder.pooling}, tokenizer.to_str())
    model = TaskModel(cfg)
    model.load_state_dict({k: v for k, v in folder.state.items() if k.startswith("encoder.")}, strict=False)
    return Predictor(model, tokenizer, min(cfg.max_positions, 512), batch_size).to(device)


def embedder_digest(path: Path) -> str:
    """Identifies an embedder: its weights' digest (ours), its model.safetensors' (a BERT-style folder)."""
    if path.is_file() or checkpoint.is_export(path):
        return _weights_digest(path)
    return sha256(path / "model.safetensors")[:16]


def _weights_digest(path: Path) -> str:
    """Identifies the teacher: the sha256 of its file (a .ckpt) or of its weights and config (an export)."""
    files = [path] if path.is_file() else [path / name for name in checkpoint.EXPORT_FILES]
    return hashlib.sha256("".join(sha256(f) for f in files).encode()).hexdigest()[:16]


def _label(ds, predictor, data, digest: str):
    """`ds` with the teacher's outputs per example (cached by `datasets`, keyed by data and teacher)."""
    def run_teacher(batch: dict) -> dict:
        global teacher_batches_run
        teacher_batches_run += 1
        texts = [as_text(t) for t in batch[data.text_column]]  # the reading of a text training uses
        if data.text_pair_column:
            texts = list(zip(texts, [as_text(t) for t in batch[data.text_pair_column]]))
        return {"teacher": predictor._run(texts, predictor.model).tolist()}

    return ds.map(run_teacher, batched=True, batch_size=1024, desc="teacher outputs",
                  new_fingerprint=fingerprint(ds._fingerprint, digest, "teacher-v1"))


def _extra_texts(source: str, column: str, data, raw: dict, cache_dir: Path, tokenizer):
    """Unlabelled texts from an offline source or files, without any text of the evaluation splits: compared
    as `tokenizer` reads them (normalised and split into words), so that case, accent and spacing variants of
    an evaluation text are dropped too."""
    if source in SOURCES:
        files = SOURCES[source](cache_dir)
    elif glob.glob(source):
        files = {"train": source}
    else:
        raise DataError(f"distill.extra_text={source} is neither an offline source {sorted(SOURCES)} nor "
                        f"existing files")
    suffix = Path(next(iter(files.values()))).suffix.lstrip(".")
    builder = {"txt": "text", "jsonl": "json"}.get(suffix, suffix)
    try:
        extra = load_dataset(builder, data_files=files)["train"]
    except Exception as e:  # noqa: BLE001 - one line
        raise load_error(e, f"distill.extra_text={source}", builder) from None
    if column not in extra.column_names:
        raise DataError(f"distill.extra_text_column={column!r} is not a column of {source}; "
                        f"its columns are {extra.column_names}")
    read = _reading(tokenizer)
    held_out = {read(t) for split in ("validation", "test") if split in raw for t in raw[split][data.text_column]}
    kept = extra.filter(lambda b: [bool(t and t.strip()) and read(t) not in held_out for t in b[column]],
                        batched=True, desc="dropping evaluation and empty texts")
    log.info("distill.extra_text: %d of %d texts kept (evaluation and empty texts removed)", len(kept), len(extra))
    return kept.select_columns([column]).rename_column(column, data.text_column) if column != data.text_column \
        else kept.select_columns([column])


def _variants(raw: dict, data, n: int, seed: int, cache_dir: Path, tokenizer):
    """The variants of the training texts as a dataset, written once to the cache (so the teacher's labels of
    them are cached too), without any that reads as an evaluation text or is empty."""
    train = raw["train"]
    path = Path(cache_dir) / "augmented" / f"{fingerprint(train._fingerprint, data.text_column, n, seed, 'v1')}.jsonl"
    if not path.is_file():
        read = _reading(tokenizer)
        held_out = {read(t) for split in ("validation", "test") if split in raw for t in raw[split][data.text_column]}
        variants = [v for v in augment([as_text(t) for t in train[data.text_column]], n, seed)
                    if v.strip() and read(v) not in held_out]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text("".join(json.dumps({data.text_column: v}) + "\n" for v in variants), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return load_dataset("json", data_files=str(path), split="train") if path.stat().st_size else None


def _reading(tokenizer):
    """text -> its words as `tokenizer` sees them (after its normaliser and pre-tokenizer), case folded."""
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer

    def read(text) -> str:
        text = normalizer.normalize_str(text or "") if normalizer else (text or "")
        words = [w for w, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer else text.split()
        return " ".join(w.strip() for w in words if w.strip()).casefold()

    return read


def _concatenate(train, extra, data):
    """Training examples, then the extra texts (gold label: none)."""
    extra = extra.add_column(data.label_column, [None] * len(extra))
    extra = extra.cast(train.features)
    return concatenate_datasets([train, extra])
