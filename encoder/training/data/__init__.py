"""Data for training: offline sources (sources.py), loading (loading.py), labels (labels.py), token ids
(encoding.py), length-grouped sampling (sampler.py) and the LightningDataModule (datamodule.py)."""
