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

import torch
from torch import nn

from encoder.core import options
from encoder.core.options import AttentionConfig, ModelConfig  # noqa: F401 (imported from here too)


# the options (ModelConfig) are in encoder/core/options.py, free of torch; here what each one builds
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
assert tuple(ACTIVATIONS) == options.ACTIVATIONS


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

    def attention(self, x: torch.Tensor, padding_mask: torch.Tensor | None, index: torch.Tensor | None,
                  blocked: torch.Tensor | None) -> torch.Tensor:
        if index is None:
            return self.attn(x, x, x, key_padding_mask=padding_mask, attn_mask=blocked, need_weights=False)[0]
        batch, seq = padding_mask.shape
        padded = x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, index, x).view(batch, seq, -1)
        out = self.attn(padded, padded, padded, key_padding_mask=padding_mask, attn_mask=blocked, need_weights=False)[0]
        return out.reshape(batch * seq, -1).index_select(0, index)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, index: torch.Tensor | None = None,
                blocked: torch.Tensor | None = None) -> torch.Tensor:
        """`blocked` [batch * heads, seq, seq]: True where a token may not attend (another document's)."""
        if self.norm_first:
            x = x + self.dropout1(self.attention(self.norm1(x), padding_mask, index, blocked))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.attention(x, padding_mask, index, blocked)))
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
                token_type_ids: torch.Tensor | None = None, documents: torch.Tensor | None = None) -> torch.Tensor:
        """`documents` [batch, seq] (packed rows, data.document_attention): the document of each token; each
        document is then encoded as if alone in its row (see `within_documents`)."""
        batch, seq = input_ids.shape
        if seq > self.cfg.max_positions:
            raise ValueError(f"sequence length {seq} exceeds model.max_positions={self.cfg.max_positions}; "
                             f"lower data.max_length")
        positions = torch.arange(seq, device=input_ids.device).expand(batch, seq)
        blocked = None
        if documents is not None:
            positions, blocked = within_documents(documents, padding_mask, self.cfg.attention.num_heads)
        # A graph export (ONNX) cannot branch on data: it takes the padded path with the mask.
        exporting = torch.compiler.is_exporting()
        has_padding = exporting or bool(padding_mask.any())
        if not self.unpad or not has_padding or exporting:
            # Without padding there is nothing to skip, and attention needs no mask (a faster kernel).
            mask = padding_mask if has_padding else None
            x = self.embeddings(input_ids, positions, token_type_ids)
            for layer in self.layers:
                x = layer(x, mask, blocked=blocked)
            return self.final_norm(x).masked_fill(padding_mask.unsqueeze(-1), 0.0)
        # Gather the real tokens once; everything but attention runs on them only.
        index = (~padding_mask).flatten().nonzero().squeeze(1)
        segments = token_type_ids.flatten()[index] if token_type_ids is not None else None
        x = self.embeddings(input_ids.flatten()[index], positions.flatten()[index], segments)
        for layer in self.layers:
            x = layer(x, padding_mask, index, blocked)
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


def within_documents(documents: torch.Tensor, padding_mask: torch.Tensor,
                     num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows packed with several documents: positions counted from each document's first token, and the
    attention mask [batch * heads, seq, seq] (`nn.MultiheadAttention`'s `attn_mask`, True = may not attend) that
    keeps each token within its document. Padding rows stay open to every real token, as without documents (a
    row that may attend nowhere gives NaN, and padding's outputs are dropped anyway)."""
    batch, seq = documents.shape
    arange = torch.arange(seq, device=documents.device).expand(batch, seq)
    first = torch.ones_like(padding_mask)
    first[:, 1:] = documents[:, 1:] != documents[:, :-1]
    start = torch.where(first, arange, 0).cummax(1).values
    blocked = (documents.unsqueeze(2) != documents.unsqueeze(1)) & ~padding_mask.unsqueeze(2)
    return arange - start, blocked.repeat_interleave(num_heads, dim=0)


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
