"""Masked-language-model pretraining through train.py on the offline corpus, then everything a user
does with it: predict masked words, export, and fine-tune a classifier from it."""

import json
import math
import re
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tokenizers import Tokenizer

import encoder
from conftest import ROOT, TINY, WeightsAtStart, compose
from encoder.tasks.mlm import MaskedLMPredictor
from encoder.training import pretrained
from encoder.training.config import validate
from encoder.core.errors import ConfigError, DataError

START = "+callbacks.start._target_=conftest.WeightsAtStart"  # records the weights training starts from
MLM = ["task=mlm", "data=rotten_tomatoes_corpus", *TINY, "callbacks=default", "trainer.max_epochs=2",
       "trainer.limit_val_batches=4", "optim.lr=3e-3", "trainer.limit_train_batches=24"]
# (callbacks=default: the projector, which trainer=debug leaves out; 48 steps at lr 3e-3: enough to learn a little)


@pytest.fixture(scope="module")
def mlm(tmp_path_factory, cache_dir):
    import train

    out = tmp_path_factory.mktemp("mlm")
    metrics = train.train(compose(MLM, out))
    return {"dir": out, "metrics": metrics, "last": out / "checkpoints" / "last.ckpt"}


def test_mlm_logs_loss_masked_accuracy_and_perplexity(mlm):
    m = mlm["metrics"]
    assert m["val/perplexity"] == pytest.approx(math.exp(m["val/loss"]), rel=1e-4)  # exp(mean masked-token loss)
    # learnt something: its masked-token loss below a uniform guess among the 1000 tokens (ln 1000 = 6.9), its
    # accuracy ten times chance (0.1%; here about 2.4%), and its training loss falling
    events = EventAccumulator(str(mlm["dir"] / "tensorboard")).Reload()
    acc = [e.value for e in events.Scalars("val/acc")]
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(acc) == 2 and min(acc) > 0.01 and m["val/loss"] < math.log(1000) - 0.5, acc
    assert sum(losses[-3:]) < sum(losses[:3]) - 1.0, losses
    assert m["val/acc"] == pytest.approx(acc[1])
    events = EventAccumulator(str(mlm["dir"] / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/acc", "val/perplexity", "perf/tokens_per_s"} <= tags
    losses = [e.value for e in events.Scalars("val/loss")]
    assert len(losses) == 2 and losses[1] < losses[0]
    ckpt = torch.load(mlm["last"], weights_only=True)
    assert ckpt["hyper_parameters"]["task"] == "mlm" and ckpt["hyper_parameters"]["label_names"] is None
    assert sorted(p.name for p in (mlm["dir"] / "tensorboard").glob("*/pooled"))  # projector works without labels


def test_mlm_checkpoint_fills_masks_from_python_and_the_command_line(mlm, tmp_path):
    predictor = encoder.load_model(mlm["last"])
    assert isinstance(predictor, MaskedLMPredictor)
    results = predictor.predict(["a [MASK] movie with a [MASK] plot", "no mask here", ""], top_k=3)
    assert [len(r["masks"]) for r in results] == [2, 0, 0]
    for candidates in results[0]["masks"]:
        scores = [c["score"] for c in candidates]
        assert len(candidates) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
        assert all(isinstance(c["token"], str) for c in candidates)
    assert predictor.embed(["a movie", "a film"]).shape == (2, 64)
    done = subprocess.run([sys.executable, "-m", "encoder.predict", str(mlm["last"]), "a [MASK] film"],
                          capture_output=True, text=True, check=True)
    row = json.loads(done.stdout)
    assert row["text"] == "a [MASK] film" and len(row["masks"]) == 1 and len(row["masks"][0]) == 5
    # an export predicts the same, without pickle
    from encoder.export import export

    out = export(mlm["last"], tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["task"] == "mlm"
    texts = ["a [MASK] movie with a [MASK] plot"]
    assert encoder.load_model(out).predict(texts) == predictor.predict(texts)
    with pytest.raises(ValueError, match="--onnx exports single-text classification, contrastive, embedding, multilabel and regression models"):
        export(mlm["last"], tmp_path / "onnx", onnx=True)
    assert not (tmp_path / "onnx").exists()


def test_fine_tuning_starts_from_the_mlm_encoder_and_keeps_its_tokenizer(mlm, tmp_path):
    import train

    mlm_ckpt = torch.load(mlm["last"], weights_only=True)
    init = pretrained.load(str(mlm["last"]), tmp_path / "cache")
    assert init.tokenizer_path.read_text() == mlm_ckpt["hyper_parameters"]["tokenizer_json"]
    assert set(init.state) == {k.removeprefix("model.") for k in mlm_ckpt["state_dict"]
                               if k.startswith("model.encoder.")}  # the encoder only, no MLM head
    out = tmp_path / "finetune"
    metrics = train.train(compose([*TINY, f"model.init_from={mlm['last']}", START], out))
    assert "test/acc" in metrics  # (what it scores is not this test's claim: where it starts from is)
    ckpt = torch.load(next((out / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    assert ckpt["hyper_parameters"]["task"] == "classification"
    # the tokenizer is the pretrained one, never retrained on the classification data
    assert (Tokenizer.from_str(ckpt["hyper_parameters"]["tokenizer_json"]).get_vocab()
            == Tokenizer.from_str(mlm_ckpt["hyper_parameters"]["tokenizer_json"]).get_vocab())
    # and the model train.py trained started from every pretrained encoder weight
    assert set(init.state) <= set(WeightsAtStart.seen)
    for name, value in init.state.items():
        assert torch.equal(WeightsAtStart.seen[name], value), name


def test_an_mlm_checkpoint_is_evaluated_as_mlm_without_naming_its_task(mlm, tmp_path, capsys):
    import train
    from encoder.training.launch import preflight

    given = ["train=false", f"ckpt_path={mlm['last']}", "data=rotten_tomatoes_corpus", "data.max_eval_samples=64"]
    args = preflight(str(ROOT / "configs"), "train", [*given, "data.splits.test=train"])
    assert args[-1] == "task=mlm"  # the checkpoint's task: its config sets the masking and packing evaluation needs
    metrics = train.train(compose(args, tmp_path / "eval"))
    assert math.isfinite(metrics["test/perplexity"]) and metrics["test/acc"] > 0
    assert "objective=" not in capsys.readouterr().out  # an evaluation optimises nothing: no "objective=nan"
    # a corpus without a test split, and a task= that is not the checkpoint's, are one line each
    with pytest.raises(DataError, match=r"has none of the splits this run reads \(test; it has \['train'\]\); name "
                                        r"one with data.splits.test=<split>, e.g. data.splits.test=train$"):
        train.train(compose(preflight(str(ROOT / "configs"), "train", given), tmp_path / "no-test"))
    with pytest.raises(ConfigError, match=r"is a task=mlm model; evaluate it with task=mlm \(this run has "
                                          r"task=classification\)$"):
        train.train(compose([*given, "data.splits.test=train", "task=classification"], tmp_path / "other"))


def test_fine_tuning_from_an_mlm_checkpoint_of_another_shape_is_refused(mlm, tmp_path):
    cfg = compose([*TINY, "model.embed_dim=32", f"model.init_from={mlm['last']}"], tmp_path)
    import train

    with pytest.raises(ConfigError, match=r"model.embed_dim=32 does not match the pretrained encoder .*\(64\)"):
        train.train(cfg)


def test_mlm_with_document_attention_trains_on_batches_that_say_where_each_text_ends(tmp_path):
    import train

    from conftest import LastBatch

    metrics = train.train(compose([*MLM, "trainer.max_epochs=1", "trainer.limit_train_batches=24",
                                   "data.document_attention=true", "+callbacks.probe._target_=conftest.LastBatch"],
                                  tmp_path))
    batch = LastBatch.seen
    sep = Tokenizer.from_str(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
                             ["hyper_parameters"]["tokenizer_json"]).token_to_id("[SEP]")
    # each row's document index goes up by one after each [SEP] (the rows hold several texts of the corpus)
    for ids, documents, labels in zip(batch["input_ids"], batch["documents"], batch["labels"]):
        original = torch.where(labels != -100, labels, ids)
        ends = (original == sep).long()
        assert torch.equal(documents, ends.cumsum(0) - ends)
    assert batch["documents"].max() > 0
    # and it trains with the mask: 24 steps take the perplexity from the vocabulary's 1,000 (untrained: 998) to 431
    assert metrics["val/perplexity"] < 700


@pytest.mark.parametrize("overrides,message", [
    (["task=mlm", "data.mlm_probability=0"], "task=mlm needs data.mlm_probability > 0"),
    (["data.mlm_probability=0.15"], "only task=mlm uses; set it to 0"),
    (["task=mlm", "data.mlm_probability=1.5"], "data.mlm_probability=1.5 must be in [0, 1)"),
    (["task=mlm", "data.packing=false", "data.document_attention=true"],
     "data.document_attention=true keeps attention within each text of a packed row: it needs data.packing=true"),
    (["task.name=nope"], "task 'nope' is unknown; known tasks: ['classification', 'contrastive', 'embedding', 'mlm', 'multilabel', "
                         "'regression', 'token_classification']"),
])
def test_mlm_config_mistakes_fail_in_one_line(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        validate(compose(overrides, tmp_path))
    assert "\n" not in str(error.value)


def test_mlm_holds_out_at_most_a_thousand_texts_for_validation(tmp_path):
    """10% of a big corpus would make validation dominate a short run: the rest of the corpus trains."""
    cfg = validate(compose(["task=mlm", "data=local_files", "data.path=text", "data.data_files.train=c.txt"], tmp_path))
    assert cfg.data.max_eval_samples == 1000 and cfg.data.val_fraction == 0.1
