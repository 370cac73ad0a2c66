"""Peak memory (max resident set size, CPU) of the default training run, and of one `base`
training step at sequence length 512, batch 8, with `need_weights=False` (ours) vs `True`, with
BERT's attention dropout (0.1) and without it (0.0: the fused attention kernel can run).

    python benchmarks/memory.py [--train-overrides trainer.max_epochs=1]

Each measurement runs in its own process, so the peaks do not mix.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]

STEP = """
import resource, sys, torch, torch.nn.functional as F
sys.path.insert(0, {bench!r})
from common import NaiveLayer, full_batches, model_config
from encoder.tasks.classification import EncoderForSequenceClassification
from encoder.core.model import AttentionConfig
model = EncoderForSequenceClassification(model_config("base", 8192,
                                       attention=AttentionConfig(num_heads=12, dropout={dropout}))).train()
model.encoder.unpad = False
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


def step_peak(naive: bool, dropout: float) -> tuple[float, float]:
    code = STEP.format(bench=str(ROOT / "benchmarks"), naive=naive, dropout=dropout)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    peak, added = map(float, out.stdout.split())
    return peak, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-overrides", nargs="*", default=[], help="Hydra overrides for the training run")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_train:  # first: RUSAGE_CHILDREN reports the largest child so far
        subprocess.run([sys.executable, "train.py", *args.train_overrides], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"python train.py {' '.join(args.train_overrides)}: peak RSS {peak:.0f} MiB", flush=True)
    for dropout in (0.1, 0.0):
        for naive in (False, True):
            peak, added = step_peak(naive, dropout)
            print(f"base, seq 512, batch 8, attention dropout {dropout}, need_weights={naive}: peak RSS {peak:.0f} MiB "
                  f"(+{added:.0f} MiB for forward + backward)", flush=True)

if __name__ == "__main__":
    main()
