"""Ours vs a reference we did not write: Hugging Face BERT with the same architecture and weights."""

import pytest
import torch

from encoder.serving.hf import to_bert
from encoder.core.model import AttentionConfig, ModelConfig
from encoder.tasks.classification import EncoderForSequenceClassification


@pytest.mark.parametrize("unpad", [True, False])
def test_matches_transformers_bert_for_sequence_classification(unpad):
    cfg = ModelConfig(vocab_size=120, embed_dim=48, num_layers=3, ffn_dim=96, pooling="cls", pooler=True,
                      attention=AttentionConfig(num_heads=4))
    torch.manual_seed(0)
    ours = EncoderForSequenceClassification(cfg).eval()
    ours.encoder.unpad = unpad
    bert = to_bert(ours).eval()
    lengths = torch.tensor([5, 40, 17, 1 + 1])
    mask = torch.arange(40) >= lengths[:, None]
    ids = torch.randint(5, 120, (4, 40)).masked_fill(mask, 0)
    with torch.no_grad():
        hidden = ours.encoder(ids, mask)
        logits = ours(ids, mask)
        ref = bert(input_ids=ids, attention_mask=(~mask).long(), output_hidden_states=True)
    torch.testing.assert_close(hidden[~mask], ref.hidden_states[-1][~mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)
