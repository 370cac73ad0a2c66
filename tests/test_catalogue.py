"""The hostile-user catalogue: bad inputs through the CLI and encoder.load_model, class by class, each with
several cases. Every case ends in one clear line (exit status 1 or 2, one line on stderr, no traceback)
and changes no file of an earlier run; cases that must succeed (max_steps, resume) succeed safely."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import zipfile

import lightning as L
import pytest
import torch

import encoder
from conftest import ROOT, TINY, LastCheckpointSteps, compose
from encoder.core import checkpoint
from encoder.core.errors import CheckpointError, ConfigError, DataError

ONE_LINE = (ConfigError, DataError, CheckpointError)  # what the entry points print as `error: <message>`


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, rt_files):
    """An earlier run: nothing any case does may change its files."""
    import train

    out = tmp_path_factory.mktemp("earlier")
    train.train(compose(TINY, out))
    return out


def snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def untouched(earlier):
    before = snapshot(earlier)
    yield earlier
    assert snapshot(earlier) == before, "a file of the earlier run changed"


def one_line(call, kinds=ONE_LINE):
    with pytest.raises(kinds) as error:
        call()
    assert "\n" not in str(error.value), str(error.value)
    return str(error.value)


def cli(module: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def assert_one_error_line(done: subprocess.CompletedProcess, code: int, text: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: ") and text in lines[0] and "Traceback" not in done.stderr, lines[0]


# ---- data lost --------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["seed=3"], ["ckpt_path=OTHER"]])
def test_a_new_start_never_writes_into_an_existing_run_directory(untouched, tmp_path, extra):
    other = tmp_path / "other" / "checkpoints"
    other.mkdir(parents=True)
    (other / "last.ckpt").write_bytes((untouched / "checkpoints" / "last.ckpt").read_bytes())
    args = [f"hydra.run.dir={untouched}"] + [a.replace("OTHER", str(other / "last.ckpt")) for a in extra]
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert_one_error_line(done, 1, f"hydra.run.dir={untouched} already holds a run")


@pytest.mark.parametrize("max_steps", [3, 10, 16])  # less than an epoch (16 batches), more, exactly one
def test_any_max_steps_trains_validates_checkpoints_and_tests(tmp_path, max_steps, rt_files):
    import train

    overrides = [o for o in TINY if o != "trainer.limit_train_batches=8"] + [
        f"trainer.max_steps={max_steps}", "trainer.max_epochs=-1", "~callbacks.tensorboard_visuals"]
    metrics = train.train(compose(overrides, tmp_path))
    assert "test/acc" in metrics and "best_val/acc" in metrics
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == max_steps
    assert list((tmp_path / "checkpoints").glob("best-*.ckpt"))


class SignalDuring(L.Callback):
    """Sends this process a real SIGTERM as the given stage's first batch starts."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_validation_batch_start(self, trainer, *args):
        if self.stage == "validation" and not trainer.sanity_checking and trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_test_batch_start(self, trainer, *args):
        if self.stage == "test":
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("stage,step", [("validation", 8), ("test", 8)])
def test_a_signal_during_validation_or_the_test_stops_with_every_step_saved(tmp_path, stage, step, rt_files):
    import train

    from encoder.training.callbacks import Interrupted

    overrides = [*TINY, "+callbacks.signal._target_=test_catalogue.SignalDuring", f"+callbacks.signal.stage={stage}",
                 "~callbacks.tensorboard_visuals"]
    with pytest.raises(Interrupted) as stop:
        train.train(compose(overrides, tmp_path))
    assert stop.value.signum == signal.SIGTERM and stop.value.step == step
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    assert not (tmp_path / "metrics.json").exists()  # the run did not carry on as if nothing happened
    # and it resumes: the interrupted validation (or test) runs again, then the run finishes
    metrics = train.train(compose([*TINY, "~callbacks.tensorboard_visuals", "trainer.max_epochs=2",
                                   f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"], tmp_path))
    assert "val/acc" in metrics and (tmp_path / "metrics.json").exists()


def test_stale_temporary_checkpoints_of_dead_processes_are_removed(earlier, tmp_path):
    from encoder.training import runs

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = folder / f".last.ckpt.{dead.pid}.tmp", folder / f".last.ckpt.{os.getpid()}.tmp"
    for path in (stale, live):
        path.write_bytes(b"x" * 1000)
    runs.remove_stale_temp_files(folder)
    assert not stale.exists() and live.exists()  # a running process may still be writing its own


# ---- silent wrong answers -----------------------------------------------------------------------
def edit_json(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


EXPORT_EDITS = {
    "reversed labels": ("config.json", lambda c: c["label_names"].reverse()),
    "num_heads": ("config.json", lambda c: c["model"]["attention"].update(num_heads=4)),
    "activation": ("config.json", lambda c: c["model"].update(activation="relu")),
    "pooling": ("config.json", lambda c: c["model"].update(pooling="cls" if c["model"]["pooling"] == "mean" else "mean")),
    "task": ("config.json", lambda c: c.update(task="regression")),
    "two token ids": ("tokenizer.json", lambda t: t["model"]["vocab"].update(
        {"the": t["model"]["vocab"]["a"], "a": t["model"]["vocab"]["the"]})),
}


@pytest.mark.parametrize("edit", EXPORT_EDITS)
def test_an_export_changed_in_any_file_that_decides_an_output_is_refused(earlier, tmp_path, edit):
    from encoder.export import export

    folder = export(earlier / "checkpoints" / "last.ckpt", tmp_path / "export")
    name, change = EXPORT_EDITS[edit]
    edit_json(folder / name, change)
    message = one_line(lambda: encoder.load_model(folder))
    assert "does not match the sha256 in config.json" in message and name.split(".")[0] in message


def flip_weight_bytes(source, target):
    """A copy of `source` with bytes flipped inside a weight tensor's data (the zip stays readable)."""
    weight = torch.load(source, weights_only=True)["state_dict"]["model.encoder.layers.0.ffn.0.weight"]
    data = bytearray(source.read_bytes())
    at = data.find(weight.numpy().tobytes()[:64])
    assert at > 0
    for i in range(at + 8, at + 24):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def test_a_checkpoint_with_flipped_weight_bytes_is_refused_everywhere(earlier, tmp_path):
    import train

    from encoder.export import export

    damaged = flip_weight_bytes(earlier / "checkpoints" / "last.ckpt", tmp_path / "damaged.ckpt")
    expected = "its weights do not match the digest recorded when it was written"
    assert expected in one_line(lambda: encoder.load_model(damaged))
    assert expected in one_line(lambda: export(damaged, tmp_path / "export"))
    assert expected in one_line(lambda: train.train(compose([*TINY, f"ckpt_path={damaged}"], tmp_path / "resume")))
    assert expected in one_line(lambda: train.train(compose([*TINY, f"model.init_from={damaged}"], tmp_path / "init")))


def flip_optimizer_bytes(source, target):
    """A copy of `source` with bytes flipped inside an AdamW moment (exp_avg) of the optimizer state."""
    state = torch.load(source, weights_only=True)["optimizer_states"][0]["state"]
    moment = next(s["exp_avg"] for s in state.values() if s["exp_avg"].numel() > 64 and (s["exp_avg"] != 0).all())
    data = bytearray(source.read_bytes())
    at = data.find(moment.numpy().tobytes()[:64])
    assert at > 0
    for i in range(at + 3, at + 64, 4):  # the high byte of each float32: huge values
        data[i] ^= 0x7F
    target.write_bytes(bytes(data))
    return target


def test_flipped_optimizer_bytes_or_edited_hyper_parameters_are_refused(earlier, tmp_path):
    import train

    damaged = flip_optimizer_bytes(earlier / "checkpoints" / "last.ckpt", tmp_path / "damaged.ckpt")
    assert "training state (optimizer, schedule, loops) do not match the digest" in one_line(
        lambda: train.train(compose([*TINY, f"ckpt_path={damaged}"], tmp_path / "resume")))
    assert not (tmp_path / "resume" / "checkpoints").exists()  # refused before training wrote anything
    # what serving reads: label names reversed, max_length changed, each refused
    for edit in (lambda hp: hp.update(label_names=hp["label_names"][::-1]), lambda hp: hp.update(max_length=8)):
        ckpt = torch.load(earlier / "checkpoints" / "last.ckpt", weights_only=True)
        edit(ckpt["hyper_parameters"])
        torch.save(ckpt, tmp_path / "edited.ckpt")
        assert "hyper-parameters or training state" in one_line(lambda: encoder.load_model(tmp_path / "edited.ckpt"))


def test_a_resume_refuses_optimizer_state_that_is_not_finite(earlier, tmp_path):
    import train

    ckpt = torch.load(earlier / "checkpoints" / "last.ckpt", weights_only=True)
    next(iter(ckpt["optimizer_states"][0]["state"].values()))["exp_avg"][0] = float("inf")
    checkpoint.stamp(ckpt)  # a consistent file whose training state diverged
    torch.save(ckpt, tmp_path / "inf.ckpt")
    assert "its optimizer state is not finite (exp_avg of parameter" in one_line(
        lambda: train.train(compose([*TINY, f"ckpt_path={tmp_path / 'inf.ckpt'}"], tmp_path / "resume")))


def test_predictions_are_never_nan_without_an_error(earlier):
    predictor = encoder.load_model(earlier / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        predictor.model.classifier.weight.fill_(float("nan"))
    for call in (lambda: predictor.predict(["a fine film"]), lambda: predictor.probabilities(["x", "y"])):
        assert "computed NaN or inf for text 0" in one_line(call, ValueError)


@pytest.mark.parametrize("rows,message", [
    ("text,label\nNA,pos\nNone,neg\nok,pos\nfine,neg\n", None),  # texts "NA" and "None" are texts
    ("text,label\ngood,None\nbad,neg\nok,pos\nfine,neg\n", "labels 'None' outside the label set"),
    ("text,label\ngood,NaN\nbad,neg\nok,pos\nfine,neg\n", "labels 'NaN' outside the label set"),
])
def test_na_strings_are_read_as_written(tmp_path, rows, message):
    from encoder.training.data.datamodule import TextDataModule

    (tmp_path / "t.csv").write_text(rows)
    dm = TextDataModule(data_files={"train": str(tmp_path / "t.csv"), "validation": str(tmp_path / "t.csv")},
                        label_names=["neg", "pos"], tokenizer={"vocab_size": 50, "min_frequency": 1},
                        cache_dir=str(tmp_path / "cache"))
    if message is None:
        dm.setup()
        assert sorted(dm.tokenizer.decode(ids) for ids in dm.datasets["train"]["input_ids"][:2]) == ["na", "none"]
    else:
        assert message in one_line(dm.setup)


@pytest.mark.parametrize("value", ["1e200", "-1e300", "inf"])
def test_regression_labels_a_float32_cannot_hold_are_refused(tmp_path, value):
    from encoder.training.data.datamodule import TextDataModule

    (tmp_path / "t.csv").write_text(f"text,score\na,{value}\nb,2\nc,3\nd,1\n")
    dm = TextDataModule(task="regression", data_files={"train": str(tmp_path / "t.csv")}, label_column="score",
                        tokenizer={"vocab_size": 50, "min_frequency": 1}, cache_dir=str(tmp_path / "cache"))
    assert "which is not a finite number a float32 holds" in one_line(dm.setup)


@pytest.mark.parametrize("texts,message", [
    ([3], "text 0 is a int (3); predict takes strings"),
    (["ok", b"bytes"], "text 1 is a bytes (b'bytes'); predict takes strings"),
    ([{"text": "a"}], "text 0 is a dict"),
    ([float("nan")], "text 0 is a float (nan)"),
    (["fine", "\ud800 broken"], "text 1 is not valid Unicode (surrogates not allowed at position 0)"),
    ("a plain string", "pass a list of texts, e.g. predict([text]); got a str"),
])
def test_predict_takes_strings_only(earlier, texts, message):
    predictor = encoder.load_model(earlier / "checkpoints" / "last.ckpt")
    assert message in one_line(lambda: predictor.predict(texts), (TypeError, ValueError))


def test_predict_takes_any_iterable_of_texts_and_refuses_a_zero_batch(earlier):
    path = earlier / "checkpoints" / "last.ckpt"
    predictor = encoder.load_model(path)
    assert predictor.predict(t for t in ["a", "b"]) == predictor.predict(["a", "b"])  # a generator
    for size in (0, -1, 2.5):
        assert f"batch_size={size!r} must be a positive integer" in one_line(
            lambda: encoder.load_model(path, batch_size=size), ValueError)


# ---- tracebacks where a user needs one line -----------------------------------------------------
def corrupt_checkpoints(good, folder):
    """name -> a damaged checkpoint file."""
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "zero bytes": b"", "random bytes": random.Random(0).randbytes(5000)}
    files = {name: folder / f"{name.replace(' ', '_')}.ckpt" for name in
             ("truncated", "zero bytes", "random bytes", "plain zip", "bare tensor", "no state_dict", "legacy pickle")}
    for name, content in cases.items():
        files[name].write_bytes(content)
    with zipfile.ZipFile(files["plain zip"], "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    torch.save(torch.ones(3), files["bare tensor"])
    torch.save({"hyper_parameters": {}}, files["no state_dict"])
    torch.save({"hyper_parameters": {}, "state_dict": {}}, files["legacy pickle"], _use_new_zipfile_serialization=False)
    return files


@pytest.mark.parametrize("entry", ["load_model", "predict", "export"])
def test_corrupt_checkpoints_get_one_line_through_every_entry_point(earlier, tmp_path, entry):
    for name, path in corrupt_checkpoints(earlier / "checkpoints" / "last.ckpt", tmp_path).items():
        if entry == "load_model":
            message = one_line(lambda: encoder.load_model(path))
        elif name not in ("truncated", "random bytes", "no state_dict"):
            continue  # the command lines share load_model's reading: three kinds through each suffice
        else:
            args = [path, "a text"] if entry == "predict" else [path, tmp_path / f"export-{path.stem}"]
            done = cli(f"encoder.{entry}", *args)
            assert_one_error_line(done, 2, str(path))
            message = done.stderr
        assert str(path) in message and ("not a readable checkpoint" in message or "not a checkpoint written by"
                                         in message or "lacks" in message), (name, message)


@pytest.mark.parametrize("override", ["ckpt_path", "model.init_from"])
def test_corrupt_checkpoints_get_one_line_through_train_py(earlier, tmp_path, override, untouched):
    import train

    for name, path in corrupt_checkpoints(earlier / "checkpoints" / "last.ckpt", tmp_path).items():
        message = one_line(lambda: train.train(compose([*TINY, f"{override}={path}"], tmp_path / name)))
        assert str(path) in message, (name, message)


EXPORT_BREAKS = {
    "config.json is a list": lambda f: (f / "config.json").write_text("[1, 2]"),
    "config.json lacks model": lambda f: edit_json(f / "config.json", lambda c: c.pop("model")),
    # an export whose manifest was rewritten to match (edited with its hashes): the shapes still do not fit
    "weights of another shape": lambda f: edit_json(f / "config.json", lambda c: (
        c["model"].update(embed_dim=32), c["sha256"].update(config=checkpoint._config_digest(c)))),
    "no tokenizer.json": lambda f: (f / "tokenizer.json").unlink(),
    # the manifest lists every file the format has: an entry deleted (with the config digest redone to match)
    # no longer disables that file's check, and a foreign model.onnx beside it is not trusted
    "tokenizer.json unlisted": lambda f: edit_json(f / "config.json", lambda c: (
        c["sha256"].pop("tokenizer.json"), c["sha256"].update(config=checkpoint._config_digest(c)))),
    "model.onnx added": lambda f: (f / "model.onnx").write_bytes(b"not listed"),
    "listed file missing": lambda f: edit_json(f / "config.json", lambda c: (
        c["sha256"].update({"model.onnx": "0" * 64}), c["sha256"].update(config=checkpoint._config_digest(c)))),
}


@pytest.mark.parametrize("brk", EXPORT_BREAKS)
def test_broken_exports_get_one_line(earlier, tmp_path, brk):
    from encoder.export import export

    folder = export(earlier / "checkpoints" / "last.ckpt", tmp_path / "export")
    EXPORT_BREAKS[brk](folder)
    message = one_line(lambda: encoder.load_model(folder))
    assert str(folder) in message
    if brk.endswith(("unlisted", "added")):
        assert "not in config.json's sha256 manifest" in message
    if brk == "listed file missing":
        assert "model.onnx is listed in config.json but missing" in message
    if brk in ("weights of another shape", "listed file missing"):  # and through the command line
        assert_one_error_line(cli("encoder.predict", folder, "a text"), 2, str(folder))


@pytest.mark.parametrize("args,message", [
    (["seed=abc"], "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs: Value 'abc'"),
    (["trainer.accelerator=tpu"], "trainer.accelerator=tpu: Requirement 'torch_xla"),
    (["model.norm_first=3"], "model.norm_first=3 is not a bool"),
])
def test_config_mistakes_end_in_one_line_before_a_run_directory_exists(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert_one_error_line(done, 1, message)
    assert not (tmp_path / "outputs").exists()


DATA_CASES = {
    "1-row file": ({"train": "text,label\nonly,pos\n"}, "has 1 example, too few to carve a validation split"),
    "header-only csv": ({"train": "text,label\ngood,pos\nbad,neg\n", "test": "text,label\n"},
                        "the test split of data.data_files is empty"),
    "label missing in one split": ({"train": "text,label\ngood,pos\nbad,neg\n", "test": "text\nfine\n"},
                                   "the test split has no 'label' labels at all"),
    "malformed JSON line": ({"train.jsonl": '{"text": "a", "label": "pos"}\n{"text": "b", "label": \n'},
                            "has a line that is not one JSON object"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_files_get_one_line_naming_the_split_or_file(tmp_path, case):
    from encoder.training.data.datamodule import TextDataModule

    files, message = DATA_CASES[case]
    paths = {}
    for name, content in files.items():
        split = name.split(".")[0]
        paths[split] = tmp_path / (name if "." in name else f"{name}.csv")
        paths[split].write_text(content)
    builder = "json" if any(p.suffix == ".jsonl" for p in paths.values()) else "csv"
    dm = TextDataModule(path=builder, data_files={s: str(p) for s, p in paths.items()},
                        tokenizer={"vocab_size": 50, "min_frequency": 1}, cache_dir=str(tmp_path / "cache"))
    assert message in one_line(dm.setup)


def test_the_readme_override_for_step_checkpoints_works_as_written(tmp_path, rt_files):
    import train

    train.train(compose([*TINY, "callbacks.last_checkpoint.every_n_train_steps=3", "~callbacks.tensorboard_visuals",
                         "+callbacks.probe._target_=conftest.LastCheckpointSteps"], tmp_path))
    # read after each of the 8 steps (before that step's own save): last.ckpt is written at steps 3 and 6
    assert LastCheckpointSteps.seen == [None, None, None, 3, 3, 3, 6, 6]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


@pytest.mark.parametrize("device, text", [("nonsense", "is not a device torch knows"),
                                          ("cuda" if not torch.cuda.is_available() else "mps", "is available here")])
def test_a_device_this_machine_lacks_is_one_line(earlier, device, text):
    done = cli("encoder.predict", earlier / "checkpoints" / "last.ckpt", "a text", "--device", device)
    assert_one_error_line(done, 2, text)


@contextlib.contextmanager
def tmpfs(path, options: str):
    """A small tmpfs mounted at `path` for the test's length. Mounting needs root: a developer's own account skips
    the case; as root (CI) a failed mount fails it, so there it is always run."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode and os.geteuid() != 0:
        pytest.skip(f"mounting a tmpfs ({options}) needs root")
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_full_disk_is_one_line_and_leaves_no_partial_files(tmp_path, rt_files):
    with tmpfs(tmp_path / "disk", "size=3m") as disk:
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, f"hydra.run.dir={disk / 'run'}"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 1, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: No space left on device while writing the run's files") and "Traceback" not in done.stderr
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]


def test_a_read_only_cache_is_one_line(tmp_path, rt_files):
    with tmpfs(tmp_path / "cache", "ro,size=1m") as cache:
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300, env={**os.environ, "ENCODER_CACHE": str(cache)})
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert last.startswith(f"error: the cache folder {cache} cannot take files (Read-only file system)"), last
        assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))
