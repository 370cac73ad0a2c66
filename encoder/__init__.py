"""encoder: small transformer encoders, trained with Lightning + Hydra on Hugging Face datasets."""

from encoder.inference import ClassifierPredictor, MaskedLMPredictor, Predictor, RegressorPredictor, load_model
from encoder.model import ConfigError, Encoder, EncoderClassifier, EncoderForMaskedLM, EncoderLayer, ModelConfig
from encoder.module import MaskedLM, TextClassifier, TextRegressor

__all__ = ["ClassifierPredictor", "ConfigError", "Encoder", "EncoderClassifier", "EncoderForMaskedLM", "EncoderLayer",
           "MaskedLM", "MaskedLMPredictor", "ModelConfig", "Predictor", "RegressorPredictor", "TextClassifier",
           "TextRegressor", "load_model"]
__version__ = "0.1.0"
