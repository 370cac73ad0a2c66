"""Loggers people use: TensorBoard (default), CSV, W&B (offline here) and MLflow (a local store), alone or
several at once, each receiving the run's metrics and config."""

import csv

import pytest

from conftest import TINY, compose


def test_several_loggers_at_once_each_record_the_run(tmp_path, monkeypatch, rt_files, capsys):
    import train

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    overrides = [*TINY, "logger=[tensorboard,csv,wandb,mlflow]", "logger.wandb.offline=true",
                 "~callbacks.tensorboard_visuals"]
    metrics = train.train(compose(overrides, tmp_path / "run"))
    run = tmp_path / "run"
    printed = capsys.readouterr().out
    assert f"mlflow:          sqlite:///{run}/mlflow.db (experiment " in printed and "None" not in printed
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
    import importlib.util

    import train

    from encoder.core.errors import ConfigError

    # what a machine without MLflow looks like (here it is installed)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"^logger=mlflow needs the mlflow package: pip install -e '\.\[mlflow\]' in your clone$"):
        train.train(compose([*TINY, "logger=mlflow"], tmp_path))


def test_an_unreachable_mlflow_server_is_one_line_in_seconds(tmp_path, rt_files):
    import socket
    import time

    import train

    from encoder.core.errors import ConfigError

    with socket.socket() as s:  # a local port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^logger.mlflow.tracking_uri=http://127.0.0.1:{port} cannot be reached"):
        train.train(compose([*TINY, "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}"], tmp_path))
    assert time.perf_counter() - start < 10


def test_visuals_without_tensorboard_say_so_once(tmp_path, rt_files, caplog):
    import train

    train.train(compose([*TINY, "logger=csv", "callbacks.tensorboard_visuals.enabled=true"], tmp_path))
    said = [r for r in caplog.records if "TensorBoardVisuals needs a TensorBoardLogger" in r.getMessage()]
    assert len(said) == 1  # fit and test both set it up
