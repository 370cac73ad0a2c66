"""The errors a user can fix: each message is one line that names the problem and the fix.

Entry points (train.py, the predict/export CLIs) print these as `error: <message>` with no traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


class DataError(ValueError):
    """The data does not fit the configuration; the message names the file or split and the fix."""


class LabelSetError(DataError):
    """A split holds labels outside the label set (the configured one, or a checkpoint's)."""

    def __init__(self, split: str, outside: list[str], names: list[str]):
        self.split, self.outside, self.names = split, outside, names
        super().__init__(f"the {split} split has labels {', '.join(outside)} outside the label set {names}; "
                         f"fix the data or set data.label_names")


class CheckpointError(ValueError):
    """A checkpoint or export cannot be used (missing, corrupt, modified, foreign)."""


def check_choice(value, choices, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is unknown; choose one of {sorted(choices)}")
