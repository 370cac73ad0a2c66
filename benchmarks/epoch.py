"""Training on the default dataset, against the strongest setup a Hugging Face user runs.

Each run trains on the first --batches batches of an epoch over the whole training split (0: the whole
epoch), so every sampler groups lengths over the real dataset (transformers' sampler shrinks its
mega-batches on small datasets). Data paths (batch 32, dynamic padding to a multiple of 8 unless said):
  ours        our LengthGroupedSampler: shuffle, sort mega-batches of 50 batches by length, shuffle batches
  group       transformers' own LengthGroupedSampler (Trainer's group_by_length=True): the same idea
  random      random order (the Trainer's default)
  max_length  random order, every batch padded to max_length (the HF example scripts' padding="max_length"):
              a weaker baseline, kept as an extra row
Models: ours (EncoderForSequenceClassification) and transformers' BertForSequenceClassification (SDPA)
with the same weights, both with the `small` default's attention dropout (0.0), both stepped by fused
AdamW (our default, and the Trainer's `adamw_torch_fused` default since torch 2.8). Every round runs each
(model, data path) pair once, in turn, from the same initial weights; the figures are medians over rounds,
and the ratios medians of per-round ratios, all in real (non-padding) tokens trained on per second: the
first batches of two samplers are not the same texts. The headline is ours on our path vs HF's model on
`group`.

    python benchmarks/epoch.py [--batches 64] [--rounds 3] [--size small] [--weak]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from common import default_data, machine, model_config
from torch.utils.data import DataLoader, RandomSampler
from transformers.trainer_pt_utils import LengthGroupedSampler as HFLengthGroupedSampler

from encoder.core.collate import Collator
from encoder.serving.hf import to_bert
from encoder.core.model import AttentionConfig
from encoder.tasks.classification import EncoderForSequenceClassification

RUNS = [("ours", "ours"), ("hf", "group"), ("ours", "group"), ("hf", "random"), ("ours", "random"),
        ("ours", "max_length")]


def loaders(dm, batch_size: int, max_length: int, pad_to_multiple_of: int) -> dict[str, DataLoader]:
    ds = dm.datasets["train"].with_format(columns=["input_ids", "labels"])
    dynamic, full = Collator(pad_to_multiple_of=pad_to_multiple_of), Collator(pad_to_multiple_of=max_length)
    g = torch.Generator().manual_seed(0)
    group = HFLengthGroupedSampler(batch_size, lengths=list(dm.datasets["train"]["length"]), generator=g)
    return {"ours": dm.train_dataloader(),
            "group": DataLoader(ds, batch_size=batch_size, sampler=group, collate_fn=dynamic),
            "random": DataLoader(ds, batch_size=batch_size, sampler=RandomSampler(ds, generator=g), collate_fn=dynamic),
            "max_length": DataLoader(ds, batch_size=batch_size, sampler=RandomSampler(ds, generator=g),
                                     collate_fn=full)}


def run_epoch(model, loader, hf: bool, batches: int) -> tuple[float, float]:
    """Real (non-padding) tokens trained on per second over `batches` steps (0: the epoch) of forward,
    backward and AdamW; the share of computed tokens that are real."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    real = computed = 0
    start = time.perf_counter()
    for b in itertools.islice(loader, batches or None):
        if hf:
            logits = model(input_ids=b["input_ids"], attention_mask=(~b["padding_mask"]).long()).logits
        else:
            logits = model(b["input_ids"], b["padding_mask"])
        F.cross_entropy(logits, b["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real += int((~b["padding_mask"]).sum())
        computed += b["padding_mask"].numel()
    return real / (time.perf_counter() - start), real / computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=64, help="steps per run (0: a whole epoch)")
    parser.add_argument("--weak", action="store_true", help="also the max_length row (slow)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="small")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pad-to-multiple-of", type=int, default=8)
    args = parser.parse_args()
    dm = default_data(max_length=args.max_length, batch_size=args.batch_size,
                      pad_to_multiple_of=args.pad_to_multiple_of)
    runs = RUNS if args.weak else [r for r in RUNS if r[1] != "max_length"]
    paths = loaders(dm, args.batch_size, args.max_length, args.pad_to_multiple_of)
    torch.manual_seed(0)
    heads = model_config(args.size, dm.tokenizer.get_vocab_size()).attention.num_heads
    ours = EncoderForSequenceClassification(model_config(
        args.size, dm.tokenizer.get_vocab_size(), attention=AttentionConfig(num_heads=heads, dropout=0.0))).train()
    models = {"ours": ours, "hf": to_bert(ours).train()}
    initial = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in models.items()}
    print(f"machine: {machine()}; {args.batches or 'all'} batches of {len(dm.datasets['train'])} examples, model={args.size}, "
          f"max_length={args.max_length}, batch={args.batch_size}, pad_to_multiple_of={args.pad_to_multiple_of}")
    speeds, efficiency = {run: [] for run in runs}, {}
    for r in range(args.rounds):
        for model_name, path in runs:
            models[model_name].load_state_dict(initial[model_name])  # the same start every time
            speed, efficiency[path] = run_epoch(models[model_name], paths[path], model_name == "hf", args.batches)
            speeds[(model_name, path)].append(speed)
            print(f"round {r + 1}: {model_name:4s} model, {path:10s} path {speed:7.0f} real tokens/s "
                  f"(padding efficiency {efficiency[path]:.1%})", flush=True)

    def ratio(slow, fast):  # median of per-round speed ratios: > 1 means `fast` is faster
        return statistics.median(f / s for s, f in zip(speeds[slow], speeds[fast]))

    print("\nmedian real tokens/s: " + ", ".join(f"{m} model on {p}: {statistics.median(speeds[(m, p)]):.0f}"
                                         for m, p in runs))
    print("padding efficiency: " + ", ".join(f"{p} {e:.1%}" for p, e in efficiency.items()))
    ratios = [f / s for s, f in zip(speeds[("hf", "group")], speeds[("ours", "ours")])]
    print(f"ours (model + path) vs HF model on group_by_length, the strongest peer: "
          f"{ratio(('hf', 'group'), ('ours', 'ours')):.2f}x "
          f"({len(ratios)} rounds: {min(ratios):.2f}-{max(ratios):.2f}x)")
    print(f"  data path alone (our model, ours vs transformers' group_by_length): "
          f"{ratio(('ours', 'group'), ('ours', 'ours')):.2f}x")
    print(f"  model alone (on group_by_length): {ratio(('hf', 'group'), ('ours', 'group')):.2f}x; "
          f"on random order: {ratio(('hf', 'random'), ('ours', 'random')):.2f}x")
    print(f"ours vs HF model in random order (the Trainer's default): {ratio(('hf', 'random'), ('ours', 'ours')):.2f}x")
    if args.weak:
        print(f"ours vs our model padded to max_length in random order (weaker baseline): "
              f"{ratio(('ours', 'max_length'), ('ours', 'ours')):.2f}x")


if __name__ == "__main__":
    main()
