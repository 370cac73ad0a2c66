"""Load a trained model for inference: `encoder.load_model(path).predict(texts)` / `.embed(texts)`;
export a checkpoint to a pickle-free folder (safetensors + JSON).

Loading never runs a pickle that could execute code: checkpoints are read with
`torch.load(..., weights_only=True)`, which only rebuilds tensors and plain Python types, and
exports are read with `safetensors` and `json` only.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder.data.collate import Collator, first_subtokens
from encoder.data.datamodule import as_text
from encoder.data.sources import sha256
from encoder.model import EncoderClassifier, EncoderForMaskedLM, EncoderForTokenClassification
from encoder.module import model_config


class Predictor:
    """Batches texts (sorted by length, so batches carry little padding), runs the model in
    inference mode, and returns results in the input order. `embed` works for every task; each
    task's subclass below adds its own `predict`."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, max_length: int, batch_size: int = 64,
                 label_names: list[str] | None = None):
        self.model = model.eval()
        self.label_names = list(label_names) if label_names is not None else None
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.batch_size = batch_size
        self.collator = Collator(pad_token_id=model.cfg.pad_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "Predictor":
        self.model.to(device)
        return self

    def _encode(self, texts: list) -> list:
        """Tokenized texts. A text is a string, or a (text, text_pair) tuple for models trained on pairs."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, e.g. predict([text])")
        # the same reading of None/non-strings as in training
        texts = [tuple(map(as_text, t)) if isinstance(t, (tuple, list)) else as_text(t) for t in texts]
        if not self.model.cfg.type_vocab_size and any(isinstance(t, tuple) for t in texts):
            raise ValueError("this model was trained on single texts; pass strings, not (text, text_pair) tuples")
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
        outputs = [None] * len(texts)
        for chunk, batch in self._batches(self._encode(texts)):
            result = fn(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float().cpu()
            for row, i in enumerate(chunk):
                outputs[i] = result[row]
        return torch.stack(outputs) if outputs else torch.empty(0)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), embed_dim] pooled sentence vectors (model.pooling: [CLS] or mean)."""
        return self._run(texts, self.model.embed)


class ClassifierPredictor(Predictor):
    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), num_labels] class probabilities."""
        return self._run(texts, self.model).softmax(-1)

    def predict(self, texts: list[str]) -> list[dict]:
        """One dict per text: `label`, its `score` (probability) and `probs` for every label."""
        results = []
        for p in self.probabilities(texts).tolist():
            best = max(range(len(p)), key=p.__getitem__)
            results.append({"label": self.label_names[best], "score": p[best],
                            "probs": dict(zip(self.label_names, p))})
        return results


class RegressorPredictor(Predictor):
    def predict(self, texts: list) -> list[dict]:
        """One dict per text: its predicted `value`."""
        return [{"value": v} for v in self._run(texts, self.model).squeeze(-1).tolist()]


class TokenPredictor(Predictor):
    @staticmethod
    def _words(texts: list) -> list[list[str]]:
        """A text is a string (split into words at whitespace) or a list of words."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, e.g. predict([text])")
        return [list(map(as_text, t)) if isinstance(t, (list, tuple)) else as_text(t).split() for t in texts]

    def _encode(self, texts: list) -> list:
        return self.tokenizer.encode_batch(self._words(texts), is_pretokenized=True)

    @torch.inference_mode()
    def predict(self, texts: list) -> list[dict]:
        """One dict per text: its `words` and one tag (of `label_names`) per word, read at each word's
        first sub-token; words cut off by max_length get null."""
        words = self._words(texts)
        encodings = self.tokenizer.encode_batch(words, is_pretokenized=True)
        tags: list[dict] = [{} for _ in texts]
        for chunk, batch in self._batches(encodings):
            best = self.model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).argmax(-1)
            for row, i in enumerate(chunk):
                tags[i] = {w: self.label_names[int(best[row, t])] for t, w in first_subtokens(encodings[i].word_ids)}
        return [{"words": ws, "tags": [t.get(w) for w in range(len(ws))]} for ws, t in zip(words, tags)]


class MaskedLMPredictor(Predictor):
    @torch.inference_mode()
    def predict(self, texts: list[str], top_k: int = 5) -> list[dict]:
        """One dict per text: `masks`, for each [MASK] in it (in order) the `top_k` most likely
        tokens with their probabilities."""
        mask_id = self.tokenizer.token_to_id("[MASK]")
        results = [{"masks": []} for _ in texts]
        for chunk, batch in self._batches(self._encode(texts)):
            selected = batch["input_ids"] == mask_id
            if not selected.any():
                continue
            probs = self.model(batch["input_ids"], batch["padding_mask"], selected).float().softmax(-1).cpu()
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            rows = selected.nonzero()[:, 0].tolist()  # the batch row of each [MASK], in reading order
            for row, scores, ids in zip(rows, top.values.tolist(), top.indices.tolist()):
                results[chunk[row]]["masks"].append(
                    [{"token": self.tokenizer.id_to_token(t), "score": p} for t, p in zip(ids, scores)])
        return results


# task name (checkpoints and exports record it) -> (model class, predictor class)
TASKS = {"classification": (EncoderClassifier, ClassifierPredictor), "regression": (EncoderClassifier, RegressorPredictor),
         "token_classification": (EncoderForTokenClassification, TokenPredictor),
         "mlm": (EncoderForMaskedLM, MaskedLMPredictor)}


def build_model(hp: dict) -> torch.nn.Module:
    task = hp["task"]  # checkpoint_parts and load_export fill in "classification" for older files
    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown to this version of encoder (known: {sorted(TASKS)}); "
                         f"upgrade encoder")
    return TASKS[task][0](model_config(hp["model"], hp["tokenizer_json"], hp.get("label_names")))


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path of a .ckpt file "
                                f"(train.py prints it as 'best checkpoint')")
    try:
        # mmap: reading the hyperparameters of a large checkpoint does not load all of it into memory
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"refusing to load {path}: it needs arbitrary Python objects to unpickle, which "
                         f"could run code ({first}); only load checkpoints written by encoder") from None


def load_model(path: str | os.PathLike, device: str = "cpu", batch_size: int = 64) -> Predictor:
    """A `Predictor` from a `.ckpt` written by `python train.py` or a folder written by
    `python -m encoder.export` (safetensors + JSON: no pickle at all)."""
    path = Path(path)
    hp, state = load_export(path) if path.is_dir() else checkpoint_parts(path)
    model = build_model(hp)
    model.load_state_dict(state)
    predictor = TASKS[hp["task"]][1](model, Tokenizer.from_str(hp["tokenizer_json"]), hp["max_length"], batch_size,
                                     hp.get("label_names"))
    return predictor.to(device)


def checkpoint_parts(path: Path) -> tuple[dict, dict]:
    """(hyperparameters + task, model weights) of a Lightning checkpoint."""
    ckpt = load_checkpoint(path)
    hp = {**ckpt["hyper_parameters"], "task": ckpt.get("task") or "classification"}
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return hp, state


EXPORT_FORMAT = "encoder-export-v1"


def export(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, onnx: bool = False) -> Path:
    """Write `model.safetensors`, `config.json` (architecture, labels, the weights' sha256) and
    `tokenizer.json` into a new folder (and `model.onnx` with onnx=True). Refuses to write into a
    non-empty folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; export into a new folder (nothing was overwritten)")
    hp, state = checkpoint_parts(Path(checkpoint))
    state = {k: v.contiguous() for k, v in state.items()}
    if onnx and (hp["task"] not in ("classification", "regression") or hp["model"].get("type_vocab_size")):
        raise ValueError(f"--onnx exports single-text classification and regression models; this checkpoint is "
                         f"task={hp['task']}" + (" with text pairs" if hp["model"].get("type_vocab_size") else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:  # written next to `out` and renamed when complete: no half-written export ever sits at `out`
        save_file(state, tmp / "model.safetensors", metadata={"format": EXPORT_FORMAT})
        (tmp / "tokenizer.json").write_text(hp["tokenizer_json"], encoding="utf-8")
        files = ["model.safetensors"]
        if onnx:
            model = build_model(hp)
            model.load_state_dict(state)
            export_onnx(model, tmp / "model.onnx")
            files.append("model.onnx")
        config = {"format": EXPORT_FORMAT, "task": hp["task"], "model": hp["model"],
                  "label_names": hp.get("label_names"), "max_length": hp["max_length"],
                  "sha256": {name: sha256(tmp / name) for name in files}}
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        os.replace(tmp, out)  # onto a missing or empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class _OnnxGraph(torch.nn.Module):
    """What model.onnx computes: (input_ids, padding_mask) -> (logits, pooled embeddings)."""

    def __init__(self, model: EncoderClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor):
        pooled = self.model.embed(input_ids, padding_mask)
        return self.model.head(pooled), pooled


def export_onnx(model: EncoderClassifier, path: Path) -> None:
    """ONNX graph with dynamic batch and sequence axes. Inputs: `input_ids` int64 [batch, seq] and
    `padding_mask` bool [batch, seq] (True = padding, as everywhere); outputs `logits` and `embeddings`."""
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'encoder[onnx]'") from None
    model = model.eval()
    ids = torch.full((2, 16), model.cfg.pad_token_id + 1, dtype=torch.long)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[1, 8:] = True  # an example batch; the graph itself is shape-generic
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=model.cfg.max_positions)
    torch.onnx.export(_OnnxGraph(model), (ids, mask), str(path), dynamo=True, verbose=False,
                      external_data=False,  # one self-contained file (fine below protobuf's 2 GB)
                      input_names=["input_ids", "padding_mask"], output_names=["logits", "embeddings"],
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}, "padding_mask": {0: batch, 1: seq}})


def load_export(folder: Path) -> tuple[dict, dict]:
    """Hyperparameters and weights of an export folder, after checking the weights' hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    names = ("config.json", "model.safetensors", "tokenizer.json")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; pass a folder written by "
                                f"python -m encoder.export, or a .ckpt file")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{folder / 'config.json'} is not valid JSON ({e}); re-export the model") from None
    if config.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{folder / 'config.json'} is not an encoder export (format {config.get('format')!r})")
    expected = config.get("sha256", {}).get("model.safetensors")
    if sha256(folder / "model.safetensors") != expected:
        raise ValueError(f"{folder / 'model.safetensors'} does not match the sha256 in config.json: "
                         f"the export was modified or corrupted; re-export it")
    try:
        state = load_file(folder / "model.safetensors")
    except SafetensorError as e:
        raise ValueError(f"{folder / 'model.safetensors'} is not a valid safetensors file ({e})") from None
    hp = {"task": config.get("task") or "classification", "model": config["model"],
          "label_names": config.get("label_names"), "max_length": config["max_length"],
          "tokenizer_json": (folder / "tokenizer.json").read_text(encoding="utf-8")}
    return hp, state
