"""encoder: small transformer encoders, trained with Lightning + Hydra on Hugging Face datasets."""

from encoder.inference import Predictor, load_model
from encoder.model import ConfigError, Encoder, EncoderClassifier, EncoderLayer, ModelConfig
from encoder.module import TextClassifier

__all__ = ["ConfigError", "Encoder", "EncoderClassifier", "EncoderLayer", "ModelConfig", "Predictor",
           "TextClassifier", "load_model"]
__version__ = "0.1.0"
