"""Peak memory (max resident set size, CPU) of the default training run, and of one `base`
training step at sequence length 512, batch 8, with `need_weights=False` (ours) vs `True`.

    python benchmarks/memory.py [--train-overrides trainer.max_epochs=1]

Each measurement runs in its own process, so the peaks do not mix.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEP = """
import resource, sys, torch, torch.nn.functional as F
sys.path.insert(0, {bench!r})
from common import NaiveLayer, full_batches, model_config
from encoder.model import EncoderClassifier
model = EncoderClassifier(model_config("base", 8192, unpad=False)).train()
if {naive}:
    for layer in model.encoder.layers:
        layer.__class__ = NaiveLayer
b = full_batches(8, 512, 1, 8192)[0]
b["padding_mask"][:, 400:] = True  # some padding, so the key padding mask is used
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
F.cross_entropy(model(b["input_ids"], b["padding_mask"]), b["labels"]).backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after / 1024, (after - before) / 1024)
"""


def step_peak(naive: bool) -> tuple[float, float]:
    code = STEP.format(bench=str(ROOT / "benchmarks"), naive=naive)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    peak, added = map(float, out.stdout.split())
    return peak, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-overrides", nargs="*", default=[], help="Hydra overrides for the training run")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    for naive in (False, True):
        peak, added = step_peak(naive)
        print(f"base, seq 512, batch 8, need_weights={naive}: peak RSS {peak:.0f} MiB "
              f"(+{added:.0f} MiB for forward + backward)", flush=True)
    if not args.skip_train:
        subprocess.run([sys.executable, "train.py", *args.train_overrides], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child: train.py
        print(f"python train.py {' '.join(args.train_overrides)}: peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
