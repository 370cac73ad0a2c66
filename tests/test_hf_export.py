"""python -m encoder.export --format hf: folders that transformers (AutoModelFor<Task>, pipelines) and
sentence-transformers load with no code of ours, computing what our models compute; architectures BERT
cannot express are refused in one line naming the option."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

import encoder
from conftest import ROOT
from encoder import tasks
from encoder.core import checkpoint
from encoder.core.errors import ConfigError
from encoder.export import export
from encoder.core.model import AttentionConfig, ModelConfig
from encoder.core.tokenizer import train_tokenizer

TEXTS = ["a gorgeous, witty, seductive movie", "dull", "the plot is thin but the acting is superb and the score soars",
         "", "an utterly forgettable, overlong mess of a film that never finds its footing"]
LABELS = {"classification": ["rotten", "fresh"], "regression": ["score"], "mlm": None,
          "token_classification": ["O", "B-PER", "I-PER"], "multilabel": ["joy", "anger", "surprise"]}


@pytest.fixture(scope="module")
def tokenizer():
    words = " ".join(TEXTS) + " great awful film movie acting plot score"
    tok = train_tokenizer([words] * 20, vocab_size=120, min_frequency=1)
    tok.enable_truncation(64)
    return tok


def saved_model(tmp_path, tokenizer, task: str, **arch) -> str:
    """A randomly initialised model of `task` written as an export of ours (what export() reads)."""
    cfg = checkpoint.full_config({"embed_dim": 32, "num_layers": 2, "ffn_dim": 64, "max_positions": 64,
                                   "attention": {"num_heads": 4, "dropout": 0.0}, **arch},
                                  tokenizer.to_str(), LABELS[task])
    torch.manual_seed(0)
    model = tasks.get(task).build_model(cfg)
    saved = checkpoint.Saved(task, dataclasses.asdict(cfg), tokenizer.to_str(), LABELS[task], 64, model.state_dict())
    folder = tmp_path / f"ours-{task}"
    folder.mkdir()
    checkpoint.write_export(saved, folder)
    return folder


def test_text_classification_pipeline_gives_our_probabilities(tmp_path, tokenizer):
    from transformers import pipeline

    ours = saved_model(tmp_path, tokenizer, "classification", pooling="cls", pooler=True)
    out = export(ours, tmp_path / "hf", format="hf")
    classify = pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    theirs = [{r["label"]: r["score"] for r in rows} for rows in classify(TEXTS, batch_size=5)]
    expected = encoder.load_model(ours).predict(TEXTS)
    for t, e in zip(theirs, expected):
        assert t == pytest.approx(e["probs"], abs=1e-5)


def test_multilabel_pipeline_applies_a_sigmoid_and_gives_our_probabilities(tmp_path, tokenizer):
    import json

    from transformers import pipeline

    ours = saved_model(tmp_path, tokenizer, "multilabel", pooling="cls", pooler=True)
    out = export(ours, tmp_path / "hf", format="hf")
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    classify = pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    theirs = [{r["label"]: r["score"] for r in rows} for rows in classify(TEXTS, batch_size=5)]
    expected = encoder.load_model(ours).predict(TEXTS)
    for t, e in zip(theirs, expected):
        assert t == pytest.approx(e["probs"], abs=1e-5)
        assert abs(sum(t.values()) - 1) > 1e-3  # a probability per label, not a softmax over them


def test_sentence_transformers_encode_gives_our_embeddings(tmp_path, tokenizer, capfd, caplog):
    from sentence_transformers import SentenceTransformer

    for pooling in ("mean", "cls"):  # the default (mean pooling, no pooler) exports for embeddings
        (tmp_path / pooling).mkdir()
        ours = saved_model(tmp_path / pooling, tokenizer, "classification", pooling=pooling)
        out = export(ours, tmp_path / pooling / "st", format="sentence-transformers")
        vectors = SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_tensor=True, batch_size=5)
        torch.testing.assert_close(vectors.cpu(), encoder.load_model(ours).embed(TEXTS), atol=1e-5, rtol=0)
        said = capfd.readouterr()
        assert "MISSING" not in said.out + said.err + caplog.text  # no pooler reported missing (a zero one is there)
        # and no model_args: sentence-transformers' ONNX backend hands them to optimum, which refuses add_pooling_layer
        assert "model_args" not in json.loads((out / "sentence_bert_config.json").read_text())


def test_token_classification_and_fill_mask_match_ours(tmp_path, tokenizer):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    ours = saved_model(tmp_path, tokenizer, "token_classification")
    out = export(ours, tmp_path / "hf-tokens", format="hf")
    hf_tokenizer, model = AutoTokenizer.from_pretrained(str(out)), AutoModelForTokenClassification.from_pretrained(str(out))
    batch = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")
    predictor = encoder.load_model(ours)
    with torch.inference_mode():
        theirs = model(**batch).logits
        mine = predictor.model(batch["input_ids"], batch["attention_mask"] == 0)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(theirs[real], mine[real], atol=1e-5, rtol=0)
    assert model.config.id2label == dict(enumerate(LABELS["token_classification"]))

    ours = saved_model(tmp_path, tokenizer, "mlm")
    out = export(ours, tmp_path / "hf-mlm", format="hf")
    fill = pipeline("fill-mask", model=str(out), top_k=3, device="cpu")
    texts = ["a gorgeous, witty, [MASK] movie", "the [MASK] is thin"]
    mine = encoder.load_model(ours).predict(texts, top_k=3)
    for t, m in zip(fill(texts), mine):
        assert [c["token_str"] for c in t] == [c["token"] for c in m["masks"][0]]
        assert [c["score"] for c in t] == pytest.approx([c["score"] for c in m["masks"][0]], abs=1e-5)


def test_an_export_round_trips_into_model_init_from(tmp_path, tokenizer):
    from encoder.training import pretrained

    ours = saved_model(tmp_path, tokenizer, "classification", pooling="cls", pooler=True)
    out = export(ours, tmp_path / "hf", format="hf")
    back = pretrained.load(str(out))
    original = {k: v for k, v in checkpoint.read(ours).state.items() if k.startswith(("encoder.", "pooler."))}
    assert all(torch.equal(back.state[k], v) for k, v in original.items())  # every tensor, identical
    # BERT always adds a segment embedding: ours had none, so the export's is one row of zeros (same function)
    assert set(back.state) - set(original) == {"encoder.embeddings.segments.weight"}
    assert not back.state["encoder.embeddings.segments.weight"].any()


@pytest.mark.parametrize("damage, message", [
    ("truncated", "model.safetensors is not a readable safetensors file"),
    ("inf weight", "its tensor bert.encoder.layer.0.output.dense.weight holds values that are not finite"),
])
def test_a_damaged_hf_folder_is_refused_in_one_line_through_init_from(tmp_path, tokenizer, damage, message):
    from safetensors.torch import load_file, save_file

    from encoder.training import pretrained

    out = export(saved_model(tmp_path, tokenizer, "classification", pooling="cls", pooler=True), tmp_path / "hf",
                 format="hf")
    weights = out / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        tensors = load_file(weights)
        tensors["bert.encoder.layer.0.output.dense.weight"][0, 0] = float("inf")
        save_file(tensors, weights)
    with pytest.raises(ConfigError, match=message) as error:
        pretrained.load(str(out))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("arch,message", [
    ({"norm_first": True}, "model.norm_first=true has no equivalent in transformers' BERT (BERT is post-LN)"),
    ({"positions": "sinusoidal"}, "model.positions='sinusoidal' has no equivalent"),
    ({"attention": {"num_heads": 4, "add_bias_kv": True}}, "model.attention.add_bias_kv=true has no equivalent"),
    ({"attention": {"num_heads": 4, "add_zero_attn": True}}, "model.attention.add_zero_attn=true"),
    ({"attention": {"num_heads": 4, "bias": False}}, "model.attention.bias=false"),
    # a rotary model goes to ModernBERT, which has no plain feed-forward
    ({"positions": "rotary"}, "model.ffn='plain' has no equivalent in transformers' ModernBERT (ModernBERT's feed-"),
    ({"norm": "rmsnorm", "layer_norm_eps": 1e-5}, "model.norm='rmsnorm' has no equivalent in transformers' BERT (BERT's norms are LayerNorm)"),
    ({"ffn": "gated"}, "model.ffn='gated' has no equivalent in transformers' BERT (BERT's feed-forward is not gated)"),
    ({"bias": False}, "model.bias=false has no equivalent"),
    ({"pooling": "mean"}, "model.pooling=mean, model.pooler=false: transformers' BertForSequenceClassification"),
])
def test_what_bert_cannot_express_is_refused_in_one_line(tmp_path, tokenizer, arch, message):
    ours = saved_model(tmp_path, tokenizer, "classification", **arch)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        export(ours, tmp_path / "hf", format="hf")
    assert "\n" not in str(error.value) and not (tmp_path / "hf").exists()
    done = subprocess.run([sys.executable, "-m", "encoder.export", str(ours), str(tmp_path / "cli"), "--format", "hf"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"error: {error.value}"]


def test_bert_config_rejects_what_it_cannot_express():
    cfg = ModelConfig(vocab_size=50, attention=AttentionConfig(num_heads=4), pooling="cls", pooler=True,
                      norm_first=True)
    from encoder.serving.hf import bert_config_dict

    with pytest.raises(ConfigError, match="model.norm_first"):
        bert_config_dict(cfg)


@pytest.mark.parametrize("fmt, kind", [("hf", "BertForSequenceClassification"), ("sentence-transformers", "BertModel")])
def test_predict_on_a_hugging_face_folder_says_what_to_use(tmp_path, tokenizer, fmt, kind):
    from encoder.core.errors import CheckpointError

    out = export(saved_model(tmp_path, tokenizer, "classification", pooling="cls", pooler=True), tmp_path / fmt,
                 format=fmt)
    with pytest.raises(CheckpointError, match=f"is a Hugging Face {kind} folder, not an encoder export: run it with "
                                              f"transformers .* model.init_from="):
        encoder.load_model(out)
