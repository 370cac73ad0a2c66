from encoder.data.collate import Collator, LengthGroupedSampler
from encoder.data.datamodule import DataError, TextDataModule
from encoder.data.sources import SOURCES, rotten_tomatoes_critics
from encoder.data.tokenizer import load_tokenizer, train_tokenizer

__all__ = ["Collator", "DataError", "LengthGroupedSampler", "SOURCES", "TextDataModule", "load_tokenizer",
           "rotten_tomatoes_critics", "train_tokenizer"]
