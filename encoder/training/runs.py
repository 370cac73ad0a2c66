"""A run's life around training: which checkpoint it resumes and whether it can (its optimizer settings and state,
and the model it holds: `read_for_resume`, `check_resumable`), the checkpoint writes a killed process left behind,
and DDP ranks inside a Hydra multirun. (Deciding the run directory and what a resume may change happens earlier, before torch loads:
encoder/training/launch.py.)"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write
from tokenizers import Tokenizer

from encoder.core import checkpoint
from encoder.core.errors import CheckpointError, ConfigError
from encoder.core.options import dotted
from encoder.training.launch import newest_unfinished

log = logging.getLogger("encoder")


def resume_from(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to resume: `ckpt_path`, or with resume=auto the newest last.ckpt of this experiment."""
    if cfg.resume not in ("auto", None):
        raise ConfigError(f"resume={cfg.resume!r} is unknown; use resume=auto or ckpt_path=PATH")
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path} does not exist; pass a .ckpt file or resume=auto")
        return str(cfg.ckpt_path)
    if cfg.resume == "auto":
        return str(newest_unfinished(run_dir.parent, exclude=run_dir))
    return None


def remove_stale_temp_files(folder: Path) -> None:
    """Checkpoint writes go to `.<name>.<pid>.tmp` first (encoder.training.callbacks.AtomicCheckpointIO); a
    process killed mid-write leaves one behind. Remove those of processes that are gone."""
    for tmp in folder.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by a checkpoint write that was killed", tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def read_for_resume(path: str | os.PathLike, optim: dict | None = None) -> checkpoint.Saved:
    """`checkpoint.read_checkpoint`, and the optimizer state a resume would continue from must be finite; with `optim`
    (this run's optimizer settings), the checkpoint must have trained with the same ones."""
    ckpt = checkpoint.load_checkpoint(path)
    saved = checkpoint.saved_of(ckpt, path)
    trained = ckpt["hyper_parameters"].get("optim")
    if optim is not None and trained is not None:
        key = next((k for k in sorted(optim) if k in trained and trained[k] != optim[k]), None)
        if key is not None:
            raise CheckpointError(f"{path} was trained with optim.{key}={trained[key]!r}; a resume cannot honour "
                                  f"optim.{key}={optim[key]!r} (the optimizer state and schedule continue): resume "
                                  f"with the run's settings, or start a new run without ckpt_path")
    for i, optimizer in enumerate(ckpt.get("optimizer_states") or []):
        for param, state in (optimizer.get("state") or {}).items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
                    raise CheckpointError(f"{path}: its optimizer state is not finite ({name} of parameter {param}); "
                                          f"resuming would spread it into the weights: resume an earlier checkpoint "
                                          f"or start a new run")
    return saved


def first_difference(ours: checkpoint.Saved, theirs: checkpoint.Saved) -> tuple[str, object, object] | None:
    """(what, ours, theirs) for the first thing that makes two models different models: the task, an
    architecture field, max_length, the labels, or the tokenizer (its vocabulary and rules, not its
    truncation setting); None when they are the same model."""
    if ours.task != theirs.task:
        return "task", ours.task, theirs.task
    a, b = dotted(dataclasses.asdict(ours.config)), dotted(dataclasses.asdict(theirs.config))
    for key in a:
        if key not in ("vocab_size", "pad_token_id", "num_labels") and a[key] != b.get(key):
            return f"model.{key}", a[key], b.get(key)
    if ours.max_length != theirs.max_length:
        return "data.max_length", ours.max_length, theirs.max_length
    if ours.label_names != theirs.label_names:
        return "labels", ours.label_names, theirs.label_names
    if _rules(ours.tokenizer_json) != _rules(theirs.tokenizer_json):
        return "tokenizer", f"{a['vocab_size']} tokens", f"{b['vocab_size']} tokens"
    return None


def _rules(tokenizer_json: str) -> str:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_truncation()  # max_length is compared on its own
    tokenizer.no_padding()
    return tokenizer.to_str()


def check_resumable(ckpt_path: str, saved: checkpoint.Saved, module) -> None:
    """A resumed run must build the model the checkpoint holds: one line naming the first difference."""
    hp = module.hparams
    ours = checkpoint.Saved(hp.task, hp.model, hp.tokenizer_json, hp.label_names, hp.max_length, {})
    difference = first_difference(ours, saved)
    if difference:
        what, here, there = difference
        raise ConfigError(f"{ckpt_path} was trained with {what}={there!r}, this run has {what}={here!r}; resume "
                          f"with the config that run used (its .hydra/config.yaml)")


@contextlib.contextmanager
def ddp_ranks_run_this_job_only():
    """Lightning starts the extra DDP ranks as `python train.py <sys.argv[1:]> hydra.run.dir=<run.dir>`.
    Inside a multirun job that would start a whole sweep per rank, in another directory: point them
    at this job instead (its overrides, its directory). Afterwards, forget the DDP environment
    Lightning set up, or the next job would wait for ranks that are never started."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra_cfg = HydraConfig.get()
    argv, env = sys.argv, dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
