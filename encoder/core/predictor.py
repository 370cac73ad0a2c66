"""The base of every task's predictor (core): batching texts through a model in inference mode, `embed`,
the checks of predict's inputs, and an ONNX graph in place of a model. Each task's `Predictor` subclass (in
encoder/tasks/) adds `predict`; `encoder.load_model` (encoder/serving/__init__.py) picks the subclass for a checkpoint.

It imports neither Lightning, torchmetrics, datasets, pandas nor matplotlib, and no task.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder.core.collate import Collator


class Predictor:
    """Batches texts (sorted by length, so batches carry little padding), runs the model in
    inference mode, and returns results in the input order. `embed` works for every task; each
    task's subclass (in encoder/tasks/) adds its own `predict`."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, max_length: int, batch_size: int = 64,
                 label_names: list[str] | None = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        self.model = model.eval()
        self.label_names = list(label_names) if label_names is not None else None
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.batch_size = batch_size
        self.collator = Collator(pad_token_id=model.cfg.pad_token_id)
        self.task_name: str | None = None  # the name of the task it predicts for (load_model sets it)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters(), torch.empty(0)).device  # (an ONNX graph has no parameters: CPU)

    def to(self, device: str | torch.device) -> "Predictor":
        self.model.to(device)
        return self

    def _encode(self, texts: list) -> list:
        """Tokenized texts. A text is a string, or a (text, text_pair) tuple for models trained on pairs."""
        texts = checked_texts(texts, pairs=True)
        if any(isinstance(t, tuple) for t in texts):
            if not self.model.cfg.type_vocab_size:
                raise ValueError("this model was trained on single texts; pass strings, not (text, text_pair) tuples")
            if isinstance(self.model, OnnxModel):
                raise ValueError("the ONNX graph reads single texts (segment 0 throughout); predict text pairs with "
                                 "backend='torch'")
        return self.tokenizer.encode_batch(texts)

    def _batches(self, encodings: list):
        """(positions in `encodings`, batch on the device) for length-sorted batches."""
        pairs = bool(self.model.cfg.type_vocab_size)
        rows = [{"input_ids": e.ids, **({"token_type_ids": e.type_ids} if pairs else {})} for e in encodings]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            yield chunk, {k: v.to(self.device) for k, v in self.collator([rows[i] for i in chunk]).items()}

    @torch.inference_mode()
    def _run(self, texts: list, fn) -> torch.Tensor:
        texts = checked_texts(texts, pairs=True)  # a list, whatever iterable came in
        outputs = [None] * len(texts)
        for chunk, batch in self._batches(self._encode(texts)):
            result = finite(fn(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float().cpu(),
                            chunk)
            for row, i in enumerate(chunk):
                outputs[i] = result[row]
        return torch.stack(outputs) if outputs else torch.empty(0)

    def embed(self, texts: list[str], truncate_dim: int | None = None, normalize: bool = False) -> torch.Tensor:
        """[len(texts), embed_dim] pooled sentence vectors (model.pooling: [CLS] or mean). `truncate_dim`: their
        first that many dimensions (a Matryoshka model's narrower embedding); `normalize`: each (after the cut) of
        unit length, so that a dot product is their cosine (sentence-transformers' encode(truncate_dim=...,
        normalize_embeddings=True))."""
        if truncate_dim is not None and (not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool)
                                         or not 0 < truncate_dim <= self.width):
            raise ValueError(f"truncate_dim={truncate_dim!r} must be a whole number from 1 to the embedding's "
                             f"{self.width} dimensions")
        vectors = self._run(texts, self.model.embed)[..., :truncate_dim]
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize and len(vectors) else vectors

    @property
    def width(self) -> int:
        """How many dimensions `embed` gives."""
        return self._run(["width"], self.model.embed).shape[-1]


def finite(outputs: torch.Tensor, chunk: list[int]) -> torch.Tensor:
    """`outputs` of texts `chunk`, or a one-line ValueError: a prediction is never NaN without an error."""
    bad = (~torch.isfinite(outputs)).flatten(1).any(1) if outputs.dim() > 1 else ~torch.isfinite(outputs)
    if bad.any():
        raise ValueError(f"the model computed NaN or inf for text {chunk[int(bad.nonzero()[0])]}: its weights are "
                         f"damaged or overflow; use another checkpoint or export")
    return outputs


def checked_texts(texts, pairs: bool = False, words: bool = False) -> list:
    """The texts of a predict call as a list, or a one-line TypeError/ValueError. A text is a str; with
    `pairs` also a (text, text_pair) pair of str, with `words` a list of words (str). Anything else is
    refused rather than turned into a string: predict([3]) or predict([b"..."]) is almost always a bug."""
    if isinstance(texts, (str, bytes, dict)) or not isinstance(texts, Iterable):
        raise TypeError(f"pass a list of texts, e.g. predict([text]); got a {type(texts).__name__}")
    out = []
    for i, text in enumerate(texts):  # any iterable, a generator too
        several = isinstance(text, (tuple, list)) and (pairs or words)
        if several and pairs and len(text) != 2:
            raise ValueError(f"text {i} has {len(text)} parts; a text pair is (text, text_pair)")
        for part in text if several else [text]:
            if not isinstance(part, str):
                raise TypeError(f"text {i} is a {type(part).__name__} ({part!r:.40}); predict takes strings")
            try:
                part.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"text {i} is not valid Unicode ({e.reason} at position {e.start}); "
                                 f"check how it was decoded") from None
        out.append(tuple(text) if several and pairs else text)
    return out


class OnnxModel(torch.nn.Module):
    """An export's model.onnx (or model.int8.onnx) run by onnxruntime in place of the PyTorch model: the
    same inputs (input_ids, padding_mask: True = padding) and outputs (logits; `embed`: pooled vectors)."""

    def __init__(self, path: Path, cfg):
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("backend onnx runs the graph with onnxruntime: pip install -e '.[onnx]' in your clone") \
                from None

        self.cfg = cfg
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def _outputs(self, input_ids: torch.Tensor, padding_mask: torch.Tensor) -> list:
        return self.session.run(None, {"input_ids": input_ids.cpu().numpy(), "padding_mask": padding_mask.cpu().numpy()})

    def forward(self, input_ids, padding_mask, token_type_ids=None) -> torch.Tensor:
        return torch.from_numpy(self._outputs(input_ids, padding_mask)[0])

    def embed(self, input_ids, padding_mask, token_type_ids=None) -> torch.Tensor:
        return torch.from_numpy(self._outputs(input_ids, padding_mask)[1])
