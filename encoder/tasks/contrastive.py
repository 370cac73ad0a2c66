"""task=contrastive: a sentence embedder learnt from pairs, as sentence-transformers trains one.

    python train.py task=contrastive data=local_files data.data_files.train=pairs.csv data.text_column=question \
        data.text_pair_column=answer

Each example is an anchor (data.text_column), its positive (data.text_pair_column) and zero or more hard negatives
(data.negative_columns), each encoded on its own (`texts_apart`): a bi-encoder, where a text pair of
task=classification is joined into one sequence. The model is the encoder and its pooling; the pooled vector is the
embedding (`embed`, `predict`, the sentence-transformers export and the ONNX graph all give it).

The loss is chosen by `task.loss.name` (sentence-transformers' names where they exist):
- `mnrl`, MultipleNegativesRankingLoss (in-batch negatives, InfoNCE; Henderson et al. 2017, van den Oord et al.
  2018): each anchor against every positive of the batch and every explicit negative, cross-entropy over `scale` x
  their cosine similarity, its own positive the right answer; `symmetric`: also each positive against every anchor;
  `gather_across_devices`: under DDP, every rank's positives and negatives are candidates for each anchor.
A repeated text in a batch would be a false negative: the sampler keeps batches free of them. Two options go with any
loss: `matryoshka_dims` (the loss summed at each prefix of the vectors: MatryoshkaLoss) and `mini_batch_size`
(GradCache: the batch embedded that many texts at a time, the same loss and gradients with the memory of a small
batch: CachedMultipleNegativesRankingLoss).

Validation embeds every validation anchor and positive and ranks all distinct positives for each distinct anchor
(its relevant documents: every positive it is paired with, so one row per judged pair is a relevance file): NDCG@10
(what checkpoints follow), MRR@10, MAP@100, recall@1/10/100 (encoder/core/retrieval.py), beside the in-batch `acc`
(the anchor's own positive scored first in its batch); with matryoshka_dims, NDCG@10 at each narrower prefix too
(`ndcg@10@64d`); `task.truncate_dim` scores the first that many dimensions only. Pairs that carry a graded `score`
column (an STS set) are scored by `spearman` instead: the rank correlation of each pair's cosine with its score.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig, TaskModel, init_weights
from encoder.tasks import Step, Task
from encoder.tasks.embedding import EmbeddingPredictor


class EncoderForSentenceEmbedding(TaskModel):
    """Encoder + pooling ([CLS] or mean): the pooled vector is the sentence embedding, with no head on top."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.apply(init_weights)

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        """The outputs from `embed`'s vectors: they are the outputs (the ONNX graph gives them twice)."""
        return embedded

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed(input_ids, padding_mask, token_type_ids)


class MultipleNegativesRankingLoss:
    """In-batch negatives: scale * cos(anchor, candidate) over every positive of the batch and every explicit
    negative, cross-entropy with the anchor's own positive as the answer (sentence-transformers'
    MultipleNegativesRankingLoss; with `symmetric`, its MultipleNegativesSymmetricRankingLoss). With
    `gather_across_devices`, under DDP, the candidates are every rank's (gathered with their gradients), so each anchor
    sees world_size times more negatives: the loss and gradients of one process on the concatenated batch."""

    def __init__(self, scale: float = 20.0, symmetric: bool = False, gather_across_devices: bool = False):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"task.loss.scale={scale!r} must be a positive number (sentence-transformers: 20)")
        for key, value in (("symmetric", symmetric), ("gather_across_devices", gather_across_devices)):
            if not isinstance(value, bool):
                raise ConfigError(f"task.loss.{key}={value!r} must be true or false")
        self.scale, self.symmetric, self.gather = float(scale), symmetric, gather_across_devices

    def __call__(self, anchors: torch.Tensor, positives: torch.Tensor,
                 negatives: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss, [anchors] 1.0 where an anchor scores its own positive above every other candidate)."""
        anchors, positives = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
        negatives = [F.normalize(n, dim=-1) for n in negatives]
        offset, every_anchor, every_positive = 0, anchors, positives
        if self.gather:
            (every_anchor, offset), (every_positive, _) = gathered(anchors), gathered(positives)
            negatives = [gathered(n)[0] for n in negatives]
        scores = self.scale * anchors @ torch.cat([every_positive, *negatives]).T
        targets = torch.arange(offset, offset + len(anchors), device=scores.device)
        loss = F.cross_entropy(scores, targets)
        if self.symmetric:  # each positive picks its own anchor among the batch's anchors
            loss = (loss + F.cross_entropy(self.scale * positives @ every_anchor.T, targets)) / 2
        return loss, (scores.argmax(-1) == targets).float()


def gathered(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every DDP rank's `rows`, concatenated in rank order, with gradients flowing back to each rank's own; how
    many rows the ranks before this one hold). `rows` itself outside DDP. Ranks may hold different numbers of rows
    (the last batch of an epoch)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows, 0
    from torch.distributed._functional_collectives import all_gather_single_autograd  # (under DDP only)

    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([len(rows)], device=rows.device))
    counts = [int(c) for c in counts]
    padded = F.pad(rows, (0, 0, 0, max(counts) - len(rows)))  # all_gather wants one shape from every rank
    # (torch's gather with gradients, which torch.distributed.nn.functional.all_gather now defers to: its backward
    # sums every rank's gradient for this rank's rows)
    parts = all_gather_single_autograd(padded, gather_dim=0, group=dist.group.WORLD).split(max(counts))
    return torch.cat([part[:n] for part, n in zip(parts, counts)]), sum(counts[: dist.get_rank()])


class Matryoshka:
    """`matryoshka_dims` (Kusupati et al. 2022, sentence-transformers' MatryoshkaLoss): the loss summed over
    prefixes of the vectors, so that the first d dimensions of the embedding make an embedding of their own."""

    def __init__(self, loss, dims: list[int]):
        self.loss, self.dims = loss, dims

    def __call__(self, anchors: torch.Tensor, positives: torch.Tensor,
                 negatives: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the summed loss, the widest prefix's hits)."""
        total, hits = 0.0, None
        for dim in self.dims:
            loss, hits = self.loss(anchors[:, :dim], positives[:, :dim], [n[:, :dim] for n in negatives])
            total = total + loss
        return total, hits


class TeacherScores:
    """With distill.teacher: `loss` mixed with the teacher's ranking of each anchor's candidates (every positive of
    the batch and every negative), alpha x T^2 x KL(softmax(teacher / T) || softmax(student / T)), where each
    side's logits are `scale` x cosine (the teacher's from its own vectors, `teacher`: [batch, texts, width]), and
    (1 - alpha) x `loss` (sentence-transformers' DistillKLDivLoss, over in-batch candidates as well). The ranking a
    student made of a teacher's layers learns, not only its vectors."""

    def __init__(self, loss, scale: float, alpha: float, temperature: float):
        self.loss, self.scale, self.alpha, self.temperature = loss, scale, alpha, temperature

    def __call__(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: list[torch.Tensor],
                 teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the mixed loss, the hits of `loss`)."""
        loss, hits = self.loss(anchors, positives, negatives)
        candidates = F.normalize(torch.cat([positives, *negatives]), dim=-1)
        student = self.scale * F.normalize(anchors, dim=-1) @ candidates.T
        mine = teacher[:, 1:].transpose(0, 1).reshape(-1, teacher.shape[-1])  # (the candidates' order above)
        taught = self.scale * teacher[:, 0] @ mine.T
        T = self.temperature
        kl = F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(taught / T, -1), log_target=True,
                      reduction="batchmean") * T * T
        return (1 - self.alpha) * loss + self.alpha * kl, hits


LOSSES = {"mnrl": MultipleNegativesRankingLoss}


@dataclass
class ContrastiveStep(Step):
    anchors: torch.Tensor | None = None  # the batch's embeddings, for the retrieval metrics
    positives: torch.Tensor | None = None
    anchor_keys: torch.Tensor | None = None  # the same number for the same text: a query or document counts once
    positive_keys: torch.Tensor | None = None
    scores: torch.Tensor | None = None  # graded similarity of each pair (an STS set), when the data has a score


class Contrastive(Task):
    name = "contrastive"
    label_kind = None  # pairs, no labels
    texts_apart = True
    monitor = "val/ndcg@10"
    train_metric = "acc"
    onnx = True
    model_class = EncoderForSentenceEmbedding
    predictor_class = EmbeddingPredictor
    teachable = True  # with distill.teacher: also the teacher's scores of each anchor's candidates

    def __init__(self, loss: dict | None = None, truncate_dim: int | None = None, teacher: dict | None = None):
        """`loss`: {"name": one of LOSSES, its options, and two that go with any of them: `matryoshka_dims`
        (increasing widths: the loss summed at each prefix of the vectors) and `mini_batch_size` (GradCache: the
        batch embedded that many texts at a time, for batches larger than memory holds)}. `truncate_dim`: the
        retrieval metrics score the first that many dimensions of each vector. `teacher`: DistillConfig's fields
        (`with_teacher`)."""
        self.options = dict(loss or {})
        options = dict(self.options)
        name = options.pop("name", "mnrl")
        if name not in LOSSES:
            raise ConfigError(f"task.loss.name={name!r} is unknown; choose one of {sorted(LOSSES)}")
        self.dims = options.pop("matryoshka_dims", None) or []
        if (not isinstance(self.dims, (list, tuple)) or not all(positive_int(d) for d in self.dims)
                or list(self.dims) != sorted(set(self.dims))):
            raise ConfigError(f"task.loss.matryoshka_dims={self.dims!r} must be increasing widths, e.g. [64, 128, "
                              f"256, 384]")
        self.mini_batch_size = options.pop("mini_batch_size", None)
        if self.mini_batch_size is not None and not positive_int(self.mini_batch_size):
            raise ConfigError(f"task.loss.mini_batch_size={self.mini_batch_size!r} must be a positive integer (the "
                              f"texts embedded at once; the batch is data.batch_size)")
        if truncate_dim is not None and not positive_int(truncate_dim):
            raise ConfigError(f"task.truncate_dim={truncate_dim!r} must be a positive integer (null: every dimension)")
        self.truncate_dim = truncate_dim
        self.loss = LOSSES[name](**options)
        scale = options.get("scale", 20.0)
        if self.dims:
            self.loss = Matryoshka(self.loss, list(self.dims))
        self.distill = dict(teacher or {})
        self.teacher = self.distill.get("teacher")
        if self.teacher:  # the teacher's unit vectors of each text: its scores of every candidate, as `teacher`
            self.loss = TeacherScores(self.loss, scale, self.distill.get("alpha", 0.5),
                                      self.distill.get("temperature", 1.0))
        self.batch_size = self.distill.get("batch_size", 128)  # (the teacher's, as embedding's)

    # graded pairs (STS, evaluated by Spearman); taught, the teacher's vectors of each text
    carries = property(lambda self: ("score", "teacher") if self.teacher else ("score",))
    learns_from = property(lambda self: "embeddings" if self.teacher else None)
    extra_text = augment = None  # (teacher.py asks; check_teaching refuses them for this task)

    def with_loss(self, loss: dict) -> "Contrastive":
        return Contrastive(loss, self.truncate_dim, self.distill)

    def evaluated_at(self, truncate_dim: int | None) -> "Contrastive":
        return Contrastive(self.options, truncate_dim, self.distill)

    def with_teacher(self, teacher_width: int, **distill) -> "Contrastive":
        """Also learning the ranking `distill["teacher"]` gives each anchor's candidates (any width: its scores)."""
        return Contrastive(self.options, self.truncate_dim, distill)

    def architecture(self, model: dict) -> dict:
        if model.get("pooler"):
            raise ConfigError("task=contrastive embeds the pooled vector itself; set model.pooler=false")
        width = model.get("embed_dim")
        for key, value in (("task.loss.matryoshka_dims", max(self.dims, default=None)),
                           ("task.truncate_dim", self.truncate_dim)):
            if width is not None and value is not None and value > width:
                raise ConfigError(f"{key} goes up to {value}, above the embedding's {width} dimensions; keep it "
                                  f"within {width}")
        return model

    def check_data(self, data) -> None:
        if self.mini_batch_size is not None and self.mini_batch_size > data.batch_size:
            raise ConfigError(f"task.loss.mini_batch_size={self.mini_batch_size} is above data.batch_size="
                              f"{data.batch_size}: the cache splits a batch; lower it or raise data.batch_size")

    def step(self, model: nn.Module, batch: dict) -> ContrastiveStep:
        texts = [(batch["input_ids"], batch["padding_mask"])] + [
            (batch[f"input_ids_{i}"], batch[f"padding_mask_{i}"])
            for i in range(1, sum(key.startswith("input_ids_") for key in batch) + 1)]  # positive, hard negatives
        loss_fn = self.loss
        if self.teacher:
            loss_fn = functools.partial(self.loss, teacher=batch["teacher"].float())
        if self.mini_batch_size and torch.is_grad_enabled():
            loss, right, vectors = cached_loss(model, texts, self.mini_batch_size, loss_fn)
        else:
            vectors = [embedded(model, ids, mask, self.mini_batch_size) for ids, mask in texts]
            loss, right = loss_fn(vectors[0], vectors[1], vectors[2:])
        anchors, positives = (v.detach()[:, : self.truncate_dim] for v in vectors[:2])
        return ContrastiveStep(loss, right, torch.ones_like(right), len(anchors), anchors, positives,
                               text_keys(*texts[0]), text_keys(*texts[1]), batch.get("score"))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics import MeanMetric

        from encoder.core.pair_retrieval import PairRetrieval  # (it imports torchmetrics, which serving never loads)

        # with matryoshka_dims, NDCG@10 of each narrower prefix too: what each width of the embedding is worth
        prefixes = [d for d in self.dims if d < (self.truncate_dim or cfg.embed_dim)]
        return {"acc": MeanMetric(), "retrieval": PairRetrieval(prefixes)}

    def update(self, metrics: dict[str, nn.Module], step: ContrastiveStep) -> None:
        metrics["acc"].update(step.predictions, step.targets)
        if "retrieval" in metrics:
            metrics["retrieval"].update(step.anchors, step.positives, step.anchor_keys, step.positive_keys,
                                        step.scores)


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def embedded(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """The texts' embeddings (float32), `chunk` texts at a time (all at once: None)."""
    chunk = chunk or len(ids)
    return torch.cat([model(ids[i : i + chunk], mask[i : i + chunk]).float() for i in range(0, len(ids), chunk)])


def cached_loss(model: nn.Module, texts: list[tuple[torch.Tensor, torch.Tensor]], chunk: int, loss_fn):
    """GradCache (Gao et al. 2021; sentence-transformers' CachedMultipleNegativesRankingLoss): the loss of the whole
    batch with the memory of `chunk` texts. 1) embed every text `chunk` at a time without keeping activations;
    2) the loss on those embeddings, and its gradient with respect to each of them; 3) each chunk embedded again
    with activations (the same dropout: its random state replayed), its parameters' gradient from the cached one,
    summed over chunks. The returned loss hands that sum to the parameters when Lightning calls backward: each
    parameter receives its gradient once, as DDP expects. Returns (loss, hits, the embeddings) as `loss_fn` does."""
    parts = [(ids[start : start + chunk], mask[start : start + chunk])
             for ids, mask in texts for start in range(0, len(ids), chunk)]
    states, leaves = [], []
    with torch.no_grad():
        for ids, mask in parts:
            states.append(random_state(ids.device))  # (what dropout will draw for this chunk)
            leaves.append(model(ids, mask).float().requires_grad_())
    joined, at = [], 0
    for ids, _ in texts:
        n = -(-len(ids) // chunk)
        joined.append(torch.cat(leaves[at : at + n]))
        at += n
    loss, right = loss_fn(joined[0], joined[1], joined[2:])
    cached = torch.autograd.grad(loss, leaves)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    for (ids, mask), state, grad in zip(parts, states, cached):
        with replayed(state, ids.device):
            again = model(ids, mask).float()
        for total, g in zip(grads, torch.autograd.grad(again, params, grad, allow_unused=True)):
            if g is not None:
                total += g
    return _Gradients.apply(loss.detach(), grads, *params), right, [j.detach() for j in joined]


class _Gradients(torch.autograd.Function):
    """`loss` whose backward gives each of `params` its precomputed gradient (times the incoming one: AMP's scale)."""

    @staticmethod
    def forward(ctx, loss, grads, *params):
        ctx.grads = grads
        return loss.clone()

    @staticmethod
    def backward(ctx, upstream):
        return (None, None, *(g * upstream for g in ctx.grads))


def random_state(device: torch.device):
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextmanager
def replayed(state, device: torch.device):
    """The random state `state` for the time of the block (dropout draws the same masks again), then the one before."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def text_keys(input_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """[batch] int64: the same number for the same token ids (a polynomial hash of each row's real tokens)."""
    ids = input_ids.masked_fill(padding_mask, 0).long()
    powers = torch.full((ids.shape[1],), 1_000_003, dtype=torch.long, device=ids.device).cumprod(0)  # (wraps)
    return (ids * powers).sum(1) + (~padding_mask).sum(1)


TASK = Contrastive()
