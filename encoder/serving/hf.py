"""Hugging Face BERT <-> our encoder: one table of names, used in both directions.

Our post-LN encoder with GELU, learned positions and (optionally) BERT's pooler *is* BERT; the only
layout difference is `nn.MultiheadAttention`'s packed q/k/v in-projection. Exporting writes a folder
that `transformers` (AutoModelFor<Task>, pipelines) and sentence-transformers load with no code of ours
(`python -m encoder.export CKPT DIR --format hf`); tests and benchmarks also use it to compare us with a
reference we did not write. Importing reads a BERT-family folder (`config.json` + `model.safetensors` +
`tokenizer.json`: BERT, MiniLM, ...) into our encoder. Neither direction imports `transformers`.

Rotary models go the same two ways as transformers' ModernBERT (`_modernbert`, `modernbert_config_dict`: rotary
attention with local and global layers, GeGLU, pre-LN without a norm before layer 0's attention, no biases), the
encoder alone: ModernBERT's task heads are not ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from encoder import tasks
from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig
from encoder.tasks import Task
from encoder.core.tokenizer import finalize, load_tokenizer

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


def _modern_names(num_layers: int) -> list[tuple[str, str]]:
    """(our name, ModernBertModel's name) of each tensor, "{}" standing for weight or bias."""
    names = [("encoder.embeddings.tokens.{}", "embeddings.tok_embeddings.{}"),
             ("encoder.embeddings.norm.{}", "embeddings.norm.{}"), ("encoder.final_norm.{}", "final_norm.{}")]
    for i in range(num_layers):
        names += [(f"encoder.layers.{i}.{ours}", f"layers.{i}.{theirs}") for ours, theirs in (
            ("norm1.{}", "attn_norm.{}"), ("attn.in_proj_{}", "attn.Wqkv.{}"), ("attn.out_proj.{}", "attn.Wo.{}"),
            ("norm2.{}", "mlp_norm.{}"), ("ffn.wi.{}", "mlp.Wi.{}"), ("ffn.wo.{}", "mlp.Wo.{}"))]
    return names


def _qkv(num_layers: int, prefix: str) -> list[tuple[str, list[str]]]:
    """Our packed in-projection and BERT's separate query/key/value, per layer and kind."""
    return [(f"encoder.layers.{i}.attn.in_proj_{kind}",
             [f"{prefix}encoder.layer.{i}.attention.self.{p}.{kind}" for p in ("query", "key", "value")])
            for i in range(num_layers) for kind in ("weight", "bias")]


# ---- export: ours -> transformers ---------------------------------------------------------
# the option BERT cannot express -> (is it fine?, why), checked in this order
UNEXPRESSIBLE = (
    ("model.norm_first", lambda c: not c.norm_first, "BERT is post-LN"),
    ("model.positions", lambda c: c.positions == "learned", "BERT learns its position embeddings"),
    ("model.attention.add_bias_kv", lambda c: not c.attention.add_bias_kv, "BERT's attention has no bias_k/bias_v"),
    ("model.attention.add_zero_attn", lambda c: not c.attention.add_zero_attn, "BERT's attention has no zero key"),
    ("model.attention.bias", lambda c: c.attention.bias, "BERT's q/k/v projections have biases"),
    ("model.activation", lambda c: c.activation in ACTIVATIONS, "BERT's activations are gelu, relu, silu"),
    ("model.norm", lambda c: c.norm == "layernorm", "BERT's norms are LayerNorm"),
    ("model.ffn", lambda c: c.ffn == "plain", "BERT's feed-forward is not gated"),
    ("model.bias", lambda c: c.bias, "BERT's feed-forward and LayerNorm have biases"),
)
def _task(name: str | None) -> Task | None:
    """The task whose transformers class is written (its `hf_*` hooks); None for the encoder alone."""
    task = tasks.get(name) if name is not None else None
    return task if task is not None and task.hf_class is not None else None


# ModernBERT (rotary models): the option it cannot express -> (is it fine?, why)
UNEXPRESSIBLE_MODERN = (
    ("model.ffn", lambda c: c.ffn == "gated", "ModernBERT's feed-forward is GeGLU-style gated"),
    ("model.norm_first", lambda c: c.norm_first, "ModernBERT is pre-LN"),
    ("model.first_attention_norm", lambda c: not c.first_attention_norm, "ModernBERT's layer 0 has no norm before "
                                                                          "attention"),
    ("model.norm", lambda c: c.norm == "layernorm", "ModernBERT's norms are LayerNorm"),
    ("model.activation", lambda c: c.activation in ACTIVATIONS, "its activations here are gelu, relu, silu"),
    ("model.type_vocab_size", lambda c: c.type_vocab_size == 0, "ModernBERT has no segment embeddings"),
    ("model.pooler", lambda c: not c.pooler, "ModernBERT has no BERT pooler"),
)


def modernbert_family(cfg: ModelConfig) -> bool:
    """Rotary models export as transformers' ModernBERT (what `_modernbert` imports), the others as BERT."""
    return cfg.positions == "rotary"


def check_expressible(cfg: ModelConfig, task: str | None) -> None:
    """One ConfigError line naming the first option transformers' BERT (ModernBERT for a rotary model) cannot
    express (`task` None: the encoder alone, as sentence-transformers loads it)."""
    modern = modernbert_family(cfg)
    for key, fine, why in UNEXPRESSIBLE_MODERN if modern else UNEXPRESSIBLE:
        if not fine(cfg):
            value = getattr(cfg.attention, key.rsplit(".", 1)[1]) if ".attention." in key else getattr(cfg, key[6:])
            value = str(value).lower() if isinstance(value, bool) else repr(value)  # as it is typed: true, not True
            raise ConfigError(f"{key}={value} has no equivalent in transformers' {'ModernBERT' if modern else 'BERT'} "
                              f"({why}); export with the default --format encoder instead")
    if modern and _task(task) is not None:
        raise ConfigError(f"a rotary model exports to transformers' ModernBERT as the encoder alone: its "
                          f"ModernBertFor{_task(task).hf_class.removeprefix('BertFor')} head (dense, activation, norm) "
                          f"is not task={task}'s; export with --format sentence-transformers (embeddings) or the "
                          f"default --format encoder")
    head = _task(task)
    if head is not None and head.hf_pooler and (cfg.pooling != "cls" or not cfg.pooler):
        raise ConfigError(f"model.pooling={cfg.pooling}, model.pooler={str(cfg.pooler).lower()}: transformers' "
                          f"{head.hf_class} classifies BERT's pooled [CLS] (model.pooling=cls "
                          f"model.pooler=true); export the encoder for embeddings with --format sentence-transformers")


def bert_config_dict(cfg: ModelConfig, task: str | None = "classification",
                     label_names: list[str] | None = None) -> dict:
    """config.json of the same architecture for `transformers` (`task` None: a BertModel)."""
    check_expressible(cfg, task)
    head = _task(task)
    config = {
        "model_type": "bert", "architectures": [head.hf_class if head else "BertModel"],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.attention.num_heads, "intermediate_size": cfg.ffn_dim,
        "hidden_act": ACTIVATIONS[cfg.activation], "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention.dropout, "classifier_dropout": cfg.classifier_dropout,
        "max_position_embeddings": cfg.max_positions, "type_vocab_size": max(1, cfg.type_vocab_size),
        "layer_norm_eps": cfg.layer_norm_eps, "pad_token_id": cfg.pad_token_id, "tie_word_embeddings": True,
    }
    return {**config, **(head.hf_config(label_names) if head else {})}


def modernbert_config_dict(cfg: ModelConfig) -> dict:
    """config.json of a ModernBertModel of the same architecture (check_expressible first): transformers 5's keys
    (`layer_types`, `rope_parameters`) and the older ones the Hub's ModernBERT checkpoints carry."""
    layers = ["sliding_attention" if cfg.local_attention and i % cfg.global_every else "full_attention"
              for i in range(cfg.num_layers)]
    return {
        "model_type": "modernbert", "architectures": ["ModernBertModel"], "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim, "intermediate_size": cfg.ffn_dim, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.attention.num_heads, "hidden_activation": ACTIVATIONS[cfg.activation],
        "max_position_embeddings": cfg.max_positions, "norm_eps": cfg.layer_norm_eps, "norm_bias": cfg.bias,
        "mlp_bias": cfg.bias, "attention_bias": cfg.attention.bias, "pad_token_id": cfg.pad_token_id,
        "embedding_dropout": 0.0, "attention_dropout": cfg.attention.dropout, "mlp_dropout": 0.0,
        "layer_types": layers, "local_attention": cfg.local_attention or cfg.max_positions,
        "global_attn_every_n_layers": cfg.global_every if cfg.local_attention else 1,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta}},
        "global_rope_theta": cfg.rope_theta, "local_rope_theta": cfg.local_rope_theta,
        "classifier_pooling": cfg.pooling, "tie_word_embeddings": True,
    }


def modernbert_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our encoder's weights under ModernBertModel's names (the inverse of `_modernbert`)."""
    return {theirs.format(kind): state[ours.format(kind)].contiguous()
            for ours, theirs in _modern_names(cfg.num_layers) for kind in ("weight", "bias") if ours.format(kind) in state}


def bert_config(cfg: ModelConfig):
    """The `transformers.BertConfig` of the same architecture (SDPA attention), for tests and benchmarks."""
    from transformers import BertConfig

    return BertConfig(**{**bert_config_dict(cfg), "num_labels": cfg.num_labels}, attn_implementation="sdpa")


def bert_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig, task: str | None) -> dict[str, torch.Tensor]:
    """Our weights (a task model's state dict) under the names of the task's transformers class."""
    head = _task(task)
    prefix = "" if head is None else "bert."
    out = {theirs: state[ours] for ours, theirs in _pairs(cfg.num_layers, prefix)}
    for ours, theirs in _qkv(cfg.num_layers, prefix):
        out.update(zip(theirs, state[ours].chunk(3)))
    # without segments of ours: one segment whose embedding is zero (BERT adds it to every token)
    segments = state.get("encoder.embeddings.segments.weight")
    out[f"{prefix}embeddings.token_type_embeddings.weight"] = segments if segments is not None \
        else torch.zeros(1, cfg.embed_dim)
    if head is not None:
        out.update(head.hf_head(state))
    return {k: v.contiguous() for k, v in out.items()}


def to_bert(model: torch.nn.Module):
    """A `transformers.BertForSequenceClassification` computing the same function as `model`."""
    from transformers import BertForSequenceClassification

    bert = BertForSequenceClassification(bert_config(model.cfg))
    missing, unexpected = bert.load_state_dict(bert_state_dict(model.state_dict(), model.cfg, "classification"),
                                               strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return bert.train(model.training)


def _hf_model(saved, task: str | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and weights of `saved` as transformers' BERT (with `task`'s head), or as a ModernBertModel."""
    cfg = saved.config
    if modernbert_family(cfg):  # a ModernBertModel (the encoder alone)
        check_expressible(cfg, task)
        return modernbert_config_dict(cfg), modernbert_state_dict(saved.state, cfg)
    config, state = bert_config_dict(cfg, task, saved.label_names), bert_state_dict(saved.state, cfg, task)
    if task is None:  # the encoder alone, as a BertModel: BERT's pooler, zero. sentence-transformers never reads it
        # (its pooling is 1_Pooling), and with it present no option must tell BertModel to build none: its ONNX
        # backend hands such model_args to optimum, which refuses add_pooling_layer
        state |= {"pooler.dense.weight": torch.zeros(cfg.embed_dim, cfg.embed_dim),
                  "pooler.dense.bias": torch.zeros(cfg.embed_dim)}
    return config, state


def write_hf(saved, folder: Path, sentence_transformers_only: bool = False, normalize: bool = False,
             truncate_dim: int | None = None) -> None:
    """`saved` (encoder.core.checkpoint.Saved) as a folder `transformers` loads with no code of ours
    (AutoModelFor<Task>, AutoTokenizer, pipelines) that is also a sentence-transformers model whose
    `encode` is our `embed`. `sentence_transformers_only`: the encoder alone (a BertModel). `normalize`: its
    vectors of unit length (a Normalize module), `truncate_dim`: their first that many dimensions (its config)."""
    from safetensors.torch import save_file

    # a task without a transformers class of its own (embedding: its projection is sentence-transformers'
    # Dense) is written as the encoder alone
    cfg = saved.config
    task = None if sentence_transformers_only or _task(saved.task) is None else saved.task
    config, state = _hf_model(saved, task)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    files = {
        "config.json": config,
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": saved.max_length,
                                  **specials},
        "special_tokens_map.json": specials,
        # sentence-transformers: the Transformer module (this folder) then pooling as ours
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
        # a task's folder without BERT's pooler (token tasks) tells BertModel not to build one, or sentence-transformers
        # would report its weights as MISSING (they are unused by its pooling anyway)
        "sentence_bert_config.json": {"max_seq_length": saved.max_length, "do_lower_case": False, **(
            {} if task is None or _task(task).hf_pooler else {"model_args": {"add_pooling_layer": False}})},
        "1_Pooling/config.json": {"word_embedding_dimension": cfg.embed_dim,
                                  "pooling_mode_cls_token": cfg.pooling == "cls",
                                  "pooling_mode_mean_tokens": cfg.pooling == "mean",
                                  "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False},
    }
    dense = tasks.get(saved.task).sentence_dense(saved.state)
    if dense is not None:  # (task=embedding: the pooled vector projected to the teacher's width)
        files["modules.json"].append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        out_features, in_features = dense["linear.weight"].shape
        files["2_Dense/config.json"] = {"in_features": in_features, "out_features": out_features, "bias": True,
                                        "activation_function": "torch.nn.modules.linear.Identity"}
        (folder / "2_Dense").mkdir()
        save_file({k: v.contiguous() for k, v in dense.items()}, folder / "2_Dense" / "model.safetensors",
                  metadata={"format": "pt"})
    if normalize:
        files["modules.json"].append({"idx": len(files["modules.json"]), "name": str(len(files["modules.json"])),
                                      "path": f"{len(files['modules.json'])}_Normalize",
                                      "type": "sentence_transformers.models.Normalize"})
        (folder / files["modules.json"][-1]["path"]).mkdir()
    if truncate_dim is not None:
        files["config_sentence_transformers.json"] = {"truncate_dim": truncate_dim}
    (folder / "1_Pooling").mkdir()
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    (folder / "tokenizer.json").write_text(saved.tokenizer_json, encoding="utf-8")


# ---- import: a BERT-family folder -> ours -------------------------------------------------
def load_bert(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(architecture for ModelConfig, weights under our names, tokenizer JSON) of a BERT folder (or a ModernBERT
    one: `_modernbert`).

    Its token-type (segment) embeddings become ours (`type_vocab_size`, 2 for BERT): a single text is
    segment 0 throughout, a pair 0 then 1, as in BERT. The pooler is returned when the folder has one.
    """
    folder = Path(folder)
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"model.init_from={folder} lacks {', '.join(missing)}; point it at a BERT-style folder "
                          f"(config.json, model.safetensors, tokenizer.json) or an encoder export")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    modern = config.get("model_type") == "modernbert"
    if not modern and (config.get("model_type") != "bert" or
                       config.get("position_embedding_type", "absolute") != "absolute"):
        raise ConfigError(f"{folder} holds a {config.get('model_type')!r} model; only BERT-style encoders "
                          f"(model_type bert, absolute positions) and ModernBERT can be imported")
    activation = config.get("hidden_activation" if modern else "hidden_act")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"{folder} uses activation {activation!r}; supported: {list(ACTIVATIONS)}")
    tensors = _read_tensors(folder)
    tokenizer = finalize(load_tokenizer(folder / "tokenizer.json")).to_str()
    if modern:
        return (*_modernbert(folder, config, tensors), tokenizer)
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
            "norm": "layernorm", "ffn": "plain", "bias": True,
            "attention": {"num_heads": config["num_attention_heads"], "bias": True, "add_bias_kv": False,
                          "add_zero_attn": False}}
    return arch, state, tokenizer


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors of a folder to import: a damaged file or a tensor that is not finite is one line."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(folder / "model.safetensors")
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError...: a damaged or truncated file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"model.init_from={folder}: model.safetensors is not a readable safetensors file "
                          f"({first}); the folder is damaged or incomplete: copy or download it again") from None
    broken = next((name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if broken is not None:
        raise ConfigError(f"model.init_from={folder}: its tensor {broken} holds values that are not finite (inf or "
                          f"NaN); the file is damaged: training from it would fail whatever the learning rate")
    return tensors


def _modernbert(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A ModernBERT (or Ettin) encoder as ours: rotary attention with its local/global layers and their two rotary
    bases, GeGLU, pre-norm with no norm before layer 0's attention, LayerNorm and linear layers without biases
    (`model=modern_small`'s blocks). Configs of transformers 5 (`layer_types`, `rope_parameters`) and the older
    ones the Hub's checkpoints carry (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`)."""
    layers = config["num_hidden_layers"]
    types = config.get("layer_types") or ["full_attention" if i % config.get("global_attn_every_n_layers", 1) == 0
                                          else "sliding_attention" for i in range(layers)]
    local = "sliding_attention" in types
    every = next((i for i, t in enumerate(types) if i and t == "full_attention"), layers) if local else 1
    if types != ["full_attention" if i % every == 0 else "sliding_attention" for i in range(layers)]:
        raise ConfigError(f"{folder}: its layers' attention {types} is not global every n-th layer from the first "
                          f"and local otherwise, the one pattern model.global_every expresses")
    rope = config.get("rope_parameters") or {}
    theta = {kind: (rope.get(kind) or {}).get("rope_theta", config.get(key, default)) for kind, key, default in
             (("full_attention", "global_rope_theta", 160000.0), ("sliding_attention", "local_rope_theta", 10000.0))}
    if config.get("norm_bias", False) != config.get("mlp_bias", False):
        raise ConfigError(f"{folder}: norm_bias={config.get('norm_bias')} and mlp_bias={config.get('mlp_bias')} "
                          f"differ; model.bias sets both, so only equal ones can be imported")
    prefix = "model." if any(k.startswith("model.") for k in tensors) else ""
    state = {ours.format(kind): tensors[prefix + theirs.format(kind)] for ours, theirs in _modern_names(layers)
             for kind in ("weight", "bias") if prefix + theirs.format(kind) in tensors}
    arch = {"embed_dim": config["hidden_size"], "num_layers": layers, "ffn_dim": config["intermediate_size"],
            "max_positions": config["max_position_embeddings"], "activation": config["hidden_activation"],
            "type_vocab_size": 0, "layer_norm_eps": config.get("norm_eps", 1e-5), "norm_first": True,
            "positions": "rotary", "rope_theta": theta["full_attention"], "norm": "layernorm", "ffn": "gated",
            "bias": config.get("mlp_bias", False), "first_attention_norm": False,
            "local_attention": config.get("local_attention", 128) if local else 0, "global_every": every if local else 1,
            "local_rope_theta": theta["sliding_attention"],
            "attention": {"num_heads": config["num_attention_heads"], "bias": config.get("attention_bias", False),
                          "add_bias_kv": False, "add_zero_attn": False}}
    return arch, state
