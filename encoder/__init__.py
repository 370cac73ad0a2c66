"""encoder: small transformer encoders, trained with Lightning + Hydra on Hugging Face datasets.

Importing `encoder` gives the serving API (`load_model`, the model classes) without the training
stack: Lightning, torchmetrics, datasets and matplotlib are imported by `encoder.training` only. The
names below that need torch are imported when first used (PEP 562), so that tools which need none of
them (`python train.py --help`) start without torch.
"""

import importlib

from encoder.core.errors import CheckpointError, ConfigError, DataError

_LAZY = {"Encoder": "encoder.core.model", "EncoderLayer": "encoder.core.model", "ModelConfig": "encoder.core.model",
         "Predictor": "encoder.core.predictor", "load_model": "encoder.serving"}
__all__ = ["CheckpointError", "ConfigError", "DataError", *_LAZY]
__version__ = "0.2.0"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'encoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once: later uses are plain attribute reads
    return value
