"""What a run prints: Lightning's and PyTorch's messages that tell our users nothing are dropped, each by
its own text (never a blanket filter), so every other warning still shows; what a run ends with is said on
the console and kept in its train.log."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Lightning's info lines (lightning.pytorch.utilities.rank_zero) that carry no information here:
# our callbacks configure the model summary on purpose; the litlogger advert; "no GPU" on a CPU run.
NOISE = ("Trainer already configured with model summary callbacks", "💡 Tip: For seamless cloud logging",
         "GPU available: False", "TPU available: False", "HPU available: False")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE)


def quiet() -> None:
    """Install the filters (once per process; idempotent). Where no terminal reads the output (a log file, a pipe),
    `datasets`' progress bars, redrawn in place, would be one endless line: they are off there (set before
    `datasets` is imported, which reads it once; the training bar prints plain lines itself)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    # Lightning's own use of a torch.utils._pytree API that torch deprecated; nothing for a user to do
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # a new run never starts in a folder with checkpoints (train.py refuses it); a resumed one does on purpose
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def say(text: str, error: bool = False) -> None:
    """Print `text` (to stderr if `error`) and keep it in the run's train.log too: Hydra's log file otherwise
    holds only the logged lines (data loading), not the summary, the interruption or the error a run ended on."""
    print(text, file=sys.stderr if error else sys.stdout)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("encoder", logging.ERROR if error else logging.INFO, __file__, 0,
                                           text.strip(), None, None))
