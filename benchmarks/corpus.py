"""Pretraining at corpus scale: what `task=mlm` costs before and during its first steps, as the corpus grows.

    python benchmarks/corpus.py                         # 20 MB and 200 MB, data.num_proc=1 and 2
    python benchmarks/corpus.py --sizes 20 200 2000 --procs 2

The corpus is real English: the sentences of the offline Rotten Tomatoes corpus, drawn (seeded) into
documents of 3-30 sentences, one document per line, until the file has the size asked for. Each run is
`python train.py task=mlm data=local_files data.path=text model=tiny data.max_length=128 trainer.max_steps=20`
from an empty cache (what the issue measured), in its own process; this script samples the resident memory of
that process and of every process it starts (the tokenizing workers of `data.num_proc`), summed, every 0.1 s.
Preparation is the time from the start to the datamodule's "data.packing:" log line (reading, tokenizer
training, tokenization and packing); the rest is the 20 steps and validation. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402
from encoder.training.data.sources import rotten_tomatoes_corpus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "corpus.jsonl"


def sentences() -> list[str]:
    import csv

    files = rotten_tomatoes_corpus()
    out = []
    for path in files.values():
        with open(path, encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", row["text"] or "") if len(s.strip()) > 3]
    return out


def write_corpus(path: Path, megabytes: int, pool: list[str], seed: int = 0) -> int:
    """Documents of 3-30 sentences, one per line, until `megabytes` MB; returns the number of documents."""
    rng, target, written, documents = random.Random(seed), megabytes * 1_000_000, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            line = " ".join(rng.choices(pool, k=rng.randint(3, 30))) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            documents += 1
    return documents


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def run(corpus: Path, procs: int, workdir: Path) -> dict:
    cache, out = workdir / f"cache-{procs}", workdir / f"run-{procs}"
    command = [sys.executable, str(ROOT / "train.py"), "task=mlm", "data=local_files", "data.path=text",
               f"data.data_files.train={corpus}", "model=tiny", "data.max_length=128", "trainer.max_steps=20",
               f"data.num_proc={procs}", f"paths.cache_dir={cache}", f"hydra.run.dir={out}",
               "trainer.enable_progress_bar=false", "callbacks=debug", "logger=csv"]
    env = {**os.environ, "ENCODER_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, lines, prepared = [0], [], [None]

    def sample():
        while child.poll() is None:
            peak[0] = max(peak[0], tree_rss(child.pid))
            time.sleep(0.1)

    def read():
        for line in child.stdout:
            lines.append(line)
            if "data.packing:" in line and prepared[0] is None:
                prepared[0] = time.perf_counter() - start

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    child.wait()
    wall = time.perf_counter() - start
    for t in threads:
        t.join(timeout=5)
    if child.returncode != 0:
        raise SystemExit(f"train.py failed ({child.returncode}):\n{''.join(lines[-30:])}")
    packing = next((line for line in lines if "data.packing:" in line), "")
    return {"wall_s": round(wall, 1), "prepare_s": round(prepared[0], 1) if prepared[0] else None,
            "peak_rss_gb": round(peak[0] / 1e9, 3), "packing": packing.split("data.packing:", 1)[-1].strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200], help="corpus sizes in MB")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="data.num_proc values")
    parser.add_argument("--keep", help="a folder for the corpora and runs (default: a temporary one)")
    args = parser.parse_args()
    pool = sentences()
    print(f"machine: {machine()}; {len(pool)} distinct sentences to draw documents from")
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        for size in args.sizes:
            corpus = Path(tmp) / f"corpus-{size}mb.txt"
            documents = write_corpus(corpus, size, pool)
            for procs in args.procs:
                result = run(corpus, procs, Path(tmp) / f"{size}mb")
                mb_per_s = size / result["prepare_s"] if result["prepare_s"] else float("nan")
                print(f"{size:5d} MB  num_proc={procs}  {documents:8d} documents  prepare {result['prepare_s']:7.1f} s "
                      f"({mb_per_s:.2f} MB/s)  20 steps done at {result['wall_s']:7.1f} s  peak RSS "
                      f"{result['peak_rss_gb']:.2f} GB", flush=True)
                record = {"corpus_mb": size, "documents": documents, "num_proc": procs, **result,
                          "prepare_mb_per_s": round(mb_per_s, 3), "machine": machine(),
                          "date": datetime.now().strftime("%Y-%m-%d")}
                with open(RESULTS, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
