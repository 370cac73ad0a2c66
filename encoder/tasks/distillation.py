"""Task-specific knowledge distillation: a small model learns a task from a trained teacher's outputs as
well as from the gold labels (Hinton et al. 2015; DistilBERT; TinyBERT's task stage; Tang et al. 2019).

It is a way to train a task, not a task of its own: `taught(task, distill)` wraps classification or
regression, and the student's checkpoints are ordinary checkpoints of that task (load_model, predict,
export and ONNX work unchanged).

- The teacher is a checkpoint or export of the same task and labels, with its own tokenizer. It reads
  the raw texts once per example, in inference mode, before training (`prepare`); its outputs
  (classification: logits, regression: its value) become a `teacher` column of the training and
  validation data, cached by `datasets` next to the tokenized data and keyed by the teacher's weights
  and the data's fingerprint. The teacher never runs inside the training loop.
- Loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy on the gold labels
  (classification, temperature T), or alpha * MSE to the teacher's value + (1 - alpha) * MSE to the
  gold value (regression). Examples without a gold label (extra text) count in the teacher term only.
- `extra_text`: unlabelled text (an offline source or files) that only the teacher labels, appended to
  the training split. Any text that is also in the validation or test split is removed first.
- Validation also logs `agreement` with the teacher (classification: same label; regression: Pearson).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoder import checkpoint
from encoder.errors import ConfigError, DataError
from encoder.model import ModelConfig
from encoder.predictor import load_model
from encoder.tasks import Step, Task
from encoder.tokenizer import as_text, fingerprint

log = logging.getLogger(__name__)
UNLABELLED = {"class": -100, "number": float("nan")}  # the gold label of an extra text
teacher_batches_run = 0  # how many batches the teacher has labelled in this process (tests read it)


def check_teaching(task: Task, distill: dict) -> None:
    """The rules of teaching `task` with `distill` (DistillConfig's fields): one ConfigError line each."""
    if task.needs_teacher and not distill.get("teacher"):
        raise ConfigError(f"task={task.name} learns a teacher's outputs: set distill.teacher (e.g. all-MiniLM-L6-v2, a "
                          f"sentence-transformers folder, or a .ckpt / export of ours)")
    if task.needs_teacher and distill.get("augment"):
        raise ConfigError(f"distill.augment varies labelled training texts for a task's teacher; task={task.name} "
                          f"learns from any text: add more with distill.extra_text and set distill.augment=0")
    if distill.get("teacher") and task.labels not in UNLABELLED and not task.needs_teacher:
        raise ConfigError(f"distill.teacher: task={task.name} cannot be distilled yet (only classification and "
                          f"regression: their teachers give one output per text); drop distill.teacher")


def taught(task: Task, distill: dict | None) -> Task:
    """`task` itself, or `task` taught by `distill["teacher"]`."""
    check_teaching(task, distill or {})
    if not distill or not distill.get("teacher"):
        return task
    if task.needs_teacher:  # a task that learns from a teacher by itself (embedding)
        return task.with_teacher(**distill)
    return Distilled(task, **distill)


@dataclass
class DistilledStep(Step):
    teacher: torch.Tensor | None = None


class Distilled(Task):
    def __init__(self, base: Task, teacher: str, temperature: float = 2.0, alpha: float = 0.5,
                 extra_text: str | None = None, extra_text_column: str = "text", batch_size: int = 128,
                 augment: int = 0, augment_seed: int = 0):
        self.base = base
        self.teacher, self.temperature, self.alpha = teacher, temperature, alpha
        self.extra_text, self.extra_text_column, self.batch_size = extra_text, extra_text_column, batch_size
        self.augment, self.augment_seed = augment, augment_seed
        for key in ("name", "labels", "words", "masks_tokens", "monitor", "minimised", "train_metric", "onnx",
                    "confusion_matrix", "model_class", "predictor_class", "example_input", "label_text", "label_values",
                    "collate_labels"):
            setattr(self, key, getattr(base, key))  # what is saved and served is the base task's
        self.carries = ("teacher",)

    def target(self, label, mapping):
        """An extra text has no gold label: UNLABELLED[kind], which the loss and metrics skip."""
        return UNLABELLED[self.labels] if label is None else self.base.target(label, mapping)

    # ---- training -----------------------------------------------------------------------------
    def step(self, model: nn.Module, batch: dict) -> DistilledStep:
        base = self.base.step(model, batch)
        student, teacher, gold = base.predictions, batch["teacher"].float(), batch["labels"]
        if self.labels == "class":
            T = self.temperature
            soft = F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                            reduction="batchmean") * T * T
            labelled = gold != UNLABELLED["class"]
            hard = F.cross_entropy(student[labelled], gold[labelled]) if labelled.any() else student.sum() * 0
        else:
            soft = F.mse_loss(student, teacher.squeeze(-1))
            labelled = ~torch.isnan(gold)
            hard = F.mse_loss(student[labelled], gold[labelled].float()) if labelled.any() else student.sum() * 0
        loss = self.alpha * soft + (1 - self.alpha) * hard
        return DistilledStep(loss, student[labelled], gold[labelled], len(student), teacher[labelled])

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.classification import MulticlassAccuracy
        from torchmetrics.regression import PearsonCorrCoef

        agreement = MulticlassAccuracy(cfg.num_labels, average="micro") if self.labels == "class" else PearsonCorrCoef()
        return {**self.base.metrics(cfg, label_names), "agreement": agreement}

    def update(self, metrics: dict[str, nn.Module], step: DistilledStep) -> None:
        self.base.update({k: m for k, m in metrics.items() if k != "agreement"}, step)
        if "agreement" in metrics and len(step.teacher):
            teacher = step.teacher.argmax(-1) if self.labels == "class" else step.teacher.squeeze(-1)
            metrics["agreement"].update(step.predictions, teacher)

    # ---- data: the teacher's outputs, computed once and cached ----------------------------------
    def prepare(self, raw: dict, data, label_names: list[str] | None, cache_dir: Path) -> dict:
        """`raw` splits with a `teacher` column (and extra text appended to train). `data`: the run's
        DataConfig."""
        predictor = load_model(self.teacher, device="cuda" if torch.cuda.is_available() else "cpu",
                               batch_size=self.batch_size)
        if predictor.task != self.name or predictor.label_names != label_names:
            raise DataError(f"distill.teacher={self.teacher} was trained for task={predictor.task} with labels "
                            f"{predictor.label_names}; this run is task={self.name} with labels {label_names}: "
                            f"train the teacher on this data first")
        digest = _weights_digest(Path(self.teacher))
        columns = [c for c in (data.text_column, data.text_pair_column, data.label_column) if c]
        out = {split: _label(ds.select_columns(columns), predictor, data, digest) for split, ds in raw.items()}
        cached = next((f["filename"] for ds in out.values() for f in ds.cache_files), "memory")
        log.info("distillation: teacher %s (weights %s), its outputs cached in %s (reused while the teacher and "
                 "the data are unchanged)", self.teacher, digest, Path(cached).parent)
        if self.extra_text:
            extra = _extra_texts(self.extra_text, self.extra_text_column, data, raw, cache_dir, predictor.tokenizer)
            extra = _label(extra, predictor, data, digest)
            out["train"] = _concatenate(out["train"], extra, data)
            log.info("distillation: %d extra texts labelled by the teacher join %d training examples",
                     len(extra), len(raw["train"]))
        if self.augment:
            variants = _variants(raw, data, self.augment, self.augment_seed, cache_dir, predictor.tokenizer)
            if variants is not None:
                out["train"] = _concatenate(out["train"], _label(variants, predictor, data, digest), data)
            log.info("distill.augment: %d variants of the training texts, labelled by the teacher, join them",
                     len(variants or []))
        return out


def _weights_digest(path: Path) -> str:
    """Identifies the teacher: the sha256 of its file (a .ckpt) or of its weights and config (an export)."""
    files = [path] if path.is_file() else [path / name for name in checkpoint.EXPORT_FILES]
    return hashlib.sha256("".join(checkpoint.sha256(f) for f in files).encode()).hexdigest()[:16]


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
    from datasets import load_dataset

    from encoder.training.data.loading import load_error
    from encoder.training.data.sources import SOURCES

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


# ---- augmentation (Tang et al. 2019, "Distilling task-specific knowledge from BERT into simple neural
# networks"): rules that need no external resource, applied word by word -------------------------------
P_MASK, P_SWAP, P_NGRAM = 0.1, 0.1, 0.25


def augment(texts: list[str], n: int, seed: int) -> list[str]:
    """`n` variants of each text: each word masked ([MASK]) with probability P_MASK, or with P_SWAP replaced by
    a word of the same kind (one that follows the same word somewhere in `texts`, as Tang et al. replace by
    part of speech), then with P_NGRAM only an n-gram of 1-5 words of the result kept. Deterministic for a seed."""
    rng = random.Random(seed)
    followers: dict[str, list[str]] = {}
    for text in texts:
        words = text.split()
        for before, word in zip(["<s>", *words], words):
            followers.setdefault(before.lower(), []).append(word)
    out = []
    for text in texts:
        words = text.split()
        for _ in range(n if words else 0):
            new = []
            for before, word in zip(["<s>", *words], words):
                draw = rng.random()
                if draw < P_MASK:
                    new.append("[MASK]")
                elif draw < P_MASK + P_SWAP:
                    new.append(rng.choice(followers[before.lower()]))
                else:
                    new.append(word)
            if rng.random() < P_NGRAM:
                size = rng.randint(1, min(5, len(new)))
                start = rng.randint(0, len(new) - size)
                new = new[start : start + size]
            out.append(" ".join(new))
    return out


def _variants(raw: dict, data, n: int, seed: int, cache_dir: Path, tokenizer):
    """The variants of the training texts as a dataset, written once to the cache (so the teacher's labels of
    them are cached too), without any that reads as an evaluation text or is empty."""
    from datasets import load_dataset  # (training only: tasks are core, which never imports datasets)

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
    from datasets import concatenate_datasets

    extra = extra.add_column(data.label_column, [None] * len(extra))
    extra = extra.cast(train.features)
    return concatenate_datasets([train, extra])
