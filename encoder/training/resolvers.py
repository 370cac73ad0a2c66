"""The resolvers the configs use (`${name:...}`), registered with OmegaConf when this module is imported (launch.py
imports it before composing): `unused_dir` (a run directory no run has), `run_name` (what runs are grouped by),
and `monitor`/`direction`/`optuna_direction`/`metric_name`, which carry each task's metric into checkpoints, early
stopping and sweeps; and `resolved`, a run's config as plain values."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def resolved(cfg: DictConfig) -> dict:
    """The run's config as plain, resolved values (without Hydra's own `hydra` node)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def unused_dir(path: str) -> str:
    """`path`, or the first of `path-1`, `path-2`, ... that this process could create. The folder is
    created here, exclusively (mkdir fails when it exists), so two runs started in the same second never
    share one. Registered with use_cache=True: Hydra resolves it once per run."""
    n = 0
    while True:
        candidate = Path(path if n == 0 else f"{path}-{n}")
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            n += 1


def run_name(data: str, files) -> str:
    """The experiment name runs are grouped by (outputs/<name>/<time>/): the data config's name, or for your own
    files (data=local_files) the name of the training file (`reviews` for reviews.csv; a glob's folder)."""
    train = files.get("train") if isinstance(files, (dict, DictConfig)) else files
    if data != "local_files" or not train:
        return data
    first = Path(str(train if isinstance(train, str) else next(iter(train), "")))
    name = first.parent.name if any(c in first.name for c in "*?[") else first.stem
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or data


def _tasks():
    from encoder import tasks  # (when a resolver runs, after the config is checked: see validate)

    return tasks


RESOLVERS = {
    "unused_dir": (unused_dir, True),
    "run_name": (run_name, False),  # ${run_name:${hydra:runtime.choices.data},${data.data_files}}
    "monitor": (lambda task: _tasks().get(task).monitor, False),  # the task's metric: ${monitor:${task.name}}
    "direction": (lambda metric, task: _tasks().direction(metric, task), False),  # min | max: ${direction:m,task}
    "optuna_direction": (lambda metric, task: f"{_tasks().direction(metric, task)}imize", False),  # minimize | ...
    "metric_name": (lambda metric: metric.rsplit("/", 1)[-1], False),  # val/acc -> acc (checkpoint names)
}
for _name, (_fn, _cache) in RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn, use_cache=_cache)
