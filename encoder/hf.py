"""Our encoder as a Hugging Face `BertForSequenceClassification` with the same weights.

Used to check our model against a reference implementation we did not write (tests) and to
benchmark both on equal footing (benchmarks/). `transformers` is only needed by these callers.
Our post-LN encoder with GELU, learned positions, [CLS] pooling and `pooler=True` *is* BERT; the
only layout difference is `nn.MultiheadAttention`'s packed q/k/v in-projection.
"""

from __future__ import annotations

import torch

from encoder.model import EncoderClassifier, ModelConfig


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
        hidden_act={"gelu": "gelu", "relu": "relu", "silu": "silu"}[cfg.activation],
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention.dropout,
        classifier_dropout=cfg.classifier_dropout, max_position_embeddings=cfg.max_positions,
        type_vocab_size=1, layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id,
        num_labels=cfg.num_labels, attn_implementation="sdpa",
    )


def to_bert_state_dict(model: EncoderClassifier) -> dict[str, torch.Tensor]:
    """Our weights under BERT's names (q/k/v split out of the packed in-projection)."""
    s = model.state_dict()
    out = {
        "bert.embeddings.word_embeddings.weight": s["encoder.embeddings.tokens.weight"],
        "bert.embeddings.position_embeddings.weight": s["encoder.embeddings.positions.weight"],
        # one segment whose embedding is zero: BERT adds it to every token
        "bert.embeddings.token_type_embeddings.weight": torch.zeros(1, model.cfg.embed_dim),
        "bert.embeddings.LayerNorm.weight": s["encoder.embeddings.norm.weight"],
        "bert.embeddings.LayerNorm.bias": s["encoder.embeddings.norm.bias"],
        "bert.pooler.dense.weight": s["pooler.0.weight"],
        "bert.pooler.dense.bias": s["pooler.0.bias"],
        "classifier.weight": s["classifier.weight"],
        "classifier.bias": s["classifier.bias"],
    }
    for i in range(model.cfg.num_layers):
        ours, theirs = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = s[f"{ours}attn.in_proj_{kind}"].chunk(3)
            out.update({
                f"{theirs}attention.self.query.{kind}": q,
                f"{theirs}attention.self.key.{kind}": k,
                f"{theirs}attention.self.value.{kind}": v,
                f"{theirs}attention.output.dense.{kind}": s[f"{ours}attn.out_proj.{kind}"],
                f"{theirs}attention.output.LayerNorm.{kind}": s[f"{ours}norm1.{kind}"],
                f"{theirs}intermediate.dense.{kind}": s[f"{ours}ffn.0.{kind}"],
                f"{theirs}output.dense.{kind}": s[f"{ours}ffn.2.{kind}"],
                f"{theirs}output.LayerNorm.{kind}": s[f"{ours}norm2.{kind}"],
            })
    return out


def to_bert(model: EncoderClassifier):
    """A `transformers.BertForSequenceClassification` computing the same function as `model`."""
    from transformers import BertForSequenceClassification

    bert = BertForSequenceClassification(bert_config(model.cfg))
    missing, unexpected = bert.load_state_dict(to_bert_state_dict(model), strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return bert.train(model.training)
