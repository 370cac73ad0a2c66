"""Before Hydra starts a run: compose the config the command line asks for, check it, and decide the
run directory, so that a mistake is one line (Hydra's own messages run to many lines and suggest `+`
for typos) and no run directory is made or touched for a run that cannot start.

train.py calls `preflight(sys.argv[1:])` and runs Hydra with the arguments it returns: those given,
plus, when a run is resumed, the run directory of its checkpoint (the run continues there: one set of
checkpoints, one TensorBoard curve) and a `.hydra/resume-<time>` folder for this start's config, so the
first start's record is kept.

A checkpoint inside a run directory knows its run: resuming it (`ckpt_path=` or `resume=auto`) takes that
run's overrides (from its newest record) and applies the ones given now on top. What a resume cannot
honour exactly (the model, data, tokenizer, optimizer, seed, batch size, ...) is refused in one line
before any data is read; the schedule may be extended (said in one line); how a run is watched and
logged may change freely.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from encoder.core.errors import ConfigError
from encoder.core.options import dotted
from encoder.training.config import unknown_key, validate
from encoder.training.resolvers import unused_dir  # (and the resolvers the configs use are registered)

# On resume: keys that may change freely (how a run is watched, logged and evaluated at the end), and keys
# that extend or shorten the schedule (said in one line). Any other change is refused.
FREE_ON_RESUME = ("logger", "callbacks.progress_bar", "callbacks.model_summary", "callbacks.tensorboard_visuals",
                  "callbacks.lr_monitor", "callbacks.log_points", "callbacks.graceful_shutdown",
                  "callbacks.last_checkpoint.every_n_train_steps", "trainer.enable_progress_bar",
                  "trainer.enable_model_summary", "trainer.log_every_n_steps",
                  "data.num_workers", "data.pin_memory", "data.persistent_workers", "test", "predictions",
                  "ckpt_path", "resume", "paths", "hydra")
SCHEDULE = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.min_epochs", "trainer.min_steps",
            "callbacks.early_stopping")
HYDRA_OWN_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--info", "-i",
                   "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun")


def compose_error(error: Exception, override: str | None, known: list[str] | None) -> ConfigError:
    """Hydra's/OmegaConf's composition error as one line naming the key. `override`: the command-line
    override that failed, if known; `known`: the keys next to the one that failed."""
    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    missing = next((e for e in chain if isinstance(e, MissingConfigException)), None)
    if missing is not None and missing.missing_cfg_file and missing.options:
        group, _, name = missing.missing_cfg_file.rpartition("/")
        return ConfigError(f"{group}={name} is not a config of the {group} group; choose one of {sorted(missing.options)}")
    if any(isinstance(e, OverrideParseException) for e in chain):
        return ConfigError(f"cannot read the override {override!r}: {_first_line(error)}; write key=value "
                           f"(python train.py --help lists the keys)")
    located = next((e for e in chain if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None)), None)
    if located is None:
        return ConfigError(f"{override or 'the config'}: {_first_line(chain[-1])}")
    key = located.full_key
    if isinstance(located, (ConfigAttributeError, ConfigKeyError)):
        return unknown_key(key, known or [])
    return ConfigError(f"{key}: {_first_line(located)}")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def preflight(config_dir: str, config_name: str, args: list[str]) -> list[str]:
    """Compose and check the config `python train.py <args>` asks for; the arguments Hydra should run
    with. A sweep (-m) is checked value by value: each swept value once, the other keys at their first
    value."""
    if any(a.split("=")[0] in HYDRA_OWN_FLAGS for a in args):
        return args  # help, info or another config: Hydra's business
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return args  # a DDP rank Lightning started, into the directory rank 0 checked and created
    overrides, skip = [], False
    for a in args:  # --cfg job / -p pkg take a value; -m and the like do not
        if not skip and not a.startswith("-"):
            overrides.append(a)
        skip = a in ("--cfg", "-c", "--package", "-p")
    multirun = any(a in ("-m", "--multirun") for a in args)
    parsed = _parse(overrides)
    values = [[o.input_line] if not o.is_sweep_override() else
              [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_discrete_sweep() else []
              for o in parsed]  # (interval sweeps are the sweeper's to sample)
    first = [v[0] for v in values if v]
    variants = [first] + [first[:i] + [value] + first[i + 1:] for i, v in enumerate(v for v in values if v)
                          for value in v[1:]]
    for variant in variants:
        cfg = compose(config_dir, config_name, variant)
        validate(cfg)
        build_trainer_alone(cfg, variant)
    if multirun or cfg.hydra.mode == "MULTIRUN":
        return args
    resumed = resumed_run(config_dir, config_name, cfg, overrides)
    if resumed is not None:
        flags = [a for a in args if a.startswith("-")]
        args, overrides = flags + resumed, resumed
        cfg = compose(config_dir, config_name, overrides)
    task = evaluated_task(cfg, overrides)
    if task is not None:  # its task config sets what its data needs (labels, masking, packing)
        args, overrides = args + [f"task={task}"], overrides + [f"task={task}"]
        cfg = compose(config_dir, config_name, overrides)
        validate(cfg)
    return args + run_directory(cfg, overrides)


def evaluated_task(cfg: DictConfig, overrides: list[str]) -> str | None:
    """train=false evaluates a checkpoint as the task it was trained for: that task, when no task= was given and
    the config's differs (a task= given that differs is refused by evaluation, in one line)."""
    if cfg.train or not cfg.ckpt_path or any(_key(o) == "task" for o in overrides):
        return None
    from encoder.core import checkpoint  # (torch: only an evaluation pays for it here, never a config's check)

    path = Path(cfg.ckpt_path)
    if not path.exists() or (path.is_dir() and not checkpoint.is_export(path)):
        return None  # a known name or a BERT-style folder: an encoder of no task (evaluation names what is wrong)
    try:
        task = checkpoint.task_of(path)
    except checkpoint.CheckpointError as e:
        raise ConfigError(str(e)) from None
    return task if task != cfg.task.name else None


def resumed_run(config_dir: str, config_name: str, cfg: DictConfig, given: list[str]) -> list[str] | None:
    """The overrides a resume runs with: those of the checkpoint's run (its newest record), then the ones
    given now, then `ckpt_path`. None when this start resumes nothing, or a checkpoint outside any run."""
    if not cfg.train or not (cfg.ckpt_path or cfg.resume == "auto"):
        return None
    ckpt = cfg.ckpt_path
    if not ckpt:
        HydraConfig.instance().set_config(cfg)  # `name` is ${hydra:runtime.choices.data} by default
        ckpt = str(newest_unfinished(Path("outputs") / cfg.name))
    elif not Path(ckpt).is_file():
        return None  # train.py names it
    record = newest_record(Path(ckpt))
    if record is None:
        return None
    kept = [o for o in yaml.safe_load((record / "overrides.yaml").read_text(encoding="utf-8")) or []
            if _key(o) not in ("ckpt_path", "resume") and not _key(o).startswith("hydra.")]
    mine = [o for o in given if _key(o) not in ("ckpt_path", "resume")]
    merged = [o for o in kept if _key(o) not in {_key(m) for m in mine}] + mine + [f"ckpt_path={ckpt}"]
    resumed = compose(config_dir, config_name, merged)
    validate(resumed)
    check_honoured(OmegaConf.load(record / "config.yaml"), resumed, ckpt, record)
    return merged


def newest_record(ckpt: Path) -> Path | None:
    """The newest `.hydra` record (the first start's, or a resume's) of the run a checkpoint belongs to."""
    ckpt = ckpt.resolve()
    if ckpt.parent.name != "checkpoints":
        return None
    hydra = ckpt.parents[1] / ".hydra"
    records = [hydra, *sorted(hydra.glob("resume-*"))]
    records = [r for r in records if (r / "config.yaml").is_file() and (r / "overrides.yaml").is_file()]
    return records[-1] if records else None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_honoured(before: DictConfig, now: DictConfig, ckpt: str, record: Path) -> None:
    """Refuse, in one line, a change a resume cannot honour exactly; say which schedule keys changed."""
    old, new = _flat(before), _flat(now)
    # a stream's batches depend on how its files are shared out among the loader's workers
    free = tuple(k for k in FREE_ON_RESUME if not (k == "data.num_workers" and old.get("data.streaming")))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>")
                     and not _under(k, free))
    refused = [k for k in changed if not _under(k, SCHEDULE)]
    if refused:
        key = refused[0]
        raise ConfigError(f"{ckpt} continues a run trained with {key}={old.get(key, '<absent>')} (its record: "
                          f"{record / 'config.yaml'}); a resume cannot honour {key}={new.get(key, '<absent>')}: drop "
                          f"that override, or start a new run without ckpt_path/resume")
    for key in changed:
        print(f"note: resuming with {key}={new.get(key, '<absent>')} (the run had {old.get(key, '<absent>')}); "
              f"the learning-rate schedule follows the new length")  # (early stopping: the new patience)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _flat(cfg: DictConfig) -> dict:
    """Every leaf of a composed config (unresolved: interpolations as written), by dotted key, without `hydra`."""
    return dotted({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"})


def run_directory(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The overrides that put a run where it belongs: a resumed run continues in its own directory, with
    this start's config recorded next to the first start's; a new run never goes into an existing run's."""
    given = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), None)
    extra = []
    ckpt = cfg.ckpt_path
    if not cfg.train:  # an evaluation is a run of its own: a new directory
        ckpt = None
    elif cfg.resume == "auto" and not ckpt:
        HydraConfig.instance().set_config(cfg)  # `name` is ${hydra:runtime.choices.data} by default
        ckpt = str(newest_unfinished(Path("outputs") / cfg.name))
        extra += [f"ckpt_path={ckpt}", "resume=null"]
    run = Path(ckpt).resolve().parents[1] if ckpt and Path(ckpt).resolve().parent.name == "checkpoints" else None
    if run is not None and (given is None or Path(given).resolve() == run):
        record = Path(unused_dir(str(run / ".hydra" / f"resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}")))
        return extra + [f"hydra.run.dir={run}", f"hydra.output_subdir={record.relative_to(run)}"]
    if given is not None and Path(given).is_dir() and any(Path(given).iterdir()):
        raise ConfigError(f"hydra.run.dir={given} already holds a run, which a new run would overwrite; pick a new "
                          f"directory (to continue that run: ckpt_path={given}/checkpoints/last.ckpt)")
    return extra


def discard_failed_start(run_dir: Path, record: str) -> None:
    """After a start that failed before training (a data, checkpoint or logger error): remove what Hydra made
    for it, so failed tries leave nothing behind. A resume's own record (`.hydra/resume-<time>`) goes; a new
    run's directory goes only while it holds nothing but Hydra's record, its log and empty folders."""
    if record != ".hydra":
        shutil.rmtree(run_dir / record, ignore_errors=True)
        return
    if not run_dir.is_dir():
        return
    leftovers = [p for p in run_dir.rglob("*")
                 if p.is_file() and p.parts[len(run_dir.parts)] not in (".hydra", "train.log")]
    if not leftovers:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # outputs/<name>/, if this was its only run
            run_dir.parent.rmdir()


def newest_unfinished(experiment: Path, exclude: Path | None = None) -> Path:
    """The newest last.ckpt of a run under `experiment` that did not finish (finished runs wrote
    metrics.json), for resume=auto; one ConfigError line when there is none."""
    found = [p for p in experiment.glob("*/checkpoints/last.ckpt")
             if not (p.parents[1] / "metrics.json").exists() and p.parents[1] != exclude]
    if not found:
        raise ConfigError(f"resume=auto found no unfinished run (a last.ckpt without metrics.json) under "
                          f"{experiment}/; start without resume, or pass ckpt_path=... to continue a finished run")
    return max(found, key=lambda p: p.stat().st_mtime)


def build_trainer_alone(cfg: DictConfig, overrides: list[str]) -> None:
    """Build the Trainer from its config alone (no callbacks, logger or run directory): Lightning checks
    its values (devices, precision, accelerator, limits, ...) as it builds one."""
    from hydra.utils import instantiate

    try:
        instantiate(cfg.trainer, default_root_dir=None, logger=False, enable_checkpointing=False)
    except Exception as e:  # noqa: BLE001 - InstantiationException and whatever it wraps
        raise trainer_error(e, overrides) from None


def trainer_error(error: Exception, overrides: list[str]) -> ConfigError:
    """What Lightning said about the Trainer's arguments, in one line, with the trainer.* overrides given."""
    cause = error.__cause__ or error
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    given = [o.lstrip("+") for o in overrides if o.lstrip("+").startswith("trainer.")]
    return ConfigError(f"{', '.join(given) or 'trainer'}: {first}")


def _parse(overrides: list[str]) -> list:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise compose_error(e, next((o for o in overrides if o in str(e)), " ".join(overrides)), None) from None


def compose(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's composition (with its own `hydra` node), every error as one ConfigError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    parsed = _parse(overrides)
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - every composition error becomes one line
        # the override the error names: the longest key it holds (model.embed_dimm=3, not model=tiny before it)
        named = [o for o in overrides if o.split("=")[0].lstrip("+~") in str(e)]
        failed = max(named, key=lambda o: len(o.split("=")[0]), default=None)
        known = None
        if failed is not None and "=" in failed:
            parent = failed.split("=")[0].lstrip("+~").rpartition(".")[0]
            try:
                with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
                    rest = hydra_compose(config_name, overrides=[o for o in overrides if o != failed])
                node = OmegaConf.select(rest, parent) if parent else rest
                known = sorted(node.keys()) if isinstance(node, DictConfig) else None
            except Exception:  # noqa: BLE001 - the list of keys is a courtesy
                known = None
        raise compose_error(e, failed, known) from None
    for o in parsed:  # OmegaConf reads any integer as a bool: 3 is not true
        value = None if o.is_sweep_override() or o.is_delete() else o.value()
        if isinstance(value, int) and not isinstance(value, bool) and value not in (0, 1) \
                and isinstance(OmegaConf.select(cfg, o.key_or_group), bool):
            raise ConfigError(f"{o.key_or_group}={value} is not a bool; use true or false")
    return cfg
