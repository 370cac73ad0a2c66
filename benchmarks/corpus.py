"""Pretraining at corpus scale: what `task=mlm` costs before and during its first steps, as the corpus grows.

    python benchmarks/corpus.py --record              # 20 MB and 200 MB: 1 core, 2 cores, 2 cores + data.num_proc=2
    python benchmarks/corpus.py --sizes 1000 --runs 1x2 --record
    python benchmarks/corpus.py --sizes 200 1000 --runs 1x2 --streaming --record
    python benchmarks/corpus.py --sizes 2000 --runs 1x2 --memory-cap 1.7 --record   # root: in a memory cgroup

The corpus is real English: the sentences of the offline Rotten Tomatoes corpus, drawn (seeded) into
documents of 3-30 sentences, one document per line, until the file has the size asked for. Each run is
`python train.py task=mlm data=local_files data.path=text model=tiny data.max_length=128 trainer.max_steps=20
data.max_eval_samples=2000` from an empty cache, in its own process; this script samples the resident memory of
that process and of every process it starts (the tokenizing workers of `data.num_proc`), summed, every 0.1 s.
"Prepared at" is the time from the start to the datamodule's "data.packing:" log line (imports, reading, tokenizer
training, tokenization and packing); between two sizes its difference gives the preparation time per MB. "Setup"
is the datamodule's own share of it (its "prepared in" log line: reading, tokenizer training, tokenization and
packing, without the process start), the time to compare between one core and two. The rest
is the 20 steps and a validation of 2,000 rows (data.max_eval_samples: the validation split, 10% of the corpus, is
still prepared in full). One core: the run is pinned with taskset (the tokenizers library already encodes a
batch on every core it may use). Run it alone on the machine.

Resident memory counts the pages of the memory-mapped Arrow files a run has read, which the kernel drops when
memory runs short; `--memory-cap GB` shows what a run needs when it must: it runs inside a memory cgroup limited
to that many GB (charged with the process's own memory and the file pages it touches; at the limit the kernel
reclaims file pages, and kills the run only if its own memory exceeds the cap). A run that finishes under a cap
below its corpus size never needed the corpus in memory.
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
                text = " ".join((row["text"] or "").split())  # one line: no stray line breaks inside a document
                out += [s for s in re.split(r"(?<=[.!?]) ", text) if len(s) > 3]
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


def tree_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of `pid` and all its descendants (from /proc): (all, anonymous). The difference is pages of
    mapped files (the Arrow files `datasets` memory-maps), which the kernel drops when memory runs short."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, anonymous, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith("Rss")
                          or line.startswith("VmRSS")}
            total, anonymous = total + fields.get("VmRSS", 0), anonymous + fields.get("RssAnon", 0)
        except (OSError, ValueError, IndexError):
            pass
    return total, anonymous


def memory_cgroup(cap_gb: float) -> tuple[list[str], Path]:
    """A new memory cgroup limited to `cap_gb` (cgroup v2, or v1's memory controller; needs root): the command
    prefix that runs a command in it, and its folder."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    group = Path("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory") / f"encoder-corpus-{os.getpid()}"
    group.mkdir(exist_ok=True)
    (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(int(cap_gb * 1e9)))
    return ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"], group


def cgroup_peak(group: Path) -> int:
    """The most memory the cgroup was charged (v2: memory.peak; v1: memory.max_usage_in_bytes)."""
    for name in ("memory.peak", "memory.max_usage_in_bytes"):
        if (group / name).exists():
            return int((group / name).read_text())
    return 0


def run(corpus: Path, procs: int, cores: int, workdir: Path, stream: bool = False, cap_gb: float | None = None) -> dict:
    cache, out = workdir / f"cache-{procs}-{cores}", workdir / f"run-{procs}-{cores}"
    pin = ["taskset", "-c", ",".join(map(str, range(cores)))] if cores < os.cpu_count() else []
    group = None
    if cap_gb:
        prefix, group = memory_cgroup(cap_gb)
        pin = prefix + pin
    command = [*pin, sys.executable, str(ROOT / "train.py"), "task=mlm", "data=local_files", "data.path=text",
               f"data.data_files.train={corpus}", "model=tiny", "data.max_length=128", "trainer.max_steps=20",
               "data.max_eval_samples=2000", *(["data.streaming=true"] if stream else []),
               f"data.num_proc={procs}", f"paths.cache_dir={cache}", f"hydra.run.dir={out}",
               "callbacks=debug", "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "logger=csv"]
    env = {**os.environ, "ENCODER_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, lines, prepared = [0, 0], [], [None]

    def sample():
        while child.poll() is None:
            peak[:] = map(max, peak, tree_rss(child.pid))
            time.sleep(0.1)

    def read():
        for line in child.stdout:
            lines.append(line)
            if ("data.streaming:" if stream else "data.packing:") in line and prepared[0] is None:  # ready to train
                prepared[0] = time.perf_counter() - start

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    child.wait()
    wall = time.perf_counter() - start
    for t in threads:
        t.join(timeout=5)
    capped = {}
    if group:
        capped = {"memory_cap_gb": cap_gb, "cgroup_peak_gb": round(cgroup_peak(group) / 1e9, 3)}
        group.rmdir()
    if child.returncode != 0:
        killed = " (killed: over the memory cap?)" if group and child.returncode in (-9, 137) else ""
        raise SystemExit(f"train.py failed ({child.returncode}){killed}:\n{''.join(lines[-30:])}")
    marker = "data.streaming:" if stream else "data.packing:"
    said = next((line for line in lines if marker in line), "")
    setup = next((re.search(r"prepared in ([0-9.]+) s", line) for line in lines if "prepared in" in line), None)
    return {"wall_s": round(wall, 1), "prepare_s": round(prepared[0], 1) if prepared[0] else None,
            "setup_s": float(setup.group(1)) if setup else None,
            "peak_rss_gb": round(peak[0] / 1e9, 3), "peak_anon_rss_gb": round(peak[1] / 1e9, 3),
            "data": said.split(marker, 1)[-1].strip(), "streaming": stream, **capped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200], help="corpus sizes in MB")
    parser.add_argument("--runs", nargs="+", default=["1x1", "1x2", "2x2"],
                        help="PROCSxCORES: data.num_proc, and the cores the run may use (taskset)")
    parser.add_argument("--streaming", action="store_true", help="data.streaming=true: prepared = validation and "
                        "tokenizer ready, the training rows made as they are read")
    parser.add_argument("--memory-cap", type=float, help="run each training in a memory cgroup of this many GB "
                        "(root; the run fails if it needs more)")
    parser.add_argument("--keep", help="a folder for the corpora and runs (default: a temporary one)")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    pool = sentences()
    print(f"machine: {machine()}; {len(pool)} distinct sentences to draw documents from")
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        for size in args.sizes:
            corpus = Path(tmp) / f"corpus-{size}mb.txt"
            documents = write_corpus(corpus, size, pool)
            for procs, cores in (map(int, r.split("x")) for r in args.runs):
                result = run(corpus, procs, cores, Path(tmp) / f"{size}mb", args.streaming, args.memory_cap)
                print(f"{size:5d} MB  num_proc={procs} cores={cores}{'  streaming' if args.streaming else ''}  "
                      f"{documents:8d} documents  prepared at "
                      f"{result['prepare_s']:7.1f} s (setup {result['setup_s'] or 0:6.1f} s)  20 steps done at {result['wall_s']:7.1f} s  peak RSS "
                      f"{result['peak_rss_gb']:.2f} GB (anonymous {result['peak_anon_rss_gb']:.2f} GB)"
                      + (f"  under a {args.memory_cap} GB cap (charged at most {result['cgroup_peak_gb']:.2f} GB)"
                         if args.memory_cap else ""), flush=True)
                record = {"corpus_mb": size, "documents": documents, "num_proc": procs, "cores": cores, **result,
                          "machine": machine(),
                          "date": datetime.now().strftime("%Y-%m-%d")}
                if args.record:
                    with open(RESULTS, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
