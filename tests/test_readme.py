"""The README's commands are part of the product: every `python train.py ...` line composes, checks and builds
its Trainer as written, and every one that can run offline on a small budget runs (train.py in-process,
with a few budget overrides appended; predict and export through their command lines), its placeholders
(best.ckpt, my_model/, outputs/.../) filled with what the earlier commands produced."""

import contextlib
import importlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

import encoder

from conftest import ROOT, compose

README = (ROOT / "README.md").read_text(encoding="utf-8")
# data configs read from the Hub: a `path` that is neither a local file format nor an offline `source`
HUB = tuple(p.stem for p in (ROOT / "configs" / "data").glob("*.yaml")
            if (lambda c: c.get("path", "csv") not in ("csv", "json", "parquet", "text") and not c.get("source"))(
                yaml.safe_load(p.read_text(encoding="utf-8"))))
BUDGET = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
          "trainer.limit_test_batches=1", "data.max_train_samples=64", "data.max_eval_samples=32",
          "~callbacks.tensorboard_visuals", "~callbacks.progress_bar", "trainer.enable_progress_bar=false"]
# files a reader brings along (their own data, a BERT folder, checkpoints of tasks trained on them)
OWN_FILES = ("/path/to", "pairs.csv", "train.jsonl", "corpus.txt", "corpus/", "nli.csv", "new.csv", "pairs.ckpt", "ner.ckpt",
             "emotions.ckpt", "bert_style.ckpt", "train.csv", "unlabelled.csv", "reviews.csv",  # (tables: tests/test_predict_files.py)
             "mined.csv")  # (what the README's mining line writes from pairs.csv: the last test below runs both)


def commands(prefix: str) -> list[list[str]]:
    """The arguments of each README line that runs `prefix`, also at the end of a setup line (`... && python
    train.py`), without its comment; the same command twice counts once."""
    lines = [re.split(r"\s+#\s", line.strip())[0] for line in README.replace("\\\n", " ").splitlines()]
    found = [line.split(f"&& {prefix}", 1)[1] if f"&& {prefix}" in line else line[len(prefix):]
             for line in lines if line.startswith(prefix) or f"&& {prefix}" in line]
    return [list(args) for args in dict.fromkeys(tuple(shlex.split(line)) for line in found)]


def offline(args: list[str]) -> bool:
    gpu = any(a in ("trainer=gpu", "trainer=fsdp") for a in args) or (
        "trainer=ddp" in args and "trainer.accelerator=cpu" not in args)
    return not gpu and not any(a.split("=")[-1] in HUB for a in args if a.startswith("data=")) and \
        not any(own in a for a in args for own in OWN_FILES) and "resume=auto" not in args


TRAIN = commands("python train.py")


def runnable(args: list[str]) -> bool:
    """In this process: not a sweep (-m), not --help, not a DDP launch (tests/test_distributed.py runs those)."""
    return offline(args) and not any(a.startswith("-") or a.startswith("trainer=ddp") for a in args)


def needs_earlier(args: list[str]) -> bool:
    return any(p in " ".join(args) for p in ("outputs/", "my_export/", "ckpt_path="))


CHECKED = ("python train.py", "python -m encoder.predict", "python -m encoder.export", "python -m encoder.training.mine")


def test_no_readme_command_escapes_these_tests():
    """Each line of the README's bash blocks is a train.py, predict, export or mining command (composed and built
    below, run where offline), one of the two setup lines (the second is exactly what .ci/run runs; the first ends in
    `python train.py`, run below), or torchrun launching train.py (tests/test_distributed.py runs DDP)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [re.split(r"\s+#\s", line.strip())[0] for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    setup = [line for line in lines if line.startswith("python3 -m venv")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert len(setup) == 2 and setup[0].endswith("&& python train.py") and setup[1] == ci
    launched = [line for line in lines if line.startswith("torchrun") and " train.py " in line]
    unchecked = [line for line in lines if not line.startswith(CHECKED) and line not in setup + launched]
    assert unchecked == []
    assert TRAIN and all(commands(line) for line in CHECKED[1:])


@pytest.mark.parametrize("args", [a for a in TRAIN if "--help" not in a and "resume=auto" not in a],
                         ids=lambda a: " ".join(a)[:60] or "(defaults)")
def test_every_train_command_composes_checks_and_builds_its_trainer(args, tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from encoder.training.launch import build_trainer_alone, compose as compose_config

    overrides = [a.replace("<time>", "2026-01-01_00-00-00") for a in args if not a.startswith("-")]  # a placeholder
    overrides = [re.sub(r",[^=]*$", "", o) if "," in o and "[" not in o else o for o in overrides]  # a sweep's first
    cfg = compose_config(str(ROOT / "configs"), "train", overrides)
    HydraConfig.instance().set_config(cfg)
    from encoder.training.config import validate

    validate(cfg)
    # each override is in the config as written: a group's choice, or a key's value (a sweep's first value)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    choices = cfg.hydra.runtime.choices
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete():
            continue
        if key in choices:
            assert choices[key] == o.value(), (key, choices[key])
        elif (ROOT / "configs" / key).is_dir():  # several configs of a group at once: logger=[tensorboard,csv]
            assert set(o.value()) <= set(cfg[key]), (key, list(cfg[key]))
        elif not o.is_sweep_override():
            assert OmegaConf.select(cfg, key) == o.value(), (key, OmegaConf.select(cfg, key), o.value())
    if offline(args):  # no GPU here: the GPU lines are checked up to building their Trainer
        build_trainer_alone(cfg, overrides)


@pytest.fixture(scope="module")
def produced(tmp_path_factory, rt_files):
    """Run the offline README training commands on a budget; what they wrote, by the README's placeholders."""
    import train

    out = tmp_path_factory.mktemp("readme")
    runs = {}
    for args in (a for a in TRAIN if runnable(a)):
        if needs_earlier(args):
            continue  # run in the test below, on what these runs wrote
        folder = out / f"run{len(runs)}"
        train.train(compose([*args, *BUDGET], folder))
        runs[" ".join(args)] = folder
        if " ".join(args) not in LAST_READ and not args[0].startswith("model=tiny"):  # (exported below)
            (folder / "checkpoints" / "last.ckpt").unlink(missing_ok=True)  # unread, and a MiniLM one is 271 MB of the CI's disk
    return out, runs


# the runs whose last.ckpt a placeholder below stands for
LAST_READ = ("", "task=mlm data=rotten_tomatoes_corpus", "experiment=pretrain_english")


def fill(arg: str, out: Path, runs: dict, onnx: bool = False) -> str:
    default = runs[""]
    best = str(next((default / "checkpoints").glob("best-*.ckpt")))
    replacements = {
        "outputs/.../checkpoints/best-....ckpt": best,
        "outputs/.../checkpoints/last.ckpt": str(default / "checkpoints" / "last.ckpt"),
        "outputs/mlm_rotten_tomatoes_corpus/<time>/checkpoints/last.ckpt":
            str(runs["task=mlm data=rotten_tomatoes_corpus"] / "checkpoints" / "last.ckpt"),
        "outputs/pretrain_english/<time>/checkpoints/last.ckpt":
            str(runs["experiment=pretrain_english"] / "checkpoints" / "last.ckpt"),
        "outputs/minilm_rotten_tomatoes/<time>/checkpoints/best-....ckpt":
            str(next((runs["experiment=minilm_rotten_tomatoes"] / "checkpoints").glob("best-*.ckpt"))),
        "regression.ckpt": str(next((runs["task=regression data=vader_sentiment"] / "checkpoints").glob("best-*"))),
        "mlm.ckpt": str(runs["task=mlm data=rotten_tomatoes_corpus"] / "checkpoints" / "last.ckpt"),
        "best.ckpt": best,
        "embedder.ckpt": str(next((runs["experiment=minilm_bible_quotes task.loss.matryoshka_dims=[96,192,384]"] /
                                   "checkpoints").glob("best-*.ckpt"))),  # the README's Matryoshka embedder
        "my_model/": str(out / ("my_model_onnx" if onnx else "my_model")),
        "my_model_int8/": str(out / "my_model_int8"), "st_model/": str(out / "st_model"),
        "st_model_96/": str(out / "st_model_96"), "vectors_96.npy": str(out / "vectors_96.npy"),
        "my_export/": str(out / "my_export"),  # the README's model=tiny run, exported
        "texts.txt": str(out / "texts.txt"), "vectors.npy": str(out / "vectors.npy"),
    }
    for placeholder, value in replacements.items():
        arg = arg.replace(placeholder, value)
    return arg


def test_the_offline_readme_commands_run_as_written(produced):
    import train

    from encoder.export import export

    out, runs = produced
    assert {"", "trainer=debug", "task=mlm data=rotten_tomatoes_corpus"} <= set(runs)
    tiny = next(folder for args, folder in runs.items() if args.startswith("model=tiny"))
    export(tiny / "checkpoints" / "last.ckpt", out / "my_export")
    (out / "texts.txt").write_text("a gorgeous, witty, seductive movie\n\nso dull\n", encoding="utf-8")
    for line in ("python -m encoder.export", "python -m encoder.predict"):  # export first: predict reads it
        for args in filter(offline, commands(line)):
            filled = [fill(a, out, runs, onnx="--onnx" in args) for a in args]
            # the command's own main() with the arguments as written, in this process (a process each would cost
            # a torch import each; tests/test_catalogue.py runs the commands as processes)
            with contextlib.redirect_stdout(io.StringIO()) as stdout, contextlib.redirect_stderr(io.StringIO()) as err:
                try:
                    code = importlib.import_module(line.split()[-1]).main(filled)
                except SystemExit as e:
                    code = e.code
            if "--output" in args:  # (a file of vectors: one row per text of texts.txt)
                import numpy as np

                assert code == 0 and np.load(filled[filled.index("--output") + 1]).shape[0] == 2, err.getvalue()
                continue
            assert code == 0 and stdout.getvalue().strip(), (args, err.getvalue()[-2000:])
            if line.endswith("predict"):  # a JSON line per text, holding what its task predicts
                rows = [json.loads(row) for row in stdout.getvalue().splitlines()]
                assert all({"label", "value", "tags", "masks", "embedding"} & set(row) for row in rows), rows[:2]
                if len(filled) == 2 and "label" in rows[0]:  # MODEL "text": what load_model predicts for it
                    assert rows[0]["label"] == encoder.load_model(filled[0]).predict([filled[1]])[0]["label"]
            else:  # the folder it wrote loads: ours with load_model, the others as sentence-transformers reads them
                folder = Path(filled[1])
                if "--format" in args:
                    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
                else:
                    assert encoder.load_model(folder).predict(["so dull"])[0]["label"] in ("rotten", "fresh")
    later = [a for a in TRAIN if runnable(a) and needs_earlier(a)]
    assert len(later) >= 4
    for i, args in enumerate(later):
        filled = [fill(a, out, runs) for a in args]
        resumed = next((a.split("=", 1)[1] for a in filled if a.startswith("ckpt_path=")), None)
        resumed = None if "train=false" in filled else resumed  # (an evaluation writes a run folder of its own)
        # a resume continues in its checkpoint's run directory; anything else starts a new one
        train.train(compose([*filled, *BUDGET], Path(resumed).parents[1] if resumed else out / f"later{i}"))


def test_the_readme_mining_line_writes_negatives_that_its_training_line_learns_from(tmp_path, rt_files):
    """`python -m encoder.training.mine all-MiniLM-L6-v2 pairs.csv mined.csv ...` as written, on (question, answer)
    pairs of real critic snippets, then the README's training line on what it wrote."""
    import csv

    import train
    from encoder.training import mine

    with open(rt_files["train"], encoding="utf-8") as f:
        texts = [r["text"] for _, r in zip(range(120), csv.DictReader(f))]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="", encoding="utf-8") as f:  # a question: a snippet's first half; the answer: the rest
        csv.writer(f).writerows([("question", "answer"), *((t[: len(t) // 2], t[len(t) // 2 :]) for t in texts)])
    (line,) = commands("python -m encoder.training.mine")
    filled = [str(pairs) if a == "pairs.csv" else str(tmp_path / "mined.csv") if a == "mined.csv" else a for a in line]
    assert mine.main(filled) == 0
    with open(tmp_path / "mined.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 30 and all(r["negative_1"] not in (r["answer"], "") for r in rows)
    (args,) = [a for a in TRAIN if "data.data_files.train=mined.csv" in a]
    filled = [a.replace("mined.csv", str(tmp_path / "mined.csv")) for a in args]
    metrics = train.train(compose([*filled, *BUDGET], tmp_path / "run"))
    assert any(k.startswith("val/") for k in metrics)
    for checkpoint in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        checkpoint.unlink()  # 271 MB each, read by nothing: the suite's disk
