"""Loggers people use: TensorBoard (default), CSV, W&B (offline here) and MLflow (a local store), alone or
several at once, each receiving the run's metrics and config."""

import csv

import pytest

from conftest import TINY, compose


def test_several_loggers_at_once_each_record_the_run(tmp_path, monkeypatch, rt_files):
    import train

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    overrides = [*TINY, "logger=[tensorboard,csv,wandb,mlflow]", "logger.wandb.offline=true",
                 "~callbacks.tensorboard_visuals"]
    metrics = train.train(compose(overrides, tmp_path / "run"))
    run = tmp_path / "run"
    assert list((run / "tensorboard").glob("events.*"))
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv", encoding="utf-8")))
    assert any(r.get("val/acc") for r in rows) and any(r.get("test/acc") for r in rows)
    # W&B offline: the run's records (for `wandb sync`), with the metrics and the config in them
    records = next(run.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    assert b"test/acc" in records and b"val/acc" in records and b"embed_dim" in records
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    (recorded,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert recorded.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert recorded.data.params["model/embed_dim"] == "64"  # the run's config, flattened


def test_a_logger_without_its_package_is_one_line(tmp_path, monkeypatch, rt_files):
    import train
    from lightning_utilities.core.imports import RequirementCache

    from encoder.errors import ConfigError

    # what Lightning sees when MLflow is not installed (here it is: ask for a version that does not exist)
    monkeypatch.setattr("lightning.pytorch.loggers.mlflow._MLFLOW_AVAILABLE", RequirementCache("mlflow>=999"))
    with pytest.raises(ConfigError, match=r"^logger: Requirement 'mlflow>=999' not met.*pip install 'encoder\[wandb\]' "
                                          r"or 'encoder\[mlflow\]'\)$"):
        train.train(compose([*TINY, "logger=mlflow"], tmp_path))
