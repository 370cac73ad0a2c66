"""A metric torchmetrics lacks: entity-level precision, recall and F1 for BIO tags, as
seqeval/conlleval count them (task=token_classification). An entity is a maximal run B-X I-X ...
(an I-X after O or after another type also starts one), and a predicted entity counts only if its
type, start and end all match a true one.

Core, like the tasks, but imported only inside a task's `metrics()` (which only training calls): it imports
torchmetrics, which serving never loads."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """{(type, start, end)} of the BIO (or IOB1) tag sequence; end is exclusive."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and name == kind
        if start is not None and not continues:
            found.add((kind, start, i))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, name
    return found


class EntityF1(Metric):
    """Micro precision/recall/F1 over entities. Sums of counts as state: exact under DDP."""

    full_state_update = False

    def __init__(self, label_names: list[str]):
        super().__init__()
        self.label_names = list(label_names)
        for name in ("correct", "predicted", "true"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Per-token class ids [batch, seq]; positions whose target is -100 are not words (skipped)."""
        for pred_row, true_row in zip(predictions.tolist(), targets.tolist()):
            words = [(p, t) for p, t in zip(pred_row, true_row) if t != -100]
            pred = entities([self.label_names[p] for p, _ in words])
            true = entities([self.label_names[t] for _, t in words])
            self.correct += len(pred & true)
            self.predicted += len(pred)
            self.true += len(true)

    def compute(self) -> dict[str, torch.Tensor]:
        precision = self.correct / self.predicted.clamp_min(1)
        recall = self.correct / self.true.clamp_min(1)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        return {"precision": precision.float(), "recall": recall.float(), "f1": f1.float()}
