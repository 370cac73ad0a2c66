"""What serving one prediction costs in a fresh Python process: import time, load time, predict time,
peak memory, and which heavy libraries got imported.

    python benchmarks/serving.py PATH [--rounds 5]     # PATH: a .ckpt or an export folder

Each round is a new process (imports are what a server or a CLI call pays at start); medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from machine import machine

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
import encoder
imported = time.perf_counter()
predictor = encoder.load_model(sys.argv[1])
loaded = time.perf_counter()
predictor.predict(["a gorgeous, witty, seductive movie"])
done = time.perf_counter()
heavy = ("lightning", "torchmetrics", "datasets", "pandas", "pyarrow", "matplotlib", "hydra", "omegaconf", "scipy")
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "predict_s": done - loaded,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "heavy": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy})}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, args.path], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(args.rounds)]
    for key in ("import_s", "load_s", "predict_s", "peak_rss_mib"):
        print(f"{key:13s} median {statistics.median(r[key] for r in runs):8.3f}  "
              f"(min {min(r[key] for r in runs):.3f}, max {max(r[key] for r in runs):.3f})")
    print(f"heavy libraries imported: {runs[0]['heavy'] or 'none'}")


if __name__ == "__main__":
    main()
