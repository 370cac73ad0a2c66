"""The run's loggers (configs/logger/: TensorBoard, CSV, W&B, MLflow; several at once), each built from its
config entry with what can go wrong said in one line before training starts: a logger whose package is
not installed names its extra, and an MLflow tracking server that cannot be reached is found in seconds
(MLflow itself retries for minutes, then prints a long traceback)."""

from __future__ import annotations

import importlib.util
import socket
from urllib.parse import urlparse

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from omegaconf import DictConfig

from encoder.core.errors import ConfigError

EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}  # config entry -> the package its extra installs


def build_loggers(loggers: DictConfig) -> list[Logger]:
    out = []
    for name, node in loggers.items():
        if node is None:
            continue
        package = EXTRAS.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"logger={name} needs the {package} package: pip install -e '.[{name}]' in your clone")
        if name == "mlflow":
            check_reachable(node.get("tracking_uri"))
        try:
            out.append(instantiate(node))
        except InstantiationException as e:
            cause = e.__cause__ or e
            raise ConfigError(f"logger.{name}: {(str(cause).strip().splitlines() or [type(cause).__name__])[0]}"
                              ) from None
    return out


def check_reachable(uri: str | None, timeout: float = 3.0) -> None:
    """An http(s) tracking server must answer a connection within `timeout` seconds."""
    parsed = urlparse(uri or "")
    if parsed.scheme not in ("http", "https"):
        return  # a local store (sqlite, file)
    try:
        socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"logger.mlflow.tracking_uri={uri} cannot be reached ({e.strerror or e}); start the "
                          f"tracking server, or drop tracking_uri for the local store in the run directory") from None


def where(logger: Logger) -> str:
    """Where a logger's records are, as a user opens them."""
    if isinstance(logger, TensorBoardLogger):
        return f"tensorboard --logdir {logger.log_dir}"
    if isinstance(logger, MLFlowLogger):
        return f"{logger._tracking_uri} (experiment {logger.experiment_id}, run {logger.run_id})"
    return str(getattr(logger, "log_dir", None) or logger.save_dir)
