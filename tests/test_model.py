import pytest
import torch
from torch import nn
from torch.nn import functional as F

from encoder.core.collate import Collator
from encoder.core.errors import ConfigError
from encoder.core.model import (AttentionConfig, Encoder, EncoderLayer, GatedFeedForward, ModelConfig, RotaryAttention,
                                rotary_tables, rotate)
from encoder.tasks.classification import EncoderForSequenceClassification


def tiny(**overrides) -> ModelConfig:
    values = dict(vocab_size=50, embed_dim=32, num_layers=2, ffn_dim=64, max_positions=64, dropout=0.1)
    return ModelConfig(**{**values, **overrides})


# the modern blocks, as model=modern_small composes them (its attention also without biases)
MODERN = dict(positions="rotary", ffn="gated", norm="rmsnorm", bias=False, layer_norm_eps=1e-5)


def batch_with_short_first():
    """Row 0: a 5-token sentence; rows 1-2: much longer neighbours."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (3, 40), generator=g)
    ids[:, 0] = 2
    lengths = torch.tensor([5, 40, 23])
    mask = torch.arange(40) >= lengths[:, None]
    return ids.masked_fill(mask, 0), mask


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("positions,pooling,blocks", [("learned", "cls", {}), ("sinusoidal", "mean", {}),
                                                      ("rotary", "cls", MODERN)], ids=["learned", "sinusoidal", "modern"])
@pytest.mark.parametrize("unpad", [True, False])
def test_logits_do_not_depend_on_neighbours_padding(norm_first, positions, pooling, blocks, unpad):
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(tiny(**{**blocks, "norm_first": norm_first, "positions": positions,
                                                     "pooling": pooling})).eval()
    model.encoder.unpad = unpad
    ids, mask = batch_with_short_first()
    with torch.no_grad():
        in_batch = model(ids, mask)[0]
        alone = model(ids[:1, :5], mask[:1, :5])[0]
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("option", [{}, {"bias": False}, {"add_bias_kv": True}, {"add_zero_attn": True},
                                    {"add_bias_kv": True, "add_zero_attn": True}])
def test_every_attention_option_works_with_padding_masks(option):
    torch.manual_seed(0)
    cfg = tiny(attention=AttentionConfig(num_heads=4, **option))
    model = EncoderForSequenceClassification(cfg).eval()
    ids, mask = batch_with_short_first()
    with torch.no_grad():
        hidden = model.encoder(ids, mask)
        alone = model.encoder(ids[:1, :5], mask[:1, :5])
    assert torch.isfinite(hidden).all()
    torch.testing.assert_close(hidden[0, :5], alone[0], atol=1e-5, rtol=0)
    assert (hidden[mask] == 0).all()  # padded positions carry nothing
    # the option really is on: the parameters nn.MultiheadAttention creates for it exist
    attn = model.encoder.layers[0].attn
    assert (attn.bias_k is not None) == cfg.attention.add_bias_kv
    assert (attn.in_proj_bias is not None) == cfg.attention.bias
    assert attn.add_zero_attn == cfg.attention.add_zero_attn


@pytest.mark.parametrize("blocks", [{}, MODERN], ids=["classic", "modern"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_unpadded_and_padded_paths_agree_in_outputs_and_gradients(norm_first, blocks):
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(tiny(**blocks, norm_first=norm_first, dropout=0.0,
                                                  attention=AttentionConfig(2, dropout=0.0)))
    ids, mask = batch_with_short_first()
    results = []
    for unpad in (True, False):
        model.zero_grad()
        model.encoder.unpad = unpad
        hidden = model.encoder(ids, mask)
        hidden.pow(2).sum().backward()
        results.append((hidden.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("blocks", [{}, MODERN], ids=["classic", "modern"])
@pytest.mark.parametrize("unpad", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
def test_a_packed_row_with_document_attention_encodes_each_document_as_if_alone(norm_first, unpad, blocks):
    # data.document_attention: [CLS] a a a [SEP] b b [SEP] c [SEP] + padding gives, for each text, the hidden states
    # that text has alone in a row (positions from 0, attending to itself only); without it, the texts mix
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(tiny(**blocks, norm_first=norm_first, dropout=0.0,
                                                  attention=AttentionConfig(2, dropout=0.0))).eval()
    model.encoder.unpad = unpad
    cls, sep = 2, 3
    texts = [[cls, 11, 12, 13, sep], [21, 22, sep], [31, sep]]
    packed = [t for text in texts for t in text]
    collator = Collator(pad_token_id=0, pad_to_multiple_of=8, document_separator=sep)
    batch = collator([{"input_ids": packed}, {"input_ids": [cls, 41, sep]}])
    assert batch["documents"][0, :len(packed)].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]
    with torch.no_grad():
        together = model.encoder(batch["input_ids"], batch["padding_mask"], documents=batch["documents"])
        mixed = model.encoder(batch["input_ids"], batch["padding_mask"])
        start = 0
        for text in texts:
            alone = model.encoder(torch.tensor([text]), torch.zeros(1, len(text), dtype=torch.bool))[0]
            torch.testing.assert_close(together[0, start:start + len(text)], alone, atol=1e-5, rtol=1e-5)
            if start:  # the later texts are not the same without it (positions and neighbours differ)
                assert not torch.allclose(mixed[0, start:start + len(text)], alone, atol=1e-3)
            start += len(text)
        # the second row, one text and padding, is unchanged by it; padding stays zero
        torch.testing.assert_close(together[1], mixed[1], atol=1e-5, rtol=1e-5)
        assert torch.isfinite(together).all() and not together[batch["padding_mask"]].any()


def test_rotary_attention_on_packed_documents_builds_no_dense_mask_and_pads_nothing(monkeypatch):
    """model.positions=rotary, unpadded (the default): packed documents and padded rows reach attention as nested
    tensors of their real tokens, text by text, with no [batch * heads, seq, seq] mask (what each text then
    computes is checked against the text alone above)."""
    import encoder.core.model as model_module

    torch.manual_seed(0)
    model = EncoderForSequenceClassification(tiny(**MODERN, dropout=0.0, attention=AttentionConfig(2, dropout=0.0)))
    seen, sdpa = [], F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, k, v, **kw: seen.append(
        (q.is_nested, q.size(0), kw.get("attn_mask"))) or sdpa(q, k, v, **kw))
    monkeypatch.setattr(model_module, "within_documents", lambda *a: pytest.fail("a dense document mask was built"))
    collator = Collator(pad_token_id=0, pad_to_multiple_of=8, document_separator=3)
    batch = collator([{"input_ids": [2, 11, 12, 13, 3, 21, 22, 3, 31, 3]}, {"input_ids": [2, 41, 3]}])
    hidden = model.encoder(batch["input_ids"], batch["padding_mask"], documents=batch["documents"])
    hidden.sum().backward()  # (and trains through them)
    assert seen == [(True, 4, None)] * 2  # 2 layers, each over 4 texts: three packed in row 0, one in row 1
    assert model.encoder.layers[0].attn.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch_transformer_encoder_layer(norm_first):
    """Post-LN/pre-LN with ReLU, same weights: ours == nn.TransformerEncoderLayer (a reference we did not write)."""
    torch.manual_seed(0)
    cfg = tiny(activation="relu", norm_first=norm_first, layer_norm_eps=1e-5)
    ours = EncoderLayer(cfg).eval()
    ref = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1, activation="relu",
                                     layer_norm_eps=1e-5, batch_first=True, norm_first=norm_first).eval()
    for p in ref.parameters():
        nn.init.normal_(p, std=0.2)
    ours.attn.load_state_dict(ref.self_attn.state_dict())
    ours.ffn[0].load_state_dict(ref.linear1.state_dict())
    ours.ffn[2].load_state_dict(ref.linear2.state_dict())
    ours.norm1.load_state_dict(ref.norm1.state_dict())
    ours.norm2.load_state_dict(ref.norm2.state_dict())
    x = torch.randn(3, 40, 32)
    _, mask = batch_with_short_first()
    with torch.no_grad():
        expected = ref(x, src_key_padding_mask=mask)
        padded = ours(x, mask)
        index = (~mask).flatten().nonzero().squeeze(1)
        packed = ours(x.reshape(-1, 32)[index], mask, index)
    real = ~mask
    torch.testing.assert_close(padded[real], expected[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed, expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_every_kind_of_position_makes_the_encoder_see_word_order(positions):
    """Without positions, self-attention is blind to order: reversing the tokens would reverse the hidden states."""
    torch.manual_seed(0)
    encoder = Encoder(tiny(positions=positions, dropout=0.0)).eval()
    ids, mask = batch_with_short_first()
    with torch.no_grad():
        hidden = encoder(ids[1:2], mask[1:2])
        reversed_ = encoder(ids[1:2].flip(1), mask[1:2])
    assert not torch.allclose(reversed_.flip(1), hidden, atol=1e-3)


def test_rotary_attention_has_multihead_attentions_weights_and_is_it_when_every_angle_is_zero():
    """The rotary path keeps nn.MultiheadAttention's in-projection (layout and names): the same state dict loads, and
    with every token at position 0 (no rotation) both give the same outputs, padding masked alike."""
    torch.manual_seed(0)
    ours = RotaryAttention(tiny(**MODERN, attention=AttentionConfig(4, dropout=0.0))).eval()
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    for p in ref.parameters():
        nn.init.normal_(p, std=0.2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 40, 32)
    _, mask = batch_with_short_first()
    still = rotary_tables(torch.zeros(3, 40, dtype=torch.long), 8, 10000.0)
    turned = rotary_tables(torch.arange(40).expand(3, 40), 8, 10000.0)
    with torch.no_grad():
        expected = ref(x, x, x, key_padding_mask=mask, need_weights=False)[0]
        torch.testing.assert_close(ours(x, mask, None, still)[~mask], expected[~mask], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ours(x, mask, None, turned)[~mask], expected[~mask], atol=1e-3)


def test_rotary_positions_make_attention_scores_depend_on_the_distance_between_tokens_only():
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, 16)

    def score(m: int, n: int) -> torch.Tensor:  # q at position m, k at position n
        cos, sin = rotary_tables(torch.tensor([[m, n]]), 16, 10000.0)
        return (rotate(q, cos[..., :1, :], sin[..., :1, :]) * rotate(k, cos[..., 1:, :], sin[..., 1:, :])).sum()

    torch.testing.assert_close(score(3, 7), score(10, 14))
    torch.testing.assert_close(score(3, 7), score(200, 204), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(3, 7), score(3, 9), atol=1e-3)
    cos, sin = rotary_tables(torch.tensor([[37]]), 16, 10000.0)
    torch.testing.assert_close(rotate(q, cos, sin).norm(), q.norm())  # a rotation: lengths kept


def test_the_gated_feed_forward_is_transformers_modernbert_mlp():
    """A reference we did not write: ModernBERT's GeGLU MLP (Wi, then gelu(input) * gate, then Wo), same weights."""
    from transformers import ModernBertConfig
    from transformers.models.modernbert.modeling_modernbert import ModernBertMLP

    torch.manual_seed(0)
    ours = GatedFeedForward(tiny(**MODERN)).eval()
    ref = ModernBertMLP(ModernBertConfig(hidden_size=32, intermediate_size=64, mlp_bias=False, mlp_dropout=0.0,
                                         hidden_activation="gelu")).eval()
    ours.load_state_dict({"wi.weight": ref.Wi.weight, "wo.weight": ref.Wo.weight})
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-5)


def test_modern_small_has_smalls_parameter_count_and_the_modern_blocks():
    from conftest import compose
    from omegaconf import OmegaConf

    def built(preset: str) -> Encoder:
        values = OmegaConf.to_container(compose([f"model={preset}"]).model)
        keys = {f.name for f in ModelConfig.__dataclass_fields__.values()}
        return Encoder(ModelConfig.from_dict({k: v for k, v in values.items() if k in keys}))

    small, modern = built("small"), built("modern_small")
    count = [sum(p.numel() for p in m.parameters()) for m in (small, modern)]
    assert abs(count[1] / count[0] - 1) < 0.01, count
    layer = modern.layers[0]
    assert isinstance(layer.attn, RotaryAttention) and layer.attn.in_proj_bias is None
    assert isinstance(layer.ffn, GatedFeedForward) and modern.embeddings.positions is None
    assert not any(name.endswith("bias") for name, _ in modern.named_parameters())
    assert modern.cfg.norm_first and isinstance(modern.final_norm, nn.LayerNorm)


def test_embed_dim_not_divisible_by_num_heads_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"model.embed_dim=30 is not divisible by model.attention.num_heads=4") as e:
        tiny(embed_dim=30, attention=AttentionConfig(num_heads=4))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("values,message", [
    ({"embed_dimm": 32}, r"unknown key model.embed_dimm"),
    ({"attention": {"heads": 2}}, r"unknown key model.attention.heads"),
    ({"dropout": 1.5}, r"model.dropout=1.5 must be in \[0, 1\)"),
    ({"activation": "swish"}, r"model.activation='swish' is unknown; choose one of"),
    ({"pooling": "max"}, r"model.pooling='max' is unknown"),
    ({"num_layers": 0}, r"model.num_layers=0 must be a positive integer"),
    ({"norm": "batchnorm"}, r"model.norm='batchnorm' is unknown; choose one of \['layernorm', 'rmsnorm'\]"),
    ({"ffn": "moe"}, r"model.ffn='moe' is unknown"),
    ({"positions": "rotary", "embed_dim": 36, "attention": {"num_heads": 4}}, r"embed_dim / num_heads = 9 must be even"),
    ({"positions": "rotary", "attention": {"add_bias_kv": True}}, r"model.attention.add_bias_kv=true is an nn.Multi"),
    ({"positions": "rotary", "rope_theta": 0.0}, r"model.rope_theta=0.0 must be above 0"),
    ({"norm": "rmsnorm"}, r"model.norm=rmsnorm needs model.layer_norm_eps >= 1e-6 \(got 1e-12\): with less its ONNX"),
])
def test_bad_model_configs_fail_with_the_key_named(values, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({"vocab_size": 50, **values})


def test_sequence_longer_than_position_table_is_refused():
    model = Encoder(tiny(max_positions=8))
    ids = torch.full((1, 16), 7)
    with pytest.raises(ValueError, match="exceeds model.max_positions=8"):
        model(ids, torch.zeros(1, 16, dtype=torch.bool))


@pytest.mark.parametrize("blocks", [{}, MODERN], ids=["classic", "modern"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_attention_maps_are_probabilities_over_real_tokens_only(norm_first, blocks):
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(tiny(**blocks, norm_first=norm_first,
                                                  attention=AttentionConfig(num_heads=4))).eval()
    ids, mask = batch_with_short_first()
    maps = model.encoder.attention_maps(ids, mask)
    assert len(maps) == 2 and maps[0].shape == (3, 4, 40, 40)
    for m in maps:
        torch.testing.assert_close(m[0, :, :5, :].sum(-1), torch.ones(4, 5))  # each query row sums to 1
        assert m[0, :, :, 5:].abs().max() == 0  # no attention to padding
    # what the short sentence attends to does not depend on its padded neighbours
    alone = model.encoder.attention_maps(ids[:1, :5], mask[:1, :5])
    for m, a in zip(maps, alone):
        torch.testing.assert_close(m[0, :, :5, :5], a[0], atol=1e-5, rtol=0)
    # the maps are those of the layers that produced the outputs: recompute layer 0's attention by hand
    layer = model.encoder.layers[0]
    x = model.encoder.embeddings(ids, torch.arange(40).expand(3, 40))
    h = layer.norm1(x) if norm_first else x
    q, k, _ = nn.functional.linear(h, layer.attn.in_proj_weight, layer.attn.in_proj_bias).chunk(3, -1)
    q, k = q.view(3, 40, 4, 8).transpose(1, 2), k.view(3, 40, 4, 8).transpose(1, 2)
    if blocks:  # rotary: q and k turned by their positions
        q, k = (rotate(t, *rotary_tables(torch.arange(40).expand(3, 40), 8, 10000.0)) for t in (q, k))
    scores = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    expected = scores.masked_fill(mask[:, None, None, :], float("-inf")).softmax(-1)
    torch.testing.assert_close(maps[0], expected.detach(), atol=1e-5, rtol=0)


def test_mlm_head_is_tied_to_the_token_embeddings_and_scores_selected_positions_only():
    from encoder.tasks.mlm import EncoderForMaskedLM

    torch.manual_seed(0)
    model = EncoderForMaskedLM(tiny()).eval()
    assert not any("decoder" in k for k in model.state_dict())  # one copy of the tied matrix
    ids, mask = batch_with_short_first()
    selected = torch.zeros_like(mask)
    selected[0, 1], selected[1, 7], selected[2, 20] = True, True, True
    logits = model(ids, mask, selected)
    assert logits.shape == (3, 50)  # [selected tokens, vocab]: nothing computed elsewhere
    hidden = model.encoder(ids, mask)[selected]
    expected = model.transform(hidden) @ model.encoder.embeddings.tokens.weight.T + model.bias
    torch.testing.assert_close(logits, expected)
    logits.sum().backward()  # the output projection trains the input embeddings
    grad = model.encoder.embeddings.tokens.weight.grad
    unseen = sorted(set(range(5, 50)) - set(ids.flatten().tolist()))  # tokens no input row holds
    assert unseen and grad[unseen].abs().sum(-1).min() > 0  # their rows learn through the tied head only


def test_adamw_decays_weight_matrices_only_and_the_lr_warms_up_then_decays():
    import lightning as L

    from encoder.core.tokenizer import train_tokenizer
    from encoder.training.module import EncoderModule

    tokenizer = train_tokenizer(["a b c d e f g"] * 10, vocab_size=30, min_frequency=1)
    module = EncoderModule("classification", {"embed_dim": 16, "num_layers": 1, "ffn_dim": 32, "pooler": True,
                                              "attention": {"num_heads": 2}}, tokenizer.to_str(), 16,
                           label_names=["a", "b"], optim={"warmup_steps": 10, "lr": 1e-3, "schedule": "linear"})
    module.trainer = L.Trainer(max_steps=100, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    setup = module.configure_optimizers()
    groups = {g["name"]: g for g in setup["optimizer"].param_groups}
    names = {id(p): n for n, p in module.model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups["decay"]["params"])
    assert groups["decay"]["weight_decay"] == 0.01 and groups["no_decay"]["weight_decay"] == 0.0
    # matrices (linear, embeddings, MHA's packed in-projection) decay; biases and LayerNorms never
    assert all(module.model.get_parameter(n).ndim == 2 for n in decayed)
    assert "encoder.layers.0.attn.in_proj_weight" in decayed and "encoder.embeddings.tokens.weight" in decayed
    assert not any("norm" in n or n.endswith("bias") for n in decayed)
    assert len(decayed) + len(groups["no_decay"]["params"]) == len(names)
    assert setup["optimizer"].defaults["fused"]  # on CPU too: ~4x faster an optimizer step than the per-tensor loop
    # linear warmup over 10 steps to the peak, then linear decay to 0 at step 100
    schedule = setup["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [schedule(s) for s in (0, 4, 9, 10, 55, 100)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 0.0])


def test_warmup_stable_decay_holds_the_peak_then_decays_over_the_last_share_of_steps():
    """optim.schedule=wsd (the MLM recipe the field moved to): warmup, the peak rate until the last decay_ratio of
    the steps, then linear to min_lr_ratio; a longer run (a resume with more steps) stays at the peak longer."""
    from encoder.training.module import warmup_then_decay

    wsd = [warmup_then_decay(s, warmup=10, total=100, schedule="wsd", min_ratio=0.1, decay_ratio=0.2)
           for s in (0, 9, 10, 50, 80, 90, 100)]
    assert wsd == pytest.approx([0.1, 1.0, 1.0, 1.0, 1.0, 0.55, 0.1])
    longer = warmup_then_decay(90, warmup=10, total=200, schedule="wsd", min_ratio=0.1, decay_ratio=0.2)
    assert longer == 1.0


@pytest.mark.parametrize("blocks", [{}, MODERN], ids=["classic", "modern"])
def test_the_model_summarys_flops_count_attention_on_both_paths(blocks):
    """The summary counts FLOPs in an eval-mode, no-grad forward, where nn.MultiheadAttention takes its fused kernel:
    torch's FlopCounterMode had no formula for it (the classic path's attention counted nothing) until
    encoder/training/callbacks.py gave it one. Both paths: 2 FLOPs per weight per token, plus q.k and the weighted v."""
    from torch.utils.flop_counter import FlopCounterMode

    import encoder.training.callbacks  # noqa: F401 (registers the fused kernel's formula)

    cfg = tiny(**blocks, attention=AttentionConfig(num_heads=4, bias=not blocks))
    model = EncoderForSequenceClassification(cfg).eval()
    ids = torch.full((1, 16), 7)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids, torch.zeros(1, 16, dtype=torch.bool))
    per_token = cfg.num_layers * (4 * 32 * 32 + (3 if blocks else 2) * 32 * 64)  # weights each token meets
    expected = 2 * 16 * per_token + cfg.num_layers * 2 * 2 * 16 * 16 * 32 + 2 * 32 * 2  # + attention + classifier
    assert counter.get_total_flops() == expected
