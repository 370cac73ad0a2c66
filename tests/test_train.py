"""A real tiny training run on a slice of the default dataset, and everything a user does after it."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import encoder
from conftest import ROOT, TINY, compose
from encoder.core.errors import ConfigError
from encoder.training.module import EncoderModule

TEXTS = ["a gorgeous, witty, seductive movie", "", "   ", "dull " * 20_000, "x" * 100_000,
         "🎬 très bien — 非常好 😀 очень хорошо مرحبا", "\u200b\x00\ufeff", "the plot is thin but the acting is superb"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, rt_files):
    import train

    out = tmp_path_factory.mktemp("run")
    visuals = ["callbacks=default",  # trainer=debug leaves the figures out
               "callbacks.tensorboard_visuals.histograms=true", "callbacks.tensorboard_visuals.histogram_every_n_steps=4"]
    metrics = train.train(compose(TINY + visuals, out))
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    return {"dir": out, "metrics": metrics, "best": best}


def test_fit_writes_checkpoints_metrics_and_tensorboard_events(run, rt_files):
    import csv

    assert (run["dir"] / "checkpoints" / "last.ckpt").is_file()
    # test/acc is the best checkpoint's accuracy on the test split (its first 64 texts: data.max_eval_samples)
    with open(rt_files["test"], encoding="utf-8") as f:
        rows = [r for _, r in zip(range(64), csv.DictReader(f))]
    predicted = encoder.load_model(run["best"]).predict([r["text"] for r in rows])
    right = sum(p["label"] == r["label"] for p, r in zip(predicted, rows))
    assert run["metrics"]["test/acc"] == pytest.approx(right / 64, abs=1e-6) and "test/f1" in run["metrics"]
    events = EventAccumulator(str(run["dir"] / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "val/loss", "val/acc", "val/f1", "test/acc", "test/f1", "lr/decay",
                "perf/padding_efficiency", "perf/tokens_per_s"):
        assert tag in tags, f"{tag} not in {sorted(tags)}"
    assert events.Scalars("perf/padding_efficiency")[-1].value > 0.7  # length-grouped batches
    # HPARAMS tab: the hparams plugin has the run's config and final metrics
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin
    assert b"model/embed_dim" in plugin["_hparams_/session_start_info"]
    assert "hp/test_acc" in tags


def test_the_run_folder_holds_its_plots_as_png_files(run):
    from PIL import Image

    plots = run["dir"] / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["curves.png", "test_confusion_matrix.png",
                                                       "val_confusion_matrix.png"]
    for path in plots.iterdir():
        image = Image.open(path).convert("L")
        assert image.size[0] > 300 and len(set(image.getdata())) > 20  # drawn: not an empty canvas


def test_every_tensorboard_name_the_readme_states_is_logged(run):
    section = (ROOT / "README.md").read_text().split("## TensorBoard")[1].split("Every validation epoch")[0]
    stated = set(re.findall(r"`((?:train|val|test|lr|perf|hp)/\w+|epoch)`", section))
    assert len(stated) >= 15
    events = EventAccumulator(str(run["dir"] / "tensorboard")).Reload()
    assert stated <= set(events.Tags()["scalars"]), sorted(stated - set(events.Tags()["scalars"]))


def test_tensorboard_shows_attention_maps_confusion_matrix_projector_and_histograms(run, tmp_path):
    import numpy as np
    from PIL import Image

    events = EventAccumulator(str(run["dir"] / "tensorboard"), size_guidance={"images": 0, "histograms": 0}).Reload()
    images = set(events.Tags()["images"])
    expected = {"val/confusion_matrix"} | {f"attention/sentence{i}/heads_mean" for i in range(3)} \
        | {f"attention/sentence{i}/layer{l}" for i in range(3) for l in range(2)}  # tiny: 2 layers
    assert expected <= images, sorted(images)
    # a real picture: it decodes as PNG, is large enough to read the tokens, and is not blank
    for tag in ("attention/sentence0/heads_mean", "attention/sentence0/layer1", "val/confusion_matrix"):
        png = tmp_path / (tag.replace("/", "_") + ".png")
        png.write_bytes(events.Images(tag)[-1].encoded_image_string)
        pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert min(pixels.shape) >= 200 and pixels.std() > 20, (tag, pixels.shape, pixels.std())
    # the projector: the pooled vectors of the 64 validation examples, labelled, with their text
    assert "pooled" in (run["dir"] / "tensorboard" / "projector_config.pbtxt").read_text()
    metadata = next((run["dir"] / "tensorboard").glob("*/pooled/metadata.tsv")).read_text().splitlines()
    vectors = next((run["dir"] / "tensorboard").glob("*/pooled/tensors.tsv")).read_text().splitlines()
    assert metadata[0] == "label\ttext" and len(metadata) == 65 and len(vectors) == 64
    assert {line.split("\t")[0] for line in metadata[1:]} <= {"rotten", "fresh"}
    assert len(vectors[0].split("\t")) == 64  # embed_dim of model=tiny
    histograms = set(events.Tags()["histograms"])
    assert {"weights/encoder.layers.0.attn.in_proj_weight", "grads/encoder.layers.0.attn.in_proj_weight"} <= histograms


def test_checkpoint_holds_only_plain_types_and_is_self_contained(run):
    ckpt = torch.load(run["best"], map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["label_names"] == ["rotten", "fresh"]
    assert '"[CLS]"' in hp["tokenizer_json"] and hp["model"]["embed_dim"] == 64
    # Lightning's own loader rebuilds the module from the hyperparameters alone (no Hydra)
    module = EncoderModule.load_from_checkpoint(run["best"], map_location="cpu", weights_only=True)
    assert module.cfg.num_labels == 2


def test_load_model_predicts_in_input_order_with_finite_probabilities(run):
    predictor = encoder.load_model(run["best"])
    results = predictor.predict(TEXTS)
    assert len(results) == len(TEXTS)
    for r in results:
        assert r["label"] in ("rotten", "fresh") and r["score"] == max(r["probs"].values())
        assert abs(sum(r["probs"].values()) - 1) < 1e-5
    singles = [predictor.predict([t])[0]["probs"]["fresh"] for t in TEXTS]
    assert [r["probs"]["fresh"] for r in results] == pytest.approx(singles, abs=1e-5)
    vectors = predictor.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 64) and torch.isfinite(vectors).all()


def test_fresh_process_gives_identical_predictions(run):
    ours = [r["probs"] for r in encoder.load_model(run["best"]).predict(TEXTS)]
    code = ("import json, sys, encoder; p = encoder.load_model(sys.argv[1]);"
            "print(json.dumps([r['probs'] for r in p.predict(json.load(sys.stdin))]))")
    out = subprocess.run([sys.executable, "-c", code, str(run["best"])], input=json.dumps(TEXTS), capture_output=True,
                         text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == ours


def test_predict_cli_prints_json_lines_for_arguments_and_files(run, tmp_path):
    cli = [sys.executable, "-m", "encoder.predict", str(run["best"])]
    out = subprocess.run(cli + ["a gorgeous, witty, seductive movie"], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout)
    assert row["label"] in ("rotten", "fresh") and set(row["probs"]) == {"rotten", "fresh"}
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = subprocess.run(cli + ["--file", str(texts)], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == [t for t in TEXTS if t.strip()]  # blank lines separate, are not texts
    # `| head`: the reader stops early; no BrokenPipeError traceback
    piped = subprocess.run(f"{' '.join(cli)} --embed --file {texts} | head -c 100", shell=True, capture_output=True,
                           text=True)
    assert piped.returncode == 0 and piped.stderr == "" and len(piped.stdout) == 100


def test_predict_cli_missing_checkpoint_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "encoder.predict", str(tmp_path / "nope.ckpt"), "hello"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: checkpoint {tmp_path / 'nope.ckpt'} does not exist; "
                                               "pass the path of a .ckpt file (train.py prints it as 'best checkpoint')"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("protocol", [2, 4, "zip"])
def test_load_model_refuses_pickles_that_ask_to_run_code(tmp_path, protocol, monkeypatch):
    # torch words the refusal two ways ("Unsupported global: GLOBAL ..." and "Trying to load unsupported
    # GLOBAL ... whose module ... is blocked"); older pickle protocols stop at an instruction before that
    import pickle

    monkeypatch.chdir(tmp_path)
    for name, content in (("class", {"hyper_parameters": {"x": torch.optim.SGD}, "state_dict": {}}),
                          ("system", {"hyper_parameters": {}, "state_dict": RunsCode()})):
        bad = tmp_path / f"{name}.ckpt"
        if protocol == "zip":
            torch.save(content, bad)
        else:
            bad.write_bytes(pickle.dumps(content, protocol=protocol))
        with pytest.raises(ValueError) as error:
            encoder.load_model(bad)
        message = str(error.value)
        assert ("asks to run code as it is read (GLOBAL " in message and "was refused" in message) or \
            ("not a readable checkpoint" in message and "nothing in it ran" in message), message
        assert "\n" not in message and not (tmp_path / "pwned").exists()


def test_a_second_run_into_the_same_directory_is_refused(run):
    import train

    before = sorted(p.stat().st_mtime for p in (run["dir"] / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train.train(compose(TINY, run["dir"]))
    assert sorted(p.stat().st_mtime for p in (run["dir"] / "checkpoints").iterdir()) == before


def test_export_writes_a_pickle_free_folder_that_predicts_identically(run, tmp_path):
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "encoder.export", str(run["best"]), str(out)], capture_output=True,
                          text=True, check=True)
    assert "exported to" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    expected = [r["probs"] for r in encoder.load_model(run["best"]).predict(TEXTS)]
    assert [r["probs"] for r in encoder.load_model(out).predict(TEXTS)] == expected
    # loading an export never unpickles: torch.load is not even called
    original = torch.load
    try:
        torch.load = None
        encoder.load_model(out)
    finally:
        torch.load = original
    again = subprocess.run([sys.executable, "-m", "encoder.export", str(run["best"]), str(out)], capture_output=True,
                           text=True)
    assert again.returncode == 2 and "is not empty; export into a new folder" in again.stderr


def test_tampered_exports_are_refused(run, tmp_path):
    from encoder.export import export

    out = export(run["best"], tmp_path / "export")
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the sha256 in config.json"):
        encoder.load_model(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(encoder.CheckpointError, match="lacks model.safetensors"):
        encoder.load_model(out)


def test_onnx_export_runs_in_onnxruntime_and_matches_pytorch(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")  # in the dev extra, so CI runs it
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "encoder.export", str(run["best"]), str(out), "--onnx"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""  # the exporter's warnings about things this graph does not use are dropped
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx", "model.safetensors",
                                                     "tokenizer.json"]
    umask = os.umask(0)
    os.umask(umask)  # the folder and every file get the user's usual permissions
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(0o666 & ~umask)}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~umask)
    assert "model.onnx" in json.loads((out / "config.json").read_text())["sha256"]
    predictor = encoder.load_model(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    # batch and sequence sizes unlike the export's example batch (2 x 16): the axes are dynamic
    for texts in (TEXTS[:1], TEXTS, [t * 3 for t in TEXTS[:5]] * 3):
        ids = [e.ids for e in predictor.tokenizer.encode_batch(texts)]
        batch = predictor.collator([{"input_ids": i} for i in ids])
        logits, embeddings = session.run(None, {"input_ids": batch["input_ids"].numpy(),
                                                "padding_mask": batch["padding_mask"].numpy()})
        with torch.inference_mode():
            expected = predictor.model(batch["input_ids"], batch["padding_mask"])
            expected_emb = predictor.model.embed(batch["input_ids"], batch["padding_mask"])
        assert logits.shape == (len(texts), 2) and embeddings.shape == (len(texts), 64)
        torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.from_numpy(embeddings), expected_emb, atol=1e-4, rtol=0)


def test_predict_runs_the_onnx_graph_and_its_int8_version(run, tmp_path, caplog):
    from encoder.export import export

    out = export(run["best"], tmp_path / "export", onnx=True, int8=True)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]  # advice for static quantization
    assert {"model.onnx", "model.int8.onnx"} <= set(json.loads((out / "config.json").read_text())["sha256"])
    texts = TEXTS + ["a film that soars", "a film that sinks"] * 10
    torch_probs = encoder.load_model(out).probabilities(texts)
    onnx = encoder.load_model(out, backend="onnx")
    torch.testing.assert_close(onnx.probabilities(texts), torch_probs, atol=1e-4, rtol=0)  # fp32: the same
    torch.testing.assert_close(onnx.embed(texts), encoder.load_model(out).embed(texts), atol=1e-4, rtol=0)
    int8 = encoder.load_model(out, backend="onnx", int8=True).probabilities(texts)
    assert (int8 - torch_probs).abs().max() < 0.1  # int8 weights: close, not equal (accuracy: benchmarks/)
    # a scale per output unit of each linear layer (per_channel), not one per matrix: int8 costs less accuracy
    import onnx as onnx_format

    scales = [list(i.dims) for i in onnx_format.load(out / "model.int8.onnx").graph.initializer
              if i.name.endswith("_scale") and not i.name.startswith("model.")]  # (not the embeddings' gathers)
    assert scales and all(len(d) == 1 and d[0] > 1 for d in scales)
    done = subprocess.run([sys.executable, "-m", "encoder.predict", str(out), "--backend", "onnx", "--int8",
                           "a film that soars"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["label"] in ("rotten", "fresh")
    for kwargs, message in (({"backend": "onnx"}, "has no model.onnx; export it with"),
                            ({"int8": True}, "int8 runs through onnxruntime")):
        with pytest.raises(ValueError, match=message):
            encoder.load_model(run["best"], **kwargs)


SERVING_PROBE = """
import json, runpy, sys
path, mode = sys.argv[1], sys.argv[2]
if mode == "api":
    import encoder
    encoder.load_model(path).predict(["a gorgeous, witty, seductive movie"])
else:  # the command line
    sys.argv = ["encoder.predict", path, "a gorgeous, witty, seductive movie"]
    try:
        runpy.run_module("encoder.predict", run_name="__main__")
    except SystemExit:
        pass
heavy = ("lightning", "torchmetrics", "datasets", "pandas", "pyarrow", "matplotlib", "hydra", "omegaconf")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy})))
"""


@pytest.mark.parametrize("mode", ["api", "cli"])
def test_serving_imports_no_training_stack(run, tmp_path, mode):
    from encoder.export import export

    folder = export(run["best"], tmp_path / "export")
    for path in (run["best"], folder):
        out = subprocess.run([sys.executable, "-c", SERVING_PROBE, str(path), mode], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == [], f"serving {path} imported these"


def test_figures_fit_their_labels():
    from matplotlib.transforms import Bbox

    from encoder.training.visualize import attention_figure, confusion_figure

    tokens = ["[CLS]", "a", "cloying", "extraordinarily", "##ly", "[SEP]"]
    maps = [(torch.rand(6, 6), f"head {h}") for h in range(4)]
    for figure in (attention_figure(maps, tokens, "a title"),
                   confusion_figure(torch.tensor([[50, 3], [4, 40]]), ["rotten", "fresh"], "validation, step 1")):
        figure.canvas.draw()
        width, height = figure.canvas.get_width_height()
        assert min(width, height) >= 350  # readable in TensorBoard
        canvas = Bbox.from_bounds(0, 0, width, height)
        renderer = figure.canvas.get_renderer()
        for ax in figure.axes:
            for label in ax.get_xticklabels() + ax.get_yticklabels():
                extent = label.get_window_extent(renderer)
                assert canvas.contains(extent.x0, extent.y0) and canvas.contains(extent.x1, extent.y1), \
                    (label.get_text(), extent, (width, height))


def test_train_false_evaluates_a_checkpoint_on_other_data(run, tmp_path, capsys):
    import train

    rows = [("a gorgeous, witty, seductive movie", "fresh"), ("dull and lifeless", "rotten"), ("a joy", "fresh")]
    new = tmp_path / "new.csv"
    new.write_text("review,verdict\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    common = ["train=false", f"ckpt_path={run['best']}", "data=local_files", f"data.data_files.test={new}",
              "data.text_column=review", "data.label_column=verdict"]
    out = tmp_path / "eval"
    metrics = train.train(compose([*common, "predictions=true"], out))
    assert set(metrics) >= {"test/acc", "test/f1", "test/loss"} and not list(out.glob("checkpoints/*"))
    written = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert written["metrics"]["test/acc"] == metrics["test/acc"] and written["metrics"]["objective"] is None
    assert f"predictions:     {out / 'predictions.jsonl'}" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["text"], r["gold"]) for r in lines] == rows and all(r["label"] in ("rotten", "fresh") for r in lines)
    assert sum(r["label"] == r["gold"] for r in lines) / 3 == pytest.approx(metrics["test/acc"])
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "test/confusion_matrix" in events.Tags()["images"] and "test/acc" in events.Tags()["scalars"]
    # an export folder evaluates the same
    from encoder.export import export

    folder = export(run["best"], tmp_path / "export")
    again = train.train(compose([*common[:1], f"ckpt_path={folder}", *common[2:]], tmp_path / "eval-export"))
    assert again["test/acc"] == metrics["test/acc"]
    # a label the checkpoint never learned is refused in one line; so is train=false without a checkpoint
    new.write_text("review,verdict\ngood,fresh\nso-so,meh\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^the test split has labels 'meh' that .* was not trained on \(its labels: "
                                          r"\['rotten', 'fresh'\]\); evaluate it on data with those labels$"):
        train.train(compose(common, tmp_path / "eval2"))
    with pytest.raises(ConfigError, match="train=false evaluates a checkpoint: pass ckpt_path"):
        train.train(compose(["train=false"], tmp_path / "eval3"))


def test_small_data_logs_several_training_points_per_epoch(tmp_path, rt_files):
    # 160 examples, 10 batches an epoch: log_every_n_steps=20 (the default) alone would log no train/loss at all
    import train

    train.train(compose([*TINY, "data.max_train_samples=160", "trainer.limit_train_batches=null",
                         "trainer.log_every_n_steps=20", "trainer.max_epochs=2"], tmp_path))
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert len(steps) >= 10 and max(steps) <= 20  # at least 5 points in each of the 2 epochs of 10 steps


def test_a_model_with_segment_embeddings_exports_to_onnx_for_single_texts(tmp_path, rt_files):
    # a student made of BERT/MiniLM layers keeps BERT's segment embeddings (type_vocab_size=2) though it reads
    # single texts: its ONNX graph computes segment 0, as PyTorch does without token_type_ids
    import train

    from encoder.export import export

    train.train(compose([*TINY, "model.type_vocab_size=2"], tmp_path / "run"))
    out = export(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "export", onnx=True)
    texts = TEXTS + ["a film that soars", "a film that sinks"]
    onnx = encoder.load_model(out, backend="onnx")
    torch.testing.assert_close(onnx.probabilities(texts), encoder.load_model(out).probabilities(texts), atol=1e-4,
                               rtol=0)
    with pytest.raises(ValueError, match="the ONNX graph reads single texts"):
        onnx.predict([("a film", "that soars")])


def test_a_model_of_modern_blocks_trains_and_serves_from_its_onnx_and_int8_graphs(tmp_path, rt_files):
    """Rotary attention (scaled_dot_product_attention), a gated feed-forward, RMSNorm and no biases: a run, an export
    whose ONNX graph gives PyTorch's probabilities and whose int8 graph comes close; transformers' BERT cannot hold
    it, which the BERT-format export says in one line."""
    import train

    from encoder.core.errors import ConfigError
    from encoder.export import export

    modern = ["model.positions=rotary", "model.ffn=gated", "model.norm=rmsnorm", "model.layer_norm_eps=1e-5", "model.bias=false",
              "model.attention.bias=false", "model.norm_first=true"]
    train.train(compose([*TINY, *modern], tmp_path / "run"))
    out = export(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "export", onnx=True, int8=True)
    texts = TEXTS + ["a film that soars", "a film that sinks"] * 5
    probabilities = encoder.load_model(out).probabilities(texts)
    torch.testing.assert_close(encoder.load_model(out, backend="onnx").probabilities(texts), probabilities, atol=1e-4,
                               rtol=0)
    assert (encoder.load_model(out, backend="onnx", int8=True).probabilities(texts) - probabilities).abs().max() < 0.1
    # (rotary: the ModernBERT way, whose first layer has no norm before attention)
    with pytest.raises(ConfigError, match=r"^model.first_attention_norm=true has no equivalent in transformers' "
                                          r"ModernBERT"):
        export(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "bert", format="hf")
    assert not (tmp_path / "bert").exists()


def test_a_run_whose_output_no_terminal_reads_prints_plain_lines(tmp_path, rt_files):
    """A log file or a pipe gets a line per tenth of an epoch and per validation, never a bar redrawn in place with
    carriage returns (one endless line in the file), and the model in one line, not a table."""
    shown = [a for a in TINY if a not in ("trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                                          "~callbacks.model_summary")]
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *shown, f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("epoch 0 batch ")][-1].startswith("epoch 0 batch 8/8 step 8")
    assert any(re.match(r"epoch 0 validation: val/acc [\d.]+, val/f1 [\d.]+, val/loss [\d.]+$", line) for line in lines)
    (summary,) = [line for line in lines if line.startswith("model: ")]
    assert re.fullmatch(r"model: [\d.]+ K parameters, [\d.]+ MB, [\d.]+ M FLOPs for one 32-token text", summary)


def test_a_run_without_the_best_checkpoint_callback_tests_its_final_weights(tmp_path):
    """`~callbacks.model_checkpoint` leaves last.ckpt's callback, which keeps no best checkpoint: the run tests the
    weights it ends with and says that checkpointing is off (it used to fail reading a best path it has not)."""
    import train

    metrics = train.train(compose([*TINY, "~callbacks.model_checkpoint", "~callbacks.early_stopping"], tmp_path))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and not list(tmp_path.glob("checkpoints/best-*"))
