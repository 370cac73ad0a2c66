"""A run's life around training: which checkpoint it resumes, the checkpoint writes a killed process left
behind, the check that a resumed run builds the model its checkpoint holds, and DDP ranks inside a Hydra
multirun. (Deciding the run directory and what a resume may change happens earlier, before torch loads:
encoder/training/launch.py.)"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from encoder import checkpoint
from encoder.errors import ConfigError
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


def check_resumable(ckpt_path: str, saved: checkpoint.Saved, module) -> None:
    """A resumed run must build the model the checkpoint holds: one line naming the first difference."""
    hp = module.hparams
    ours = checkpoint.Saved(hp.task, hp.model, hp.tokenizer_json, hp.label_names, hp.max_length, {})
    difference = checkpoint.first_difference(ours, saved)
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
