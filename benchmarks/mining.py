"""Memory of hard-negative mining (python -m encoder.training.mine) against the corpus size: the same 1,000 training pairs of
data=bible_quotes mined among their own verses (1x), then with 9,000 and 99,000 more candidate documents (10x,
100x: verses of the King James and World English Bibles and WordNet glosses, from the Debian packages the offline
sets read). Each run is a fresh process; its peak resident memory (ru_maxrss) is recorded for the first mining
(which embeds the corpus and writes its cache) and the second (which reads the cache back), beside what the corpus's
vectors and the full anchors x corpus score matrix would take in memory.

    python benchmarks/mining.py EMBEDDER        # e.g. all-MiniLM-L6-v2 or a checkpoint; results appended
    python benchmarks/mining.py table

Results: benchmarks/results/mining.jsonl (paths relative to the repository).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mining.jsonl"
PAIRS, SCALES = 1000, (1, 10, 100)
PEAK = ("import resource, sys; from encoder.training.mine import main; main(sys.argv[1:]); "
        "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")


def documents() -> list[str]:
    """Candidate documents that are not the pairs' verses: Bible verses of both translations, WordNet glosses."""
    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import WORDNET, _verses, default_cache_dir, deb_members, fetch_deb

    cache = default_cache_dir()
    texts = [*_verses(cache, "KJV").values(), *_verses(cache, "WEB").values()]
    for pos in ("noun", "verb", "adj", "adv"):
        data = deb_members(fetch_deb(*WORDNET, cache), "usr/share/wordnet/data.")[f"usr/share/wordnet/data.{pos}"]
        texts += [line.partition(" | ")[2].strip() for line in data.decode("latin-1").splitlines()
                  if not line.startswith("  ") and " | " in line]
    return list(dict.fromkeys(t for t in texts if t))


def mine(embedder: str, pairs: Path, corpus: Path, cache: Path, out: Path) -> tuple[float, float]:
    """(peak resident MiB, wall seconds) of one mining in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, embedder, str(pairs), str(out), "--anchor-column", "quote",
                           "--positive-column", "verse", "--corpus", str(corpus), "--cache-dir", str(cache)],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak_kib"))
    return round(peak / 1024, 1), round(time.perf_counter() - start, 1)


def run(embedder: str) -> None:
    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import SOURCES

    with open(SOURCES["bible_quotes"]()["train"], encoding="utf-8") as f:
        rows = [r for _, r in zip(range(PAIRS), csv.DictReader(f))]
    verses = {r["verse"] for r in rows}
    others = [t for t in documents() if t not in verses]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with open(folder / "pairs.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("quote", "verse"), *((r["quote"], r["verse"]) for r in rows)])
        for scale in SCALES:
            extra = others[: PAIRS * (scale - 1)]
            if len(extra) < PAIRS * (scale - 1):
                raise SystemExit(f"only {len(others)} other documents; {scale}x needs {PAIRS * (scale - 1)}")
            (folder / f"corpus{scale}.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in extra))
            first = mine(embedder, folder / "pairs.csv", folder / f"corpus{scale}.txt", folder / "cache",
                         folder / f"first{scale}.csv")
            again = mine(embedder, folder / "pairs.csv", folder / f"corpus{scale}.txt", folder / "cache",
                         folder / f"again{scale}.csv")
            width = 384 if "MiniLM" in embedder else None
            record = {"embedder": embedder if not Path(embedder).is_absolute() else Path(embedder).name,
                      "scale": scale, "pairs": PAIRS, "documents": PAIRS * scale, "peak_mib_first": first[0],
                      "wall_s_first": first[1], "peak_mib_cached": again[0], "wall_s_cached": again[1],
                      "full_scores_mib": round(PAIRS * PAIRS * scale * 4 / 2**20, 1),
                      "corpus_vectors_mib": round(PAIRS * scale * width * 4 / 2**20, 1) if width else None,
                      "machine": machine(), "date": time.strftime("%Y-%m-%d")}
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with open(RESULTS, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def table() -> None:
    print("| documents | peak MiB (embeds, writes the cache) | peak MiB (reads the cache) | wall s (first / cached) | "
          "vectors in memory would be | anchors x corpus scores would be | note |")
    print("|---|---|---|---|---|---|---|")
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        print(f"| {r['documents']:,} | {r['peak_mib_first']} | {r['peak_mib_cached']} | {r['wall_s_first']} / "
              f"{r['wall_s_cached']} | {r['corpus_vectors_mib'] or '-'} MiB | {r['full_scores_mib']} MiB | "
              f"{r.get('note', '')} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embedder", help="what encoder.mine takes; 'table' prints the results")
    args = parser.parse_args()
    table() if args.embedder == "table" else run(args.embedder)
