"""How long `python train.py` takes to answer before any training: `--help` and a misspelled key.

    python benchmarks/startup.py [--rounds 5]

Each command runs in a fresh process (bytecode cached by a first, untimed round), medians of the rounds.
`--help` is answered before torch and Lightning are imported, and so is a misspelled key: train.py composes
and checks the config first, with a schema that needs neither (ModelConfig in encoder/core/options.py; the
Trainer's arguments cached per Lightning version). The import times of torch and Lightning alone are the peers:
what answering a mistake would cost if checking it needed them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"--help": ["--help"], "a misspelled key (model.embed_dimm=3)": ["model.embed_dimm=3"],
            "import torch alone": None, "import lightning alone": None}


def seconds(args: list[str] | None, name: str) -> float:
    cmd = [sys.executable, str(ROOT / "train.py"), *args] if args is not None else \
        [sys.executable, "-c", f"import {name.split()[1]}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for name, command in COMMANDS.items():
        seconds(command, name)  # warm: bytecode and the file cache
        times = [seconds(command, name) for _ in range(args.rounds)]
        print(f"{name:40s} median {statistics.median(times):5.2f} s  (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
