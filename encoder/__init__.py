"""encoder: small transformer encoders, trained with Lightning + Hydra on Hugging Face datasets.

Importing `encoder` gives the serving API (`load_model`, the model classes) without the training
stack: Lightning, torchmetrics, datasets and matplotlib are imported by `encoder.training` only.
"""

from encoder.errors import CheckpointError, ConfigError, DataError
from encoder.model import Encoder, EncoderLayer, ModelConfig
from encoder.predictor import Predictor, load_model

__all__ = ["CheckpointError", "ConfigError", "DataError", "Encoder", "EncoderLayer", "ModelConfig", "Predictor",
           "load_model"]
__version__ = "0.2.0"
