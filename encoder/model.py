"""The encoder, readable top to bottom: embeddings -> N x EncoderLayer -> pooling -> head.

Conventions (see ARCHITECTURE.md): `padding_mask` is a bool tensor [batch, seq], True = padding, built
only by the collator. Every row has at least one real token ([CLS]) so no attention row is empty.

Padding is skipped wherever it can be: with `Encoder.unpad` (on by default) the hidden states of
the real tokens only are kept packed as [n_real, dim]; each layer scatters them into a padded
[batch, seq, dim] tensor for `nn.MultiheadAttention` and gathers the result back, so the
feed-forward block, norms, residuals and dropout never touch a padded position. `unpad=False`
runs the plain padded computation; tests check both give the same outputs at real positions.

Each task's head (`EncoderForSequenceClassification`, ...) lives with its task in encoder/tasks/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from encoder.errors import ConfigError, check_choice


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
POSITIONS = ("learned", "sinusoidal")
POOLINGS = ("cls", "mean")


@dataclass
class AttentionConfig:
    """Passed straight to `nn.MultiheadAttention` (its own option names)."""

    num_heads: int = 4
    dropout: float = 0.1  # on the attention probabilities, as in BERT
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False


@dataclass
class ModelConfig:
    """Every architecture choice, as plain values: checkpoints store `dataclasses.asdict` of this."""

    vocab_size: int = 8192
    max_positions: int = 512
    type_vocab_size: int = 0  # segment (token-type) embeddings: 2 for text pairs, 0 for none
    embed_dim: int = 256
    num_layers: int = 4
    ffn_dim: int = 1024
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    dropout: float = 0.1  # embeddings and the output of each residual branch
    activation: str = "gelu"
    norm_first: bool = False  # False = post-LN (BERT), True = pre-LN (+ a final LayerNorm)
    positions: str = "learned"
    pooling: str = "cls"
    pooler: bool = False  # BERT's dense + tanh on the pooled vector before the classifier
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    classifier_dropout: float = 0.1

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Build from a plain dict (a checkpoint's or an export's), rejecting unknown keys by name.
        (Types are checked where configs are composed, by OmegaConf; see encoder/training/config.py.)"""
        values = dict(values)
        attention = values.pop("attention", None) or {}
        for known, given in ((cls, values), (AttentionConfig, attention)):
            names = [f.name for f in fields(known)]
            unknown = sorted(set(given) - set(names))
            if unknown:
                prefix = "model." if known is cls else "model.attention."
                raise ConfigError(f"unknown key {prefix}{unknown[0]}; known keys are {names}")
        return cls(**values, attention=AttentionConfig(**attention))

    def __post_init__(self):
        positive = ("vocab_size", "max_positions", "embed_dim", "num_layers", "ffn_dim", "num_labels")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise ConfigError(f"model.type_vocab_size={self.type_vocab_size!r} must be 0 (no segments) or more")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        heads = self.attention.num_heads
        if not isinstance(heads, int) or heads < 1:
            raise ConfigError(f"model.attention.num_heads={heads!r} must be a positive integer")
        if self.embed_dim % heads:
            raise ConfigError(
                f"model.embed_dim={self.embed_dim} is not divisible by model.attention.num_heads={heads}; "
                f"pick num_heads from {[h for h in range(1, 33) if self.embed_dim % h == 0]}"
            )
        for key, value in (("dropout", self.dropout), ("attention.dropout", self.attention.dropout),
                           ("classifier_dropout", self.classifier_dropout)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{key}={value} must be in [0, 1)")
        check_choice(self.activation, ACTIVATIONS, "model.activation")
        check_choice(self.positions, POSITIONS, "model.positions")
        check_choice(self.pooling, POOLINGS, "model.pooling")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"model.pad_token_id={self.pad_token_id} is outside the vocabulary")


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos position table of 'Attention is all you need'."""
    position = torch.arange(num_positions).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


class Embeddings(nn.Module):
    """token + position (+ segment) embeddings, LayerNorm, dropout (the BERT recipe).

    With segment embeddings, a single text (no `token_type_ids`) is segment 0 throughout, as in BERT."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_token_id)
        if cfg.positions == "learned":
            self.positions = nn.Embedding(cfg.max_positions, cfg.embed_dim)
        else:
            self.register_buffer("sinusoidal", sinusoidal_table(cfg.max_positions, cfg.embed_dim), persistent=False)
            self.positions = None
        self.segments = nn.Embedding(cfg.type_vocab_size, cfg.embed_dim) if cfg.type_vocab_size else None
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(input_ids)
        x = x + (self.positions(position_ids) if self.positions is not None else self.sinusoidal[position_ids])
        if self.segments is not None:
            x = x + (self.segments(token_type_ids) if token_type_ids is not None else self.segments.weight[0])
        return self.dropout(self.norm(x))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each wrapped in dropout, a residual and a LayerNorm.

    Post-LN (BERT, `nn.TransformerEncoderLayer` default): x = norm(x + dropout(block(x))).
    Pre-LN: x = x + dropout(block(norm(x))).
    `x` is either padded [batch, seq, dim] (index None) or packed real tokens [n_real, dim], with
    `index` the flat positions of those tokens in the [batch * seq] grid.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.attention
        self.attn = nn.MultiheadAttention(
            cfg.embed_dim, a.num_heads, dropout=a.dropout, bias=a.bias,
            add_bias_kv=a.add_bias_kv, add_zero_attn=a.add_zero_attn, batch_first=True,
        )
        self.ffn = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.ffn_dim), ACTIVATIONS[cfg.activation](), nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        )
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def attention(self, x: torch.Tensor, padding_mask: torch.Tensor | None, index: torch.Tensor | None) -> torch.Tensor:
        if index is None:
            return self.attn(x, x, x, key_padding_mask=padding_mask, need_weights=False)[0]
        batch, seq = padding_mask.shape
        padded = x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, index, x).view(batch, seq, -1)
        out = self.attn(padded, padded, padded, key_padding_mask=padding_mask, need_weights=False)[0]
        return out.reshape(batch * seq, -1).index_select(0, index)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout1(self.attention(self.norm1(x), padding_mask, index))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.attention(x, padding_mask, index)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class Encoder(nn.Module):
    """Embeddings and a stack of layers; returns hidden states [batch, seq, dim], zero at padding."""

    def __init__(self, cfg: ModelConfig, unpad: bool = True):
        super().__init__()
        self.cfg = cfg
        self.unpad = unpad  # a run-time switch, not architecture: both paths compute the same function
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps) if cfg.norm_first else nn.Identity()

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq = input_ids.shape
        if seq > self.cfg.max_positions:
            raise ValueError(f"sequence length {seq} exceeds model.max_positions={self.cfg.max_positions}; "
                             f"lower data.max_length")
        positions = torch.arange(seq, device=input_ids.device).expand(batch, seq)
        # A graph export (ONNX) cannot branch on data: it takes the padded path with the mask.
        exporting = torch.compiler.is_exporting()
        has_padding = exporting or bool(padding_mask.any())
        if not self.unpad or not has_padding or exporting:
            # Without padding there is nothing to skip, and attention needs no mask (a faster kernel).
            mask = padding_mask if has_padding else None
            x = self.embeddings(input_ids, positions, token_type_ids)
            for layer in self.layers:
                x = layer(x, mask)
            return self.final_norm(x).masked_fill(padding_mask.unsqueeze(-1), 0.0)
        # Gather the real tokens once; everything but attention runs on them only.
        index = (~padding_mask).flatten().nonzero().squeeze(1)
        segments = token_type_ids.flatten()[index] if token_type_ids is not None else None
        x = self.embeddings(input_ids.flatten()[index], positions.flatten()[index], segments)
        for layer in self.layers:
            x = layer(x, padding_mask, index)
        x = self.final_norm(x)
        return x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, index, x).view(batch, seq, -1)


    @torch.no_grad()
    def attention_maps(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each layer's attention probabilities [batch, heads, seq, seq], for visualisation only:
        the one place that asks `nn.MultiheadAttention` for weights (`need_weights=True` leaves
        the fused kernels). Call it in eval mode (no dropout) to see what the model attends to."""
        batch, seq = input_ids.shape
        x = self.embeddings(input_ids, torch.arange(seq, device=input_ids.device).expand(batch, seq), token_type_ids)
        maps = []
        for layer in self.layers:
            h = layer.norm1(x) if layer.norm_first else x  # what the attention block sees
            maps.append(layer.attn(h, h, h, key_padding_mask=padding_mask, need_weights=True,
                                   average_attn_weights=False)[1])
            x = layer(x, padding_mask)
        return maps


def pool(hidden: torch.Tensor, padding_mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per sequence: the [CLS] state, or the mean over real tokens (padding excluded)."""
    if how == "cls":
        return hidden[:, 0]
    keep = (~padding_mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) for linear and embedding weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            nn.init.normal_(module.in_proj_weight, std=0.02)
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)
        if module.bias_k is not None:
            nn.init.normal_(module.bias_k, std=0.02)
            nn.init.normal_(module.bias_v, std=0.02)


class TaskModel(nn.Module):
    """What every task's model shares: the encoder, and `embed`, the pooled sentence vectors."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)

    def embed(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return pool(self.encoder(input_ids, padding_mask, token_type_ids), padding_mask, self.cfg.pooling)
