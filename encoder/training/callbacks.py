"""What keeps a run safe and legible: atomic checkpoint files, a clean stop on SIGINT/SIGTERM, a progress
bar that stays right after a resume and prints plain lines where no terminal reads it, a one-line model
summary."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelSummary, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from lightning.pytorch.plugins.io import TorchCheckpointIO
import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop, shape_wrapper


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place:
    a crash mid-write leaves the previous `last.ckpt` intact, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class Interrupted(Exception):
    """Raised after a signal, once every completed training step is in a checkpoint."""

    def __init__(self, signum: int, step: int, path: Path | None):
        self.signum, self.step, self.path = signum, step, path
        saved = (f"saved {path}; resume with: python train.py ckpt_path={path}" if path else
                 "every training step was already in a checkpoint")
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; {saved}")


class GracefulShutdown(L.Callback):
    """SIGINT (Ctrl-C) or SIGTERM at any moment of fit or test: finish the current batch, save
    `last.ckpt` with every completed training step (unless training is over), then stop with 130/143.

    The checkpoint is written between steps, never in the middle of an optimizer update, so resuming
    from it loses no completed step. A second signal stops at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signum

    def _install(self, *args) -> None:
        # After Lightning's own SIGTERM handler (registered just before a stage runs), so ours runs.
        if not self._previous:
            self.received = None
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

    on_sanity_check_start = on_train_start = on_validation_start = on_test_start = _install

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        if self.received is None:
            return
        path = None
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # steps done that no checkpoint holds yet
            folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else Path(
                trainer.default_root_dir) / "checkpoints"
            path = folder / "last.ckpt"
            trainer.save_checkpoint(path, weights_only=False)  # a full checkpoint: resumable
        raise Interrupted(self.received, trainer.global_step, path)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self._stop_if_signalled(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args) -> None:
        self._stop_if_signalled(trainer)

    def on_test_batch_end(self, trainer: L.Trainer, *args) -> None:
        self._stop_if_signalled(trainer)


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the epoch, total and ETA also for an epoch resumed in its middle
    (Lightning does not start that epoch again, so the bar would show `Training: 30/?`). Where no terminal reads
    the output (a log file, a pipe, a scheduler's capture), a bar redrawn in place is one endless line: there it
    prints a plain line every tenth of an epoch and after each validation instead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plain = not sys.stdout.isatty()
        self._started = 0.0
        if self.plain:
            self.disable()  # (every bar: sanity check, training, validation, test)

    def on_train_start(self, trainer: L.Trainer, *args) -> None:
        if self.plain:
            self._started = time.perf_counter()
            return
        super().on_train_start(trainer, *args)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done and self.train_progress_bar is not None:
            bar = self.train_progress_bar
            bar.reset(total=convert_inf(self.total_train_batches))
            bar.initial = bar.n = done  # the ETA counts from here: the skipped batches took no time
            bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if not self.plain:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        total = trainer.num_training_batches
        every = max(1, int(total) // 10) if total != float("inf") else 100
        if trainer.is_global_zero and ((batch_idx + 1) % every == 0 or batch_idx + 1 == total):
            loss = trainer.callback_metrics.get("train/loss")
            print(f"epoch {trainer.current_epoch} batch {batch_idx + 1}/{convert_inf(total) or '?'} step "
                  f"{trainer.global_step}" + (f"  train/loss {float(loss):.4f}" if loss is not None else "")
                  + f"  {time.perf_counter() - self._started:.0f} s", flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.plain:
            return super().on_validation_end(trainer, pl_module)
        if trainer.is_global_zero and not trainer.sanity_checking:
            shown = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(trainer.callback_metrics.items())
                              if k.startswith("val/") and "/" not in k[4:])
            print(f"epoch {trainer.current_epoch} validation: {shown}", flush=True)


def _native_mha_flops(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None,
                       **kwargs) -> int:
    """FLOPs of nn.MultiheadAttention's fused inference kernel: the q/k/v and output projections, then q.k and the
    weighted sum of v, as torch counts scaled_dot_product_attention."""
    batch, seq, dim = query_shape
    return 2 * batch * seq * dim * 4 * dim + 2 * 2 * batch * seq * key_shape[1] * dim


# The summary's FLOPs come from an eval-mode, no-grad forward, where the attention of both paths runs in kernels
# torch's FlopCounterMode has no formula for: nn.MultiheadAttention's fused one, and scaled_dot_product_attention's
# flash kernel for the CPU (rotary attention). Without these, attention counted nothing (small: 134 M of 205 M).
for _op, _formula in ((torch.ops.aten._native_multi_head_attention, shape_wrapper(_native_mha_flops)),
                      (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, sdpa_flop)):
    if _op not in flop_registry:  # (a torch that counts it itself keeps its own)
        register_flop_formula(_op, get_raw=True)(_formula)


class OneLineSummary(ModelSummary):
    """The model in one line (its parameters, size, and FLOPs for one 32-token text) where Lightning's
    ModelSummary prints a table of every submodule (callbacks.model_summary._target_=lightning.pytorch.callbacks.
    ModelSummary brings the table back)."""

    def summarize(self, summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes, total_flops: int = 0, **kwargs) -> None:
        frozen = total_parameters - trainable_parameters
        print(f"model: {get_human_readable_count(total_parameters)} parameters"
              + (f" ({get_human_readable_count(frozen)} frozen)" if frozen else "")
              + f", {model_size:.1f} MB" + (f", {get_human_readable_count(total_flops)} FLOPs for one 32-token text"
                                            if total_flops else ""))


class LastCheckpoint(Checkpoint):
    """last.ckpt, the latest state a resume continues from: after every `every_n_epochs` training epochs (1: each),
    every `every_n_train_steps` optimizer steps when set, and at the end of training, each written once per step. Written with Lightning's
    public `trainer.save_checkpoint` (through AtomicCheckpointIO), so no Lightning upgrade can take it away; a
    `Checkpoint`, which Lightning runs after every other callback, so it holds their state of this step."""

    def __init__(self, dirpath: str, filename: str = "last", every_n_train_steps: int | None = None,
                 every_n_epochs: int = 1):
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps} must be a positive "
                             f"number of steps (or null: every epoch)")
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"callbacks.last_checkpoint.every_n_epochs={every_n_epochs!r} must be a positive number "
                             f"of epochs")
        self.every_n_epochs = every_n_epochs
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self._saved_at: int | None = None  # the global step last written

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self._saved_at == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # (a full checkpoint: resumable)
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step and trainer.global_step % n == 0:  # (an accumulating batch takes no step)
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class LogPointsPerEpoch(L.Callback):
    """At least `at_least` logged training points per epoch, whatever the data size: on 300 examples (10
    batches) `trainer.log_every_n_steps=20` would log no `train/loss` at all. Lowers log_every_n_steps for
    this run when the epoch is too short for it; never raises it."""

    def __init__(self, at_least: int = 5):
        self.at_least = at_least

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.num_training_batches == float("inf"):  # an iterable of unknown length: nothing to fit
            return
        steps = int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches)
        if 0 < trainer.log_every_n_steps and steps // trainer.log_every_n_steps < self.at_least:
            trainer.log_every_n_steps = max(1, steps // self.at_least)
