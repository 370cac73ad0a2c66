"""The architecture's options, as plain values: what checkpoints store and the config schema checks.

Kept apart from the model (encoder/core/model.py) and free of torch, so that composing and checking a config
(`python train.py` with a mistake in it) is answered before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from encoder.core.errors import ConfigError, check_choice

ACTIVATIONS = ("gelu", "relu", "silu")  # encoder/core/model.py maps each to its torch module
POSITIONS = ("learned", "sinusoidal", "rotary")
POOLINGS = ("cls", "mean")
NORMS = ("layernorm", "rmsnorm")
FEED_FORWARDS = ("plain", "gated")


def dotted(values: dict, prefix: str = "") -> dict:
    """Nested plain values as one level of dotted keys ({"attention": {"num_heads": 4}} -> {"attention.num_heads":
    4}), an empty dict a value of its own: how two configs are compared key by key (checkpoints, resumes)."""
    out = {}
    for key, value in values.items():
        out.update(dotted(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


@dataclass
class AttentionConfig:
    """Passed straight to `nn.MultiheadAttention` (its own option names); with rotary positions, `num_heads`,
    `dropout` and `bias` configure the rotary attention instead (it has no bias_k/bias_v or zero key)."""

    num_heads: int = 4
    dropout: float = 0.0  # on the attention probabilities (BERT: 0.1); 0 lets PyTorch use its fused kernel in training
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False


@dataclass
class ModelConfig:
    """Every architecture choice, as plain values: checkpoints store `dataclasses.asdict` of this. Its defaults are
    the default model, `model=small`: configs/model/small.yaml states the same values for the command line and
    `--help` (tests/test_configs.py keeps the two equal)."""

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
    positions: str = "learned"  # learned | sinusoidal (added to the embeddings) | rotary (RoPE, in attention)
    rope_theta: float = 10000.0  # rotary positions' base: the longest wavelength, in tokens, is 2 pi times it
    # rotary, ModernBERT's local/global attention: with local_attention > 0 every layer but each global_every-th
    # (from layer 0) is local, its tokens attending to those within local_attention / 2 positions either side
    local_attention: int = 0  # 0: every layer global (ModernBERT: 128, with global_every 3)
    global_every: int = 1
    local_rope_theta: float = 10000.0  # the local layers' rotary base (ModernBERT: 10,000, its global ones 160,000)
    first_attention_norm: bool = True  # pre-LN: false drops layer 0's norm before attention (ModernBERT's: the
    #                                    embeddings' norm is right before it)
    norm: str = "layernorm"  # layernorm | rmsnorm
    ffn: str = "plain"  # plain: linear, activation, linear; gated: activation(x W) * (x V), then linear (GeGLU, SwiGLU)
    bias: bool = True  # biases in the feed-forward's linear layers and in LayerNorm (the attention's: attention.bias)
    pooling: str = "mean"  # cls | mean (mean won on validation here: benchmarks/README.md)
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
        check_choice(self.norm, NORMS, "model.norm")
        check_choice(self.ffn, FEED_FORWARDS, "model.ffn")
        if self.norm == "rmsnorm" and self.layer_norm_eps < 1e-6:
            # torch's ONNX graph of RMSNorm loses so small an epsilon: padding's zero vectors become NaN (1e-8 does)
            raise ConfigError(f"model.norm=rmsnorm needs model.layer_norm_eps >= 1e-6 (got {self.layer_norm_eps}): "
                              f"with less its ONNX export computes NaN at padding; set model.layer_norm_eps=1e-5")
        self._check_rotary()
        check_choice(self.pooling, POOLINGS, "model.pooling")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"model.pad_token_id={self.pad_token_id} is outside the vocabulary")

    def _check_rotary(self) -> None:
        """The rules of rotary positions and ModernBERT's local layers and first norm."""
        heads = self.attention.num_heads
        if self.positions == "rotary":
            if not self.rope_theta > 0:
                raise ConfigError(f"model.rope_theta={self.rope_theta} must be above 0")
            if (self.embed_dim // heads) % 2:
                raise ConfigError(f"model.positions=rotary rotates pairs of each head's dimensions: embed_dim / "
                                  f"num_heads = {self.embed_dim // heads} must be even; change model.attention.num_heads")
            for key in ("add_bias_kv", "add_zero_attn"):
                if getattr(self.attention, key):
                    raise ConfigError(f"model.attention.{key}=true is an nn.MultiheadAttention option, which "
                                      f"model.positions=rotary does not use; set it to false")
        if not isinstance(self.local_attention, int) or self.local_attention < 0 or self.local_attention % 2:
            raise ConfigError(f"model.local_attention={self.local_attention!r} must be 0 (every layer global) or an "
                              f"even window, e.g. 128")
        if self.local_attention and self.positions != "rotary":
            raise ConfigError("model.local_attention is ModernBERT's local attention, a rotary option: set "
                              "model.positions=rotary or model.local_attention=0")
        if not isinstance(self.global_every, int) or self.global_every < 1:
            raise ConfigError(f"model.global_every={self.global_every!r} must be a positive integer (1: all global)")
        if not self.local_rope_theta > 0:
            raise ConfigError(f"model.local_rope_theta={self.local_rope_theta} must be above 0")
        if not self.first_attention_norm and not self.norm_first:
            raise ConfigError("model.first_attention_norm=false drops a pre-LN norm; post-LN (model.norm_first=false) "
                              "has none to drop: set model.norm_first=true")
