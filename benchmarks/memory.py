"""Peak memory (max resident set size, CPU) of the default training run, and of one `base`
training step at sequence length 512, batch 8, with `need_weights=False` (ours) vs `True`, with
BERT's attention dropout (0.1) and without it (0.0: the fused attention kernel can run).

    python benchmarks/memory.py [--train-overrides trainer.max_epochs=1]
    python benchmarks/memory.py --contrastive 512   # only: one task=contrastive step, cached and not

--contrastive B: one training step of task=contrastive on all-MiniLM-L6-v2 (offline), B pairs of data=bible_quotes
(max length 96), forward and backward, with the whole batch's activations (uncached) and with GradCache
(task.loss.mini_batch_size=32, 64).

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


CONTRASTIVE = """
import csv, resource, sys, torch
from encoder.core.collate import Collator
from encoder.tasks.contrastive import Contrastive, EncoderForSentenceEmbedding
from encoder.training.data.sources import SOURCES
from encoder.training.data.teacher import embedder
from encoder.training.pretrained import all_minilm_l6_v2
teacher = embedder(str(all_minilm_l6_v2()))
model = EncoderForSentenceEmbedding(teacher.model.cfg)
model.load_state_dict(teacher.model.state_dict(), strict=False)
model.train()
tok = teacher.tokenizer
tok.enable_truncation(96)
with open(SOURCES["bible_quotes"]()["train"], encoding="utf-8") as f:
    rows = [r for _, r in zip(range({batch}), csv.DictReader(f))]
collate = Collator(pad_token_id=0)
a = collate([{{"input_ids": e.ids}} for e in tok.encode_batch([r["quote"] for r in rows])])
p = collate([{{"input_ids": e.ids}} for e in tok.encode_batch([r["verse"] for r in rows])])
batch = {{"input_ids": a["input_ids"], "padding_mask": a["padding_mask"], "input_ids_1": p["input_ids"],
         "padding_mask_1": p["padding_mask"]}}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
Contrastive({{"mini_batch_size": {chunk}}}).step(model, batch).loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after / 1024, (after - before) / 1024)
"""


def contrastive_peak(batch: int, chunk: int | None) -> tuple[float, float]:
    code = CONTRASTIVE.format(batch=batch, chunk=chunk)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    peak, added = map(float, out.stdout.split())
    return peak, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-overrides", nargs="*", default=[], help="Hydra overrides for the training run")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--contrastive", type=int, metavar="BATCH", help="only the task=contrastive step at BATCH")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.contrastive:
        for chunk in (None, 64, 32):
            peak, added = contrastive_peak(args.contrastive, chunk)
            print(f"task=contrastive, all-MiniLM-L6-v2, batch {args.contrastive}, mini_batch_size={chunk}: peak RSS "
                  f"{peak:.0f} MiB (+{added:.0f} MiB for forward + backward)", flush=True)
        return
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
