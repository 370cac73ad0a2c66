"""task=mlm: masked-language-model pretraining (BERT's recipe) on raw text.

The collator (data.mlm_probability, 0.15) chooses and masks the tokens and puts their originals in
`labels` ([batch, seq], -100 elsewhere). The loss is computed on the masked tokens only; `acc` is the
accuracy on them and `perplexity` exp(mean masked-token loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.model import ACTIVATIONS, ModelConfig, TaskModel, init_weights
from encoder.core.predictor import Predictor, checked_texts, finite
from encoder.tasks import Step, Task


class EncoderForMaskedLM(TaskModel):
    """Encoder + BERT's masked-language-model head: dense, activation, LayerNorm, then a projection
    onto the vocabulary that is tied to (is) the token embedding matrix, plus a bias.

    Only the masked positions go through the head, so no vocabulary-sized logits are computed for
    the ~85% of tokens that carry no loss. The tied weight is passed in at call time rather than
    registered twice, so the state dict holds it once (safetensors refuses shared tensors)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.transform = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.embed_dim), ACTIVATIONS[cfg.activation](),
                                       nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(init_weights)

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor, selected: torch.Tensor,
                documents: torch.Tensor | None = None) -> torch.Tensor:
        """Vocabulary logits [n_selected, vocab_size] at the positions where `selected` [batch, seq] is True.
        `documents`: see `Encoder.forward` (data.document_attention)."""
        hidden = self.encoder(input_ids, padding_mask, documents=documents)[selected]
        return nn.functional.linear(self.transform(hidden), self.encoder.embeddings.tokens.weight, self.bias)


class MaskedLMPredictor(Predictor):
    @torch.inference_mode()
    def predict(self, texts: list[str], top_k: int = 5) -> list[dict]:
        """One dict per text: `masks`, for each [MASK] in it (in order) the `top_k` most likely
        tokens with their probabilities."""
        mask_id = self.tokenizer.token_to_id("[MASK]")
        texts = checked_texts(texts, pairs=True)
        results = [{"masks": []} for _ in texts]
        for chunk, batch in self._batches(self._encode(texts)):
            selected = batch["input_ids"] == mask_id
            if not selected.any():
                continue
            logits = self.model(batch["input_ids"], batch["padding_mask"], selected).float().cpu()
            probs = finite(logits, [chunk[row] for row in selected.nonzero()[:, 0].tolist()]).softmax(-1)
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            rows = selected.nonzero()[:, 0].tolist()  # the batch row of each [MASK], in reading order
            for row, scores, ids in zip(rows, top.values.tolist(), top.indices.tolist()):
                results[chunk[row]]["masks"].append(
                    [{"token": self.tokenizer.id_to_token(t), "score": p} for t, p in zip(ids, scores)])
        return results


class MaskedLM(Task):
    name = "mlm"
    label_kind = None
    masks_tokens = True
    monitor = "val/acc"
    minimised = ("loss", "perplexity")
    train_metric = "acc"
    model_class = EncoderForMaskedLM
    predictor_class = MaskedLMPredictor

    def example_input(self, cfg: ModelConfig) -> tuple:
        ids, padding_mask = super().example_input(cfg)
        return ids, padding_mask, torch.ones_like(padding_mask)  # every token selected

    def step(self, model: nn.Module, batch: dict) -> Step:
        if "labels" not in batch or batch["labels"].dim() != 2:
            raise ValueError("task=mlm needs masked batches: set data.mlm_probability (e.g. 0.15)")
        selected = batch["labels"] != -100
        logits = model(batch["input_ids"], batch["padding_mask"], selected, batch.get("documents")).float()
        targets = batch["labels"][selected]
        # the count is the masked tokens, so an epoch's loss is the mean over all of them
        return Step(F.cross_entropy(logits, targets), logits, targets, len(targets))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.classification import MulticlassAccuracy
        from torchmetrics.text import Perplexity

        return {"acc": MulticlassAccuracy(cfg.vocab_size, average="micro"), "perplexity": Perplexity()}

    def update(self, metrics: dict[str, nn.Module], step: Step) -> None:
        for name, metric in metrics.items():
            if name == "perplexity":  # it wants [batch, seq, vocab]
                metric.update(step.predictions[None], step.targets[None])
            else:
                metric.update(step.predictions, step.targets)

    hf_class = "BertForMaskedLM"

    def hf_head(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"cls.predictions.transform.dense.weight": state["transform.0.weight"],
                "cls.predictions.transform.dense.bias": state["transform.0.bias"],
                "cls.predictions.transform.LayerNorm.weight": state["transform.2.weight"],
                "cls.predictions.transform.LayerNorm.bias": state["transform.2.bias"],
                "cls.predictions.bias": state["bias"]}


TASK = MaskedLM()
