"""The encoder, readable top to bottom: embeddings -> N x EncoderLayer -> pooling -> head.

Conventions (see ARCHITECTURE.md): `padding_mask` is a bool tensor [batch, seq], True = padding, built
only by the collator. Every row has at least one real token ([CLS]) so no attention row is empty.

Padding is skipped wherever it can be: with `Encoder.unpad` (on by default) the hidden states of
the real tokens only are kept packed as [n_real, dim]; each layer scatters them into a padded
[batch, seq, dim] tensor for `nn.MultiheadAttention` and gathers the result back, so the
feed-forward block, norms, residuals and dropout never touch a padded position (rotary attention skips the
padded view too: `RotaryAttention.varlen`). `unpad=False` runs the plain padded computation; tests check both give
the same outputs at real positions.

The default blocks are BERT's (learned positions, LayerNorm, a plain feed-forward, biases, `nn.MultiheadAttention`).
Modern ones are options beside them (`model=modern_small` composes them): rotary positions (`RotaryAttention`, the
same packed in-projection with q and k rotated, then torch's scaled_dot_product_attention), RMSNorm, a gated
feed-forward (GeGLU / SwiGLU) and bias-free layers; and for transformers' ModernBERT, local attention layers (a
window around each token) between global ones, and no norm before layer 0's attention.

Each task's head (`EncoderForSequenceClassification`, ...) lives with its task in encoder/tasks/.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from encoder.core import options
from encoder.core.options import AttentionConfig, ModelConfig  # noqa: F401 (imported from here too)


# the options (ModelConfig) are in encoder/core/options.py, free of torch; here what each one builds
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
assert tuple(ACTIVATIONS) == options.ACTIVATIONS
# RotaryAttention.varlen on CPU: torch's math path converts to its older nested layout, which warns that it is a
# prototype (the jagged layout used here is not)
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos position table of 'Attention is all you need'."""
    position = torch.arange(num_positions).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos and sin [batch, 1, seq, head_dim] at each token's position (Su et al. 2021), in the half-split
    layout transformers' ModernBERT and LLaMA use: dimension i pairs with i + head_dim / 2."""
    freq = theta ** -(torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.unsqueeze(-1).float() * freq
    angles = torch.cat([angles, angles], -1).unsqueeze(1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Each pair of x's dimensions turned by its position's angle: q.k then depends on positions' difference only."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps, bias=cfg.bias)


class Embeddings(nn.Module):
    """token + position (+ segment) embeddings, a norm, dropout (the BERT recipe). Rotary positions add
    nothing here: they turn queries and keys in attention.

    With segment embeddings, a single text (no `token_type_ids`) is segment 0 throughout, as in BERT."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_token_id)
        self.positions = nn.Embedding(cfg.max_positions, cfg.embed_dim) if cfg.positions == "learned" else None
        table = sinusoidal_table(cfg.max_positions, cfg.embed_dim) if cfg.positions == "sinusoidal" else None
        self.register_buffer("sinusoidal", table, persistent=False)
        self.segments = nn.Embedding(cfg.type_vocab_size, cfg.embed_dim) if cfg.type_vocab_size else None
        self.norm = make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(input_ids)
        if self.positions is not None:
            x = x + self.positions(position_ids)
        elif self.sinusoidal is not None:
            x = x + self.sinusoidal[position_ids]
        if self.segments is not None:
            x = x + (self.segments(token_type_ids) if token_type_ids is not None else self.segments.weight[0])
        return self.dropout(self.norm(x))


class RotaryAttention(nn.Module):
    """Self-attention with rotary positions: q, k, v from one packed in-projection (`nn.MultiheadAttention`'s
    layout and names: `in_proj_weight` [3 * dim, dim], `in_proj_bias`, `out_proj`), q and k rotated by each
    token's position, then torch's scaled_dot_product_attention (its fused kernels on CPU and GPU)."""

    def __init__(self, cfg: ModelConfig, local: bool = False):
        super().__init__()
        dim, a = cfg.embed_dim, cfg.attention
        self.num_heads, self.dropout = a.num_heads, a.dropout
        self.reach = cfg.local_attention // 2 if local else None  # a local layer's tokens: this many either side
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if a.bias else None
        self.out_proj = nn.Linear(dim, dim, bias=a.bias)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention starts

    def heads(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """q (rotated), k (rotated), v, each [batch, heads, seq, head_dim]."""
        batch, seq, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(batch, seq, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return rotate(q, *rotary), rotate(k, *rotary), v

    def allowed(self, padding_mask: torch.Tensor | None, blocked: torch.Tensor | None, shape: tuple,
                device: torch.device) -> torch.Tensor | None:
        """The [batch, heads or 1, seq, seq] mask of scaled_dot_product_attention (True = may attend) from the
        padding mask, `nn.MultiheadAttention`'s `blocked` [batch * heads, seq, seq] (True = may not) and, in a
        local layer, the window."""
        batch, heads, seq = shape
        allowed = ~padding_mask[:, None, None, :] if padding_mask is not None else None
        if blocked is not None:
            inside = ~blocked.view(batch, heads, seq, seq)
            allowed = inside if allowed is None else inside & allowed
        if self.reach is not None:
            near = torch.arange(seq, device=device)
            near = (near[:, None] - near[None, :]).abs() <= self.reach
            allowed = near if allowed is None else allowed & near
        return allowed

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, blocked: torch.Tensor | None,
                rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.heads(x, rotary)
        mask = self.allowed(padding_mask, blocked, (batch, self.num_heads, seq), x.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, dim))

    def varlen(self, x: torch.Tensor, offsets: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Attention over texts laid end to end without padding: `x` [n_real, dim], the text starting at each of
        `offsets` [texts + 1] attends within itself only. Through nested tensors (jagged layout), so no [batch *
        heads, seq, seq] mask is built and attention costs each text's length squared, not the row's: on GPU
        FlashAttention's variable-length kernel, on CPU torch's math path, text by text."""
        n, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(n, 3, self.num_heads, -1)
        q, k, v = (t.contiguous() for t in qkv.unbind(1))  # [n, heads, head_dim] each
        q, k = rotate(q, *rotary), rotate(k, *rotary)
        q, k, v = (torch.nested.nested_tensor_from_jagged(t, offsets).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).values().reshape(n, dim))

    def probabilities(self, x: torch.Tensor, padding_mask: torch.Tensor,
                      rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """[batch, heads, seq, seq] attention probabilities, for `Encoder.attention_maps`."""
        q, k, _ = self.heads(x, rotary)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        allowed = self.allowed(padding_mask, None, (x.shape[0], 1, x.shape[1]), x.device)
        return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


class GatedFeedForward(nn.Module):
    """activation(x W) * (x V), then a linear layer (GeGLU with gelu, SwiGLU with silu: Shazeer 2020). W and V
    are one matrix, as in transformers' ModernBERT (`Wi`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wi = nn.Linear(cfg.embed_dim, 2 * cfg.ffn_dim, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.wo = nn.Linear(cfg.ffn_dim, cfg.embed_dim, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.wi(x).chunk(2, dim=-1)
        return self.wo(self.act(x) * gate)


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each wrapped in dropout, a residual and a norm.

    Post-LN (BERT, `nn.TransformerEncoderLayer` default): x = norm(x + dropout(block(x))).
    Pre-LN: x = x + dropout(block(norm(x))).
    `x` is either padded [batch, seq, dim] (index None) or packed real tokens [n_real, dim], with
    `index` the flat positions of those tokens in the [batch * seq] grid.
    """

    def __init__(self, cfg: ModelConfig, index: int = 0):
        super().__init__()
        a = cfg.attention
        self.local = cfg.local_attention > 0 and index % cfg.global_every != 0  # (ModernBERT's local layers)
        if cfg.positions == "rotary":
            self.attn = RotaryAttention(cfg, self.local)
        else:
            self.attn = nn.MultiheadAttention(
                cfg.embed_dim, a.num_heads, dropout=a.dropout, bias=a.bias,
                add_bias_kv=a.add_bias_kv, add_zero_attn=a.add_zero_attn, batch_first=True,
            )
        if cfg.ffn == "gated":
            self.ffn = GatedFeedForward(cfg)
        else:
            self.ffn = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.ffn_dim, bias=cfg.bias), ACTIVATIONS[cfg.activation](),
                                     nn.Linear(cfg.ffn_dim, cfg.embed_dim, bias=cfg.bias))
        self.norm1 = make_norm(cfg) if cfg.first_attention_norm or index else nn.Identity()
        self.norm2 = make_norm(cfg)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def attend(self, x: torch.Tensor, padding_mask: torch.Tensor | None, blocked: torch.Tensor | None,
               rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if rotary is not None:
            return self.attn(x, padding_mask, blocked, rotary)
        return self.attn(x, x, x, key_padding_mask=padding_mask, attn_mask=blocked, need_weights=False)[0]

    def attention(self, x: torch.Tensor, padding_mask: torch.Tensor | None, index: torch.Tensor | None,
                  blocked: torch.Tensor | None, rotary: tuple[torch.Tensor, torch.Tensor] | None,
                  offsets: torch.Tensor | None = None) -> torch.Tensor:
        if offsets is not None:  # rotary, unpadded: the real tokens attend text by text, never padded
            return self.attn.varlen(x, offsets, rotary)
        if index is None:
            return self.attend(x, padding_mask, blocked, rotary)
        batch, seq = padding_mask.shape
        padded = x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, index, x).view(batch, seq, -1)
        out = self.attend(padded, padding_mask, blocked, rotary)
        return out.reshape(batch * seq, -1).index_select(0, index)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, index: torch.Tensor | None = None,
                blocked: torch.Tensor | None = None, rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                offsets: torch.Tensor | None = None) -> torch.Tensor:
        """`blocked` [batch * heads, seq, seq]: True where a token may not attend (another document's);
        `rotary`: the cos and sin tables of rotary positions (`rotary_tables`), None without them; `offsets`: where
        each text starts among the packed real tokens (`text_offsets`), for `RotaryAttention.varlen`."""
        if self.norm_first:
            x = x + self.dropout1(self.attention(self.norm1(x), padding_mask, index, blocked, rotary, offsets))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.attention(x, padding_mask, index, blocked, rotary, offsets)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class Encoder(nn.Module):
    """Embeddings and a stack of layers; returns hidden states [batch, seq, dim], zero at padding."""

    def __init__(self, cfg: ModelConfig, unpad: bool = True):
        super().__init__()
        self.cfg = cfg
        self.unpad = unpad  # a run-time switch, not architecture: both paths compute the same function
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = make_norm(cfg) if cfg.norm_first else nn.Identity()

    def rotary(self, positions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Each layer's rotary tables at `positions` (None without rotary positions): local layers turn by
        `local_rope_theta`, global ones by `rope_theta`."""
        cfg = self.cfg
        if cfg.positions != "rotary":
            return [None] * len(self.layers)
        head_dim = cfg.embed_dim // cfg.attention.num_heads
        tables = {local: rotary_tables(positions, head_dim, cfg.local_rope_theta if local else cfg.rope_theta)
                  for local in {layer.local for layer in self.layers}}
        return [tables[layer.local] for layer in self.layers]

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, documents: torch.Tensor | None = None) -> torch.Tensor:
        """`documents` [batch, seq] (packed rows, data.document_attention): the document of each token; each
        document is then encoded as if alone in its row (see `within_documents`)."""
        batch, seq = input_ids.shape
        if seq > self.cfg.max_positions:
            raise ValueError(f"sequence length {seq} exceeds model.max_positions={self.cfg.max_positions}; "
                             f"lower data.max_length")
        positions = torch.arange(seq, device=input_ids.device).expand(batch, seq)
        if documents is not None:
            positions = document_positions(documents)
        # A graph export (ONNX) cannot branch on data: it takes the padded path with the mask.
        exporting = torch.compiler.is_exporting()
        has_padding = exporting or bool(padding_mask.any())
        # Rotary attention on real tokens only (no padding, no mask: RotaryAttention.varlen) whenever there is
        # padding or a row holds several documents; nn.MultiheadAttention needs the padded grid and a mask.
        varlen = (self.cfg.positions == "rotary" and not self.cfg.local_attention  # (a window is a mask: padded)
                  and self.unpad and not exporting and (has_padding or documents is not None))
        blocked = within_documents(documents, padding_mask, self.cfg.attention.num_heads) \
            if documents is not None and not varlen else None
        if not varlen and (not self.unpad or not has_padding or exporting):
            # Without padding there is nothing to skip, and attention needs no mask (a faster kernel).
            mask = padding_mask if has_padding else None
            x = self.embeddings(input_ids, positions, token_type_ids)
            for layer, rotary in zip(self.layers, self.rotary(positions)):
                x = layer(x, mask, blocked=blocked, rotary=rotary)
            return self.final_norm(x).masked_fill(padding_mask.unsqueeze(-1), 0.0)
        # Gather the real tokens once; everything but attention runs on them only.
        index = (~padding_mask).flatten().nonzero().squeeze(1)
        segments = token_type_ids.flatten()[index] if token_type_ids is not None else None
        x = self.embeddings(input_ids.flatten()[index], positions.flatten()[index], segments)
        if varlen:  # the rotary tables of the real tokens only, and where each text starts among them
            rotary, offsets = self.rotary(positions.flatten()[index]), text_offsets(padding_mask, documents, index)
        else:  # on the padded grid, where attention runs
            rotary, offsets = self.rotary(positions), None
        for layer, tables in zip(self.layers, rotary):
            x = layer(x, padding_mask, index, blocked, tables, offsets)
        x = self.final_norm(x)
        return x.new_zeros(batch * seq, x.shape[-1]).index_copy(0, index, x).view(batch, seq, -1)

    @torch.no_grad()
    def attention_maps(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each layer's attention probabilities [batch, heads, seq, seq], for visualisation only:
        the one place that asks `nn.MultiheadAttention` for weights (`need_weights=True` leaves
        the fused kernels). Call it in eval mode (no dropout) to see what the model attends to."""
        batch, seq = input_ids.shape
        positions = torch.arange(seq, device=input_ids.device).expand(batch, seq)
        x, rotaries = self.embeddings(input_ids, positions, token_type_ids), self.rotary(positions)
        maps = []
        for layer, rotary in zip(self.layers, rotaries):
            h = layer.norm1(x) if layer.norm_first else x  # what the attention block sees
            if rotary is not None:
                maps.append(layer.attn.probabilities(h, padding_mask, rotary))
            else:
                maps.append(layer.attn(h, h, h, key_padding_mask=padding_mask, need_weights=True,
                                       average_attn_weights=False)[1])
            x = layer(x, padding_mask, rotary=rotary)
        return maps


def document_positions(documents: torch.Tensor) -> torch.Tensor:
    """For rows packed with several documents ([batch, seq], the document of each token): each token's position
    counted from its document's first token."""
    batch, seq = documents.shape
    arange = torch.arange(seq, device=documents.device).expand(batch, seq)
    first = torch.ones_like(documents, dtype=torch.bool)
    first[:, 1:] = documents[:, 1:] != documents[:, :-1]
    return arange - torch.where(first, arange, 0).cummax(1).values


def within_documents(documents: torch.Tensor, padding_mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The attention mask [batch * heads, seq, seq] (`nn.MultiheadAttention`'s `attn_mask`, True = may not attend)
    that keeps each token of a packed row within its document. Padding rows stay open to every real token, as
    without documents (a row that may attend nowhere gives NaN, and padding's outputs are dropped anyway)."""
    blocked = (documents.unsqueeze(2) != documents.unsqueeze(1)) & ~padding_mask.unsqueeze(2)
    return blocked.repeat_interleave(num_heads, dim=0)


def text_offsets(padding_mask: torch.Tensor, documents: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
    """Where each text starts among the real tokens `index` (flat positions in the [batch * seq] grid, in order),
    and their count at the end: a text is a row's real tokens, or with `documents` each document of a row."""
    batch, seq = padding_mask.shape
    rows = torch.arange(batch, device=index.device).repeat_interleave(seq)
    key = rows * seq + (documents.flatten() if documents is not None else 0)
    key = key[index]
    starts = (key[1:] != key[:-1]).nonzero().squeeze(1) + 1
    ends = torch.tensor([0, key.numel()], device=index.device)
    return torch.cat([ends[:1], starts, ends[1:]])


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
    elif isinstance(module, (nn.MultiheadAttention, RotaryAttention)):
        if module.in_proj_weight is not None:
            nn.init.normal_(module.in_proj_weight, std=0.02)
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)
        if getattr(module, "bias_k", None) is not None:
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
