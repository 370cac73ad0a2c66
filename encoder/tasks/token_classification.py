"""task=token_classification: a label per word (NER, POS).

The data gives a list of words and one label per word (CoNLL style); each word's label goes on its
first sub-token and -100 on the others, on special tokens and on padding, which never count.
Metrics: per-word accuracy and, for BIO tags, entity precision/recall/F1 counted as seqeval does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.collate import first_subtokens
from encoder.core.model import ModelConfig, TaskModel, init_weights
from encoder.core.predictor import Predictor, checked_texts, finite
from encoder.tasks import Step, Task
from encoder.tasks.classification import labels_config


class EncoderForTokenClassification(TaskModel):
    """Encoder + a linear classifier on every token: logits [batch, seq, num_labels]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.classifier = nn.Linear(cfg.embed_dim, cfg.num_labels)
        self.apply(init_weights)

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder(input_ids, padding_mask, token_type_ids)))


def is_bio(label_names: list[str]) -> bool:
    """Entity scores only make sense for BIO (or IOB1) tags: O, B-X, I-X."""
    return any(n.startswith(("B-", "I-")) for n in label_names) and all(
        n == "O" or n.startswith(("B-", "I-")) for n in label_names)


class TokenPredictor(Predictor):
    @staticmethod
    def _words(texts: list) -> list[list[str]]:
        """A text is a string (split into words at whitespace) or a list of words."""
        return [list(t) if isinstance(t, (list, tuple)) else t.split() for t in checked_texts(texts, words=True)]

    def _encode(self, texts: list) -> list:
        return self.tokenizer.encode_batch(self._words(texts), is_pretokenized=True)

    @torch.inference_mode()
    def predict(self, texts: list) -> list[dict]:
        """One dict per text: its `words` and one tag (of `label_names`) per word, read at each word's
        first sub-token; words cut off by max_length get null."""
        words = self._words(texts)
        encodings = self.tokenizer.encode_batch(words, is_pretokenized=True)
        tags: list[dict] = [{} for _ in words]
        for chunk, batch in self._batches(encodings):
            logits = self.model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
            best = finite(logits.masked_fill(batch["padding_mask"].unsqueeze(-1), 0), chunk).argmax(-1)
            for row, i in enumerate(chunk):
                tags[i] = {w: self.label_names[int(best[row, t])] for t, w in first_subtokens(encodings[i].word_ids)}
        return [{"words": ws, "tags": [t.get(w) for w in range(len(ws))]} for ws, t in zip(words, tags)]


class TokenClassification(Task):
    name = "token_classification"
    label_kind = "word"
    words = True
    monitor = "val/f1"  # entity F1 (BIO tags); for other tags (POS) follow val/acc
    train_metric = "acc"
    model_class = EncoderForTokenClassification
    predictor_class = TokenPredictor

    def label_values(self, tags) -> list:
        return list(tags) if tags else [None]  # (a sentence without tags has no labels: missing)

    def collate_labels(self, targets: list, length: int) -> torch.Tensor:
        """[batch, length]: each text's token labels, -100 on padding."""
        out = torch.full((len(targets), length), -100, dtype=torch.long)
        for i, t in enumerate(targets):
            out[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        return out

    def step(self, model: nn.Module, batch: dict) -> Step:
        logits = model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        return Step(loss, logits.argmax(-1), batch["labels"], int((batch["labels"] != -100).sum()))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.classification import MulticlassAccuracy

        from encoder.core.entity_f1 import EntityF1  # (it imports torchmetrics, which serving never loads)

        metrics = {"acc": MulticlassAccuracy(cfg.num_labels, average="micro", ignore_index=-100)}
        if is_bio(label_names):
            metrics["entities"] = EntityF1(label_names)  # precision, recall, f1
        return metrics

    hf_class = "BertForTokenClassification"

    def hf_config(self, label_names: list[str] | None) -> dict:
        return labels_config(label_names)

    def hf_head(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"classifier.weight": state["classifier.weight"], "classifier.bias": state["classifier.bias"]}


TASK = TokenClassification()
