"""Every config in configs/ composes and builds what it configures; --help lists the groups; errors come early."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from conftest import ROOT, compose
from encoder.core.checkpoint import RUN_SWITCHES
from encoder.tasks.classification import EncoderForSequenceClassification
from encoder.training.config import validate
from encoder.training.resolvers import resolved, unused_dir
from encoder.training.data.datamodule import TextDataModule
from encoder import tasks
from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig
from encoder.core.tokenizer import get_tokenizer
from encoder.training.data.teacher import build_task

GROUPS = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in (ROOT / "configs").iterdir() if p.is_dir()}
PAIR_DATA = {"all_nli", "bible_quotes", "msmarco_triplets", "stsb", "wordnet_senses"}  # for task=contrastive
CHOICES = [(group, name) for group, names in GROUPS.items() for name in names]


@pytest.mark.parametrize("group,name", CHOICES)
def test_every_config_composes_and_builds_what_it_configures(group, name, tmp_path):
    overrides = [f"{group}={name}"] + (["tokenizer.path=/some/tokenizer.json"] if name == "pretrained" else []) \
        + (["distill.teacher=all-MiniLM-L6-v2"] if (group, name) == ("task", "embedding") else []) \
        + (["data.text_pair_column=positive"] if (group, name) == ("task", "contrastive") else []) \
        + (["task=contrastive"] if group == "data" and name in PAIR_DATA else [])
    cfg = compose(overrides, tmp_path)
    checked = validate(cfg)
    resolved(cfg)  # every interpolation resolves
    if group in ("data", "experiment"):
        datamodule = instantiate(cfg.data, _convert_="all", task=cfg.task.name)
        assert isinstance(datamodule, TextDataModule) and datamodule.cfg.text_column == cfg.data.text_column
    if group in ("model", "experiment"):  # the architecture builds a model of that shape
        arch = {k: v for k, v in dataclasses.asdict(checked.model).items() if k not in RUN_SWITCHES}
        model = EncoderForSequenceClassification(ModelConfig.from_dict(arch))
        assert len(model.encoder.layers) == cfg.model.num_layers
        assert model.encoder.embeddings.tokens.embedding_dim == cfg.model.embed_dim
    elif group == "task":  # the task the run trains, and its model
        task = tasks.get(cfg.task.name)
        assert task.name == name and name in GROUPS["task"]
        if not task.needs_teacher:
            built = build_task(cfg.task.name, dataclasses.asdict(checked.distill))
            assert isinstance(built.build_model(ModelConfig(num_labels=3)), torch.nn.Module)
    elif group == "tokenizer" and name != "pretrained":  # trains on a few texts, with the config's rules
        tokenizer = get_tokenizer(checked.tokenizer, lambda: iter(["A Gorgeous Movie", "a dull one"] * 20),
                                  f"texts-{name}", tmp_path / "cache")
        assert tokenizer.token_to_id("[CLS]") is not None and tokenizer.get_vocab_size() > 5
    elif group == "optim":
        assert checked.optim.lr == cfg.optim.lr and checked.optim.schedule in ("cosine", "linear", "constant", "wsd")
    elif group == "distill":
        assert build_task(cfg.task.name, dataclasses.asdict(checked.distill)).name == cfg.task.name
    elif group == "hparams_search":  # the search space parses as sweeps of keys that exist
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
        parsed = OverridesParser.create().parse_overrides(params)
        assert parsed and all(o.is_sweep_override() and OmegaConf.select(cfg, o.key_or_group) is not None
                              for o in parsed)
    elif group == "trainer":
        # no GPU here: the gpu configs are built for the CPU (fsdp needs a GPU, and says so)
        if name == "fsdp":
            with pytest.raises(InstantiationException, match="gpu backend"):
                instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        else:
            cpu = {"accelerator": "cpu"} if cfg.trainer.accelerator == "gpu" else {}
            assert isinstance(instantiate(cfg.trainer, logger=False, enable_checkpointing=False, **cpu), L.Trainer)
    elif group == "callbacks":
        assert all(isinstance(instantiate(c), L.Callback) for c in cfg.callbacks.values())
    elif group == "logger":  # each config is one named logger, so several can be combined
        (logger,) = [instantiate(lg) for lg in cfg.logger.values()]
        where = str(getattr(logger, "log_dir", None) or logger.save_dir or logger._tracking_uri)
        assert where.removeprefix("sqlite:///").startswith(str(tmp_path))


def test_the_default_model_is_the_same_from_python_and_from_the_command_line(tmp_path):
    """ModelConfig() (a Python user) and model=small (configs/model/small.yaml, the command line) are one model."""
    from encoder.training.config import ModelNode

    composed = dataclasses.asdict(validate(compose(["model=small"], tmp_path)).model)
    assert composed == dataclasses.asdict(ModelNode())
    assert {k: v for k, v in composed.items() if k not in RUN_SWITCHES} == dataclasses.asdict(ModelConfig())


@pytest.mark.parametrize("overrides, name", [
    ([], "rotten_tomatoes_offline"),
    (["data=local_files", "data.data_files.train=/data/my reviews.csv"], "my_reviews"),  # not every csv in one folder
    (["task=mlm", "data=local_files", "data.path=text", "data.data_files.train=corpus/*.txt"], "mlm_corpus"),
    (["data=local_files", "data.data_files.train=[a.jsonl,b.jsonl]", "data.path=json"], "a"),
])
def test_runs_are_grouped_by_their_data_your_own_files_by_their_name(overrides, name, tmp_path):
    assert compose(overrides, tmp_path).name == name


def test_help_lists_config_groups_and_options():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for group in ("model", "data", "trainer", "optim", "tokenizer", "callbacks"):
        assert f"{group}:" in out.stdout
    for option in ("tiny", "small", "base", "rotten_tomatoes_offline", "imdb", "debug", "gpu"):
        assert option in out.stdout
    # every key with the comment its yaml file gives it
    assert "dropout: 0.0         # on attention probabilities" in out.stdout
    assert "max_length: 128        # tokens per text, [CLS] and [SEP] included" in out.stdout
    # its first lines show your own csv and text pairs, not only the defaults
    header = out.stdout.split("Config groups")[0]
    assert "data.data_files.train=my.csv" in header and "data.text_pair_column=hypothesis" in header
    chosen = subprocess.run([sys.executable, "train.py", "--help", "task=mlm"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "[mlm]" in chosen.stdout and "mlm_probability: 0.15   # of real, non-special tokens" in chosen.stdout
    # answered from the yaml files: neither torch nor Lightning is imported (benchmarks/startup.py times it)
    imported = subprocess.run([sys.executable, "-X", "importtime", "train.py", "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120).stderr
    assert "encoder.training.help" in imported and not re.search(r"\| +(torch|lightning|hydra)$", imported, re.M)


def run_train(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("overrides,message", [
    (["model.embed_dim=30"], "error: model.embed_dim=30 is not divisible by model.attention.num_heads=4"),
    (["model.dropout=1.5"], "error: model.dropout=1.5 must be in [0, 1)"),
    (["optim.lr=-1"], "error: optim.lr=-1.0 must be a positive number"),
    (["data.max_length=1024"], "error: data.max_length=1024 exceeds model.max_positions=512"),
    (["data.text_column=review"], "error: data.text_column='review' is not a column of the train split; "
                                  "its columns are ['text', 'label']"),
])
def test_bad_input_fails_in_one_line_before_training(overrides, message, tmp_path):
    out = run_train(*overrides, "trainer=debug", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


@pytest.mark.parametrize("overrides,message", [
    (["model=huge"], "error: model=huge is not a config of the model group; choose one of ['base', 'minilm_l3', 'minilm_l6', "
                     "'modern_small', 'modernbert_base', 'small', 'tiny']"),
    (["optim.lrr=1e-3"], "error: unknown key optim.lrr (did you mean optim.lr?); known keys are ['betas', "
                         "'decay_ratio', 'eps', 'fused', 'lr', 'min_lr_ratio', 'schedule', 'warmup_ratio', "
                         "'warmup_steps', 'weight_decay']"),
    # a group picked before the typo: the typo is named, with its neighbours (the group's override was named before)
    (["model=tiny", "model.embed_dimm=3"], "error: unknown key model.embed_dimm (did you mean model.embed_dim?); known "
                                           "keys are ['activation', 'attention',"),
    (["-m", "optim.lr=1e-4,abc"], "error: optim.lr: Value 'abc' of type 'str' could not be converted to Float"),
    (["optim.lr=[1"], "error: cannot read the override 'optim.lr=[1': no viable alternative at input '[1'"),
])
def test_mistakes_hydra_would_report_get_one_line_and_no_run_directory(overrides, message, tmp_path):
    out = run_train(*overrides, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [message] or out.stderr.strip().startswith(message), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "+optim" not in out.stderr  # no `+` advice for a typo
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_the_task_metric_sets_checkpoints_early_stopping_and_the_sweep_direction(tmp_path):
    regression = compose(["task=regression"], tmp_path)
    assert regression.objective == "val/pearson"
    callbacks = regression.callbacks
    assert (callbacks.model_checkpoint.monitor, callbacks.model_checkpoint.mode) == ("val/pearson", "max")
    assert callbacks.model_checkpoint.filename == "best-epoch{epoch:02d}-pearson-{val/pearson:.4f}"
    assert (callbacks.early_stopping.monitor, callbacks.early_stopping.mode) == ("val/pearson", "max")
    loss = compose(["hparams_search=optuna", "objective=val/loss"], tmp_path)
    assert (loss.callbacks.model_checkpoint.mode, loss.callbacks.early_stopping.mode) == ("min", "min")
    assert loss.hydra.sweeper.direction == "minimize"
    assert compose(["hparams_search=optuna"], tmp_path).hydra.sweeper.direction == "maximize"
    # each task says which of its metrics are better lower: the direction is never guessed from a name
    for task, metric, mode in [("task=mlm", "val/perplexity", "min"), ("task=regression", "val/mse", "min"),
                               ("task=regression", "val/spearman", "max"), ("task=embedding", "val/mse", "min"),
                               ("task=embedding", "val/cosine", "max"), ("task=classification", "val/f1", "max")]:
        cfg = compose([task, f"objective={metric}", "distill.teacher=all-MiniLM-L6-v2"], tmp_path)
        assert cfg.callbacks.model_checkpoint.mode == cfg.callbacks.early_stopping.mode == mode, (task, metric)


def test_a_task_that_says_a_metric_is_better_lower_gets_it_minimised(monkeypatch):
    from encoder import tasks

    assert tasks.direction("val/perplexity", "classification") == "max"  # not a metric classification minimises
    monkeypatch.setattr(tasks.get("classification"), "minimised", ("loss", "perplexity"))
    assert tasks.direction("val/perplexity", "classification") == "min"


def test_sweep_summary_puts_the_best_first_in_the_objectives_direction(tmp_path, capsys):
    from encoder.training.sweep import collect

    for job, (value, direction) in enumerate([(0.5, "min"), (0.2, "min"), (None, "min"), (0.9, "min")]):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(
            {"metrics": {"objective": value}, "overrides": ["model=tiny", f"seed={job}"], "direction": direction},
            allow_nan=False))  # what train.py writes: strict JSON, null for no value
    assert [r["job"] for r in collect(tmp_path)] == ["1", "0", "3", "2"]  # lowest loss first, no value last
    for job in range(4):
        path = tmp_path / str(job) / "metrics.json"
        path.write_text(path.read_text().replace('"min"', '"max"'))
    assert [r["job"] for r in collect(tmp_path)] == ["3", "0", "1", "2"]
    # the table: what every job shares once, each row what is its own
    from omegaconf import OmegaConf

    from encoder.training.sweep import SweepSummary

    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    out = capsys.readouterr().out.splitlines()
    assert "every job: model=tiny" in out
    rows = [line for line in out if line.lstrip()[:1].isdigit()]
    assert len(rows) == 4 and all(row.endswith(f"seed={row.split()[0]}") and "model=tiny" not in row for row in rows)


def test_run_directories_are_never_reused(tmp_path):
    (tmp_path / "run").mkdir()
    assert unused_dir(str(tmp_path / "run")) == str(tmp_path / "run-1")
    assert unused_dir(str(tmp_path / "run")) == str(tmp_path / "run-2")  # claimed: run-1 now exists
    assert unused_dir(str(tmp_path / "new")) == str(tmp_path / "new") and (tmp_path / "new").is_dir()


def _claim(path: str, start, queue) -> None:
    start.wait()
    queue.put(unused_dir(path))


def test_processes_claiming_a_run_directory_at_once_get_different_ones(tmp_path):
    import multiprocessing

    # fork: the children start at once (spawned ones would each import this module's Lightning first)
    context = multiprocessing.get_context("fork")
    start, queue = context.Event(), context.Queue()
    workers = [context.Process(target=_claim, args=(str(tmp_path / "twin"), start, queue)) for _ in range(8)]
    for w in workers:
        w.start()
    start.set()  # all at once
    claimed = sorted(queue.get(timeout=300) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert len(set(claimed)) == 8 and all(Path(c).is_dir() for c in claimed)


def test_two_runs_started_together_with_one_name_write_to_two_directories(tmp_path, rt_files):
    from conftest import TINY

    args = [sys.executable, str(ROOT / "train.py"), *TINY, "name=twin", "~callbacks.tensorboard_visuals",
            "trainer.limit_train_batches=2"]
    runs = [subprocess.Popen(args + [f"seed={k}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for k in (1, 2)]
    for r in runs:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err[-2000:]
    folders = sorted((tmp_path / "outputs" / "twin").iterdir())
    assert len(folders) == 2
    seeds = {json.loads((f / "metrics.json").read_text())["overrides"][-1] for f in folders}
    assert seeds == {"seed=1", "seed=2"}  # each run its own metrics, checkpoints and config record
    assert all((f / "checkpoints" / "last.ckpt").is_file() and (f / ".hydra" / "config.yaml").is_file()
               for f in folders)


def test_config_errors_name_the_key_even_inside_nested_groups(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key model.attention.heads \(did you mean model.attention.num_heads\?\); "
                                          r"known keys are \['add_bias_kv'"):
        compose(["model.attention.heads=3"], tmp_path)
    cfg = compose(["+model.attention.heads=3"], tmp_path)  # `+` adds it past Hydra: validate() refuses it
    with pytest.raises(ConfigError, match="unknown key model.attention.heads"):
        validate(cfg)


def test_a_pretrained_tokenizer_without_its_path_is_refused_not_trained(tmp_path):
    # a `???` in the group file was hidden by the schema's default: a wordpiece tokenizer was silently trained
    with pytest.raises(ConfigError, match=r"^tokenizer=pretrained needs the tokenizer to load: add tokenizer.path="):
        validate(compose(["tokenizer=pretrained"], tmp_path))
    assert validate(compose(["tokenizer=pretrained", "tokenizer.path=t.json"], tmp_path)).tokenizer.path == "t.json"


def test_experiment_configs_override_the_entry_config(tmp_path):
    cfg = compose(["experiment=minilm_rotten_tomatoes"], tmp_path)
    assert cfg.name == "minilm_rotten_tomatoes"  # runs go to outputs/minilm_rotten_tomatoes/...
    assert (cfg.model.embed_dim, cfg.model.init_from, cfg.trainer.max_epochs) == (384, "all-MiniLM-L6-v2", 3)


def test_the_fastest_student_experiment_is_the_recipe_measured_in_the_readme(tmp_path):
    # benchmarks/quality.py's minilm_l2_distilled_16ep, whose numbers README: Recipes gives
    recipe = ["experiment=minilm_rotten_tomatoes", "model=minilm_l3", "model.num_layers=2", "model.init_layers=[0,1]",
              "distill.teacher=t.ckpt", "trainer.max_epochs=16"]
    measured, experiment = (resolved(compose(o, tmp_path))
                            for o in (recipe, ["experiment=minilm_l2_student", "distill.teacher=t.ckpt"]))
    assert experiment.pop("name") == "minilm_l2_student" and measured.pop("name") == "minilm_rotten_tomatoes"
    assert experiment["model"]["num_layers"] == 2 and experiment["trainer"]["max_epochs"] == 16
    assert experiment == measured


def test_multirun_gives_each_job_its_own_directory(tmp_path, rt_files):
    from conftest import TINY

    out = run_train("-m", *[o for o in TINY if "model_summary" not in o], "optim.lr=1e-4,3e-4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    # what a run prints carries information: Lightning's and PyTorch's noise stays out
    for noise in ("Trainer already configured with model summary", "litlogger", "LeafSpec", "GPU available: False",
                  "TPU available: False", "0         Total Flops", "`weights_only` was not set"):
        assert noise not in out.stdout + out.stderr, noise
    # the model summary stays, in one line, with real FLOPs
    assert re.search(r"^model: [\d.]+ K parameters, [\d.]+ MB, [1-9][\d.]* M FLOPs", out.stdout, re.M)
    jobs = sorted(p.parent.parent.name for p in (tmp_path / "multirun").glob("*/*/checkpoints/last.ckpt"))
    assert jobs == ["0", "1"]
    # the sweep ends with one table of both jobs, also saved as summary.json
    assert "sweep summary (2 jobs, best first" in out.stdout
    summary = json.loads(next((tmp_path / "multirun").glob("*/summary.json")).read_text())
    assert sorted(r["job"] for r in summary) == ["0", "1"]
    assert {r["overrides"][-1] for r in summary} == {"optim.lr=0.0001", "optim.lr=0.0003"}
    assert all(0.0 <= r["metrics"]["test/acc"] <= 1.0 for r in summary)


def test_optuna_sweep_returns_the_objective_and_records_the_best_trial(tmp_path, rt_files):
    import yaml
    from conftest import TINY

    out = run_train("-m", "hparams_search=optuna", *TINY, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    sweep = next((tmp_path / "multirun").iterdir())
    trials = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert sorted(trials) == ["0", "1"]
    for trial in trials.values():  # each trial ran with its own sample from the configured search space
        sampled = dict(o.split("=", 1) for o in trial["overrides"] if o.startswith(("optim.", "data.batch")))
        assert 1e-4 <= float(sampled["optim.lr"]) <= 3e-3 and sampled["data.batch_size"] in ("16", "32", "64")
    lrs = {dict(o.split("=", 1) for o in t["overrides"] if "=" in o)["optim.lr"] for t in trials.values()}
    assert len(lrs) == 2
    # the sweeper received train.py's objective (best val/acc) and kept the best trial's parameters
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(trials.values(), key=lambda t: t["metrics"]["objective"])
    assert results["best_value"] == pytest.approx(best["metrics"]["best_val/acc"])
    assert str(results["best_params"]["optim.lr"]) in {o.split("=", 1)[1] for o in best["overrides"]
                                                       if o.startswith("optim.lr=")}
    assert "sweep summary (2 jobs, best first" in out.stdout
