"""One training epoch on the default dataset: our data path (length-grouped batches, dynamic
padding to a multiple of 8) vs padding every batch to max_length in random order (the Hugging Face
example scripts' default, `padding="max_length"`). Same model, same examples, same loop.

    python benchmarks/epoch.py [--examples 4000] [--size small] [--max-length 128]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common import default_data, machine, model_config
from encoder.collate import Collator
from encoder.tasks.classification import EncoderForSequenceClassification


def run_epoch(model, loader) -> tuple[float, int, int]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    real = computed = 0
    start = time.perf_counter()
    for b in loader:
        F.cross_entropy(model(b["input_ids"], b["padding_mask"]), b["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real += int((~b["padding_mask"]).sum())
        computed += b["padding_mask"].numel()
    return time.perf_counter() - start, real, computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=4000, help="training examples per epoch (0: all)")
    parser.add_argument("--size", default="small")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pad-to-multiple-of", type=int, default=8)
    args = parser.parse_args()
    dm = default_data(max_length=args.max_length, batch_size=args.batch_size,
                      max_train_samples=args.examples or None, pad_to_multiple_of=args.pad_to_multiple_of)
    ours_loader = dm.train_dataloader()
    padded_loader = DataLoader(dm.datasets["train"].with_format(columns=["input_ids", "labels"]),
                               batch_size=args.batch_size, shuffle=True,
                               collate_fn=Collator(pad_to_multiple_of=args.max_length))
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(model_config(args.size, dm.tokenizer.get_vocab_size())).train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"machine: {machine()}; {len(dm.datasets['train'])} examples, model={args.size}, "
          f"max_length={args.max_length}, batch={args.batch_size}, pad_to_multiple_of={args.pad_to_multiple_of}")
    results = {}
    for name, loader in (("ours", ours_loader), ("padded", padded_loader), ("ours", ours_loader),
                         ("padded", padded_loader)):
        model.load_state_dict(initial)  # same starting point for every epoch
        seconds, real, computed = run_epoch(model, loader)
        results.setdefault(name, []).append((seconds, real / computed))
        print(f"{name:7s} {seconds:7.1f} s  padding efficiency {real / computed:.1%}", flush=True)
    ours, padded = min(t for t, _ in results["ours"]), min(t for t, _ in results["padded"])
    print(f"\npadding efficiency: ours {results['ours'][0][1]:.1%}, padded to max_length {results['padded'][0][1]:.1%}")
    print(f"epoch wall time (best of 2): ours {ours:.1f} s, padded {padded:.1f} s, speed-up {padded / ours:.2f}x")


if __name__ == "__main__":
    main()
