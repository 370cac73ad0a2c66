"""Hugging Face BERT <-> our encoder: one table of names, used in both directions.

Our post-LN encoder with GELU, learned positions and (optionally) BERT's pooler *is* BERT; the only
layout difference is `nn.MultiheadAttention`'s packed q/k/v in-projection. Exporting to
`transformers.BertForSequenceClassification` lets tests and benchmarks compare us with a reference
we did not write; importing reads a BERT-family folder (`config.json` + `model.safetensors` +
`tokenizer.json`: BERT, MiniLM, ...) into our encoder. `transformers` is needed only for export.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from encoder.errors import ConfigError
from encoder.model import ModelConfig

ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu"}


def _pairs(num_layers: int, prefix: str) -> list[tuple[str, str]]:
    """(our name, BERT's name) for every tensor that maps one to one."""
    pairs = [("encoder.embeddings.tokens.weight", f"{prefix}embeddings.word_embeddings.weight"),
             ("encoder.embeddings.positions.weight", f"{prefix}embeddings.position_embeddings.weight")]
    for kind in ("weight", "bias"):
        pairs.append((f"encoder.embeddings.norm.{kind}", f"{prefix}embeddings.LayerNorm.{kind}"))
        for i in range(num_layers):
            ours, theirs = f"encoder.layers.{i}.", f"{prefix}encoder.layer.{i}."
            pairs += [(f"{ours}attn.out_proj.{kind}", f"{theirs}attention.output.dense.{kind}"),
                      (f"{ours}norm1.{kind}", f"{theirs}attention.output.LayerNorm.{kind}"),
                      (f"{ours}ffn.0.{kind}", f"{theirs}intermediate.dense.{kind}"),
                      (f"{ours}ffn.2.{kind}", f"{theirs}output.dense.{kind}"),
                      (f"{ours}norm2.{kind}", f"{theirs}output.LayerNorm.{kind}")]
    return pairs


def _qkv(num_layers: int, prefix: str) -> list[tuple[str, list[str]]]:
    """Our packed in-projection and BERT's separate query/key/value, per layer and kind."""
    return [(f"encoder.layers.{i}.attn.in_proj_{kind}",
             [f"{prefix}encoder.layer.{i}.attention.self.{p}.{kind}" for p in ("query", "key", "value")])
            for i in range(num_layers) for kind in ("weight", "bias")]


# ---- export: ours -> transformers ---------------------------------------------------------
def bert_config(cfg: ModelConfig):
    """The `transformers.BertConfig` of the same architecture (SDPA attention)."""
    from transformers import BertConfig

    if cfg.norm_first or cfg.positions != "learned" or cfg.pooling != "cls" or not cfg.pooler:
        raise ValueError("only post-LN, learned positions, cls pooling and pooler=true match BERT")
    if cfg.attention.add_bias_kv or cfg.attention.add_zero_attn or not cfg.attention.bias:
        raise ValueError("BERT has plain q/k/v projections with biases")
    return BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.attention.num_heads, intermediate_size=cfg.ffn_dim,
        hidden_act=ACTIVATIONS[cfg.activation], hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention.dropout, classifier_dropout=cfg.classifier_dropout,
        max_position_embeddings=cfg.max_positions, type_vocab_size=max(1, cfg.type_vocab_size), layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id, num_labels=cfg.num_labels, attn_implementation="sdpa",
    )


def to_bert_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our weights under BertForSequenceClassification's names."""
    s = model.state_dict()
    out = {theirs: s[ours] for ours, theirs in _pairs(model.cfg.num_layers, "bert.")}
    for ours, theirs in _qkv(model.cfg.num_layers, "bert."):
        out.update(zip(theirs, s[ours].chunk(3)))
    segments = s.get("encoder.embeddings.segments.weight")
    out.update({
        # without segments of ours: one segment whose embedding is zero (BERT adds it to every token)
        "bert.embeddings.token_type_embeddings.weight": segments if segments is not None
        else torch.zeros(1, model.cfg.embed_dim),
        "bert.pooler.dense.weight": s["pooler.0.weight"], "bert.pooler.dense.bias": s["pooler.0.bias"],
        "classifier.weight": s["classifier.weight"], "classifier.bias": s["classifier.bias"],
    })
    return out


def to_bert(model: torch.nn.Module):
    """A `transformers.BertForSequenceClassification` computing the same function as `model`."""
    from transformers import BertForSequenceClassification

    bert = BertForSequenceClassification(bert_config(model.cfg))
    missing, unexpected = bert.load_state_dict(to_bert_state_dict(model), strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return bert.train(model.training)


# ---- import: a BERT-family folder -> ours -------------------------------------------------
def load_bert(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(architecture for ModelConfig, weights under our names, tokenizer JSON) of a BERT folder.

    Its token-type (segment) embeddings become ours (`type_vocab_size`, 2 for BERT): a single text is
    segment 0 throughout, a pair 0 then 1, as in BERT. The pooler is returned when the folder has one.
    """
    from safetensors.torch import load_file

    from encoder.tokenizer import finalize, load_tokenizer

    folder = Path(folder)
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"model.init_from={folder} lacks {', '.join(missing)}; point it at a BERT-style folder "
                          f"(config.json, model.safetensors, tokenizer.json) or an encoder export")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"{folder} holds a {config.get('model_type')!r} model; only BERT-style encoders "
                          f"(model_type bert, absolute positions) can be imported")
    if config.get("hidden_act") not in ACTIVATIONS:
        raise ConfigError(f"{folder} uses activation {config.get('hidden_act')!r}; supported: {list(ACTIVATIONS)}")
    tensors = load_file(folder / "model.safetensors")
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    layers = config["num_hidden_layers"]
    state = {ours: tensors[theirs] for ours, theirs in _pairs(layers, prefix)}
    for ours, theirs in _qkv(layers, prefix):
        state[ours] = torch.cat([tensors[t] for t in theirs])
    segments = tensors.get(f"{prefix}embeddings.token_type_embeddings.weight")
    if segments is not None:
        state["encoder.embeddings.segments.weight"] = segments
    if f"{prefix}pooler.dense.weight" in tensors:
        state["pooler.0.weight"] = tensors[f"{prefix}pooler.dense.weight"]
        state["pooler.0.bias"] = tensors[f"{prefix}pooler.dense.bias"]
    arch = {"embed_dim": config["hidden_size"], "num_layers": layers, "ffn_dim": config["intermediate_size"],
            "max_positions": config["max_position_embeddings"], "activation": config["hidden_act"],
            "type_vocab_size": len(segments) if segments is not None else 0,
            "layer_norm_eps": config.get("layer_norm_eps", 1e-12), "norm_first": False, "positions": "learned",
            "attention": {"num_heads": config["num_attention_heads"], "bias": True, "add_bias_kv": False,
                          "add_zero_attn": False}}
    tokenizer = finalize(load_tokenizer(folder / "tokenizer.json"))
    return arch, state, tokenizer.to_str()
