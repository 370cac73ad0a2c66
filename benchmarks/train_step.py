"""Training-step throughput: ours vs Hugging Face BERT (SDPA) with the same architecture, weights and
padded batches, and vs a naive `need_weights=True` padded layer. Also model FLOPs utilisation.

    python benchmarks/train_step.py [--sizes small base] [--pairs 5]
    python benchmarks/train_step.py --compile          # ours eager vs torch.compile
    python benchmarks/train_step.py --defaults         # the default `small` (0.2) vs the one before it

One step = forward + backward + AdamW step, in train mode (dropout on), on CPU unless --device cuda.
The contenders alternate (ours, HF, naive, ours, HF, ...) and ratios are medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from common import (NaiveLayer, alternate, default_data, flops_per_token, full_batches, machine, median_ratio, spread,
                    model_config, peak_flops_fp32, random_batches, real_tokens)
from encoder.serving.hf import to_bert
from encoder.core.model import AttentionConfig
from encoder.tasks.classification import EncoderForSequenceClassification


def step_fn(model, batches, hf: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def run():
        for b in batches:
            if hf:
                logits = model(input_ids=b["input_ids"], attention_mask=(~b["padding_mask"]).long()).logits
            else:
                logits = model(b["input_ids"], b["padding_mask"])
            F.cross_entropy(logits, b["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return run


def bench(size: str, batches: list[dict], vocab: int, pairs: int, peak: float, label: str) -> dict:
    torch.manual_seed(0)
    ours = EncoderForSequenceClassification(model_config(size, vocab)).train()
    hf = to_bert(ours).train()
    naive = EncoderForSequenceClassification(model_config(size, vocab)).train()
    naive.encoder.unpad = False
    naive.load_state_dict(ours.state_dict())
    for layer in naive.encoder.layers:
        layer.__class__ = NaiveLayer
    times = alternate({"ours": step_fn(ours, batches, False), "hf": step_fn(hf, batches, True),
                       "naive": step_fn(naive, batches, False)}, pairs)
    tokens = real_tokens(batches)
    computed = sum(b["padding_mask"].numel() for b in batches)
    context = sum(b["padding_mask"].shape[1] * b["padding_mask"].shape[0] for b in batches) / len(batches) / \
        batches[0]["padding_mask"].shape[0]
    fpt = flops_per_token(ours.cfg, context)
    result = {"size": size, "batch": label, "real": tokens / computed}
    for name in times:
        t = statistics.median(times[name])
        result[f"{name}_tok_s"] = tokens / t
        result[f"{name}_mfu"] = fpt * tokens / t / peak
    result["vs_hf"] = median_ratio(times, "hf", "ours")
    result["vs_naive"] = median_ratio(times, "naive", "ours")
    print(f"{size:5s} {label:9s} real={result['real']:.0%}  tokens/s ours={result['ours_tok_s']:.0f} "
          f"hf={result['hf_tok_s']:.0f} naive={result['naive_tok_s']:.0f}  MFU ours={result['ours_mfu']:.1%} "
          f"hf={result['hf_mfu']:.1%}  ours/hf={result['vs_hf']:.2f}x{spread(times, 'hf', 'ours')} "
          f"ours/naive={result['vs_naive']:.2f}x",
          flush=True)
    return result


def compile_check(dm, vocab: int, pairs: int) -> float:
    """Ours eager vs ours under torch.compile (model.compile=true), `small`, mixed batches."""
    batches = random_batches(dm, 32, 4)
    torch.manual_seed(0)
    eager = EncoderForSequenceClassification(model_config("small", vocab)).train()
    compiled = EncoderForSequenceClassification(model_config("small", vocab)).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(dynamic=True)
    start = time.perf_counter()
    step_fn(compiled, batches[:1], False)()
    print(f"torch.compile: first step (compilation) {time.perf_counter() - start:.0f} s", flush=True)
    times = alternate({"eager": step_fn(eager, batches, False), "compiled": step_fn(compiled, batches, False)},
                      pairs, warmup=2)
    ratio = median_ratio(times, "eager", "compiled")
    print(f"small mixed: compiled/eager speed {ratio:.2f}x (>1 = compile faster)")
    return ratio


def defaults_check(dm, vocab: int, pairs: int) -> float:
    """The default `small` of 0.2 (mean pooling, no attention dropout: the fused attention kernel runs in
    training) vs the one before it ([CLS] pooling, attention dropout 0.1), same batches, alternating."""
    batches = random_batches(dm, 32, 4)
    torch.manual_seed(0)
    before = EncoderForSequenceClassification(model_config("small", vocab, pooler=False)).train()
    now = EncoderForSequenceClassification(model_config("small", vocab, pooler=False, pooling="mean",
                                                         attention=AttentionConfig(num_heads=4, dropout=0.0))).train()
    times = alternate({"before": step_fn(before, batches, False), "now": step_fn(now, batches, False)}, pairs)
    for name, t in times.items():
        print(f"{name:6s} median {statistics.median(t):.2f} s per 4 steps of 32 mixed-length texts")
    ratio = median_ratio(times, "before", "now")
    print(f"default small, now vs before: {ratio:.2f}x the training-step speed (median of {pairs} rounds)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "base"])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="only: eager vs torch.compile for ours")
    parser.add_argument("--defaults", action="store_true", help="only: today's default small vs the one before")
    args = parser.parse_args()
    dm = default_data()
    vocab = dm.tokenizer.get_vocab_size()
    peak = peak_flops_fp32()
    print(f"machine: {machine()}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    if args.compile:
        compile_check(dm, vocab, args.pairs)
        return
    if args.defaults:
        defaults_check(dm, vocab, args.pairs)
        return
    plan = {"small": (32, 4), "base": (8, 2)}  # batch size, batches per timed round
    results = []
    for size in args.sizes:
        bs, count = plan[size]
        mixed = random_batches(dm, bs, count)
        results.append(bench(size, mixed, vocab, args.pairs, peak, "mixed"))
        results.append(bench(size, full_batches(bs, 64, count, vocab), vocab, args.pairs, peak, "no-pad"))
    print("\nsize  batch     ours/hf  ours/naive  (median of per-round time ratios; >1 = ours faster)")
    for r in results:
        print(f"{r['size']:5s} {r['batch']:9s} {r['vs_hf']:.2f}x    {r['vs_naive']:.2f}x")


if __name__ == "__main__":
    main()
