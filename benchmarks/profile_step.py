"""Where a CPU training step spends its time (torch.profiler), what dropout costs, and what the fused AdamW
kernel (our default on CPU and CUDA) saves over the per-tensor loop.

    python benchmarks/profile_step.py [--size small] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from common import alternate, default_data, machine, median_ratio, model_config, random_batches
from encoder.core.model import AttentionConfig
from encoder.tasks.classification import EncoderForSequenceClassification


def steps(model, batches, fused: bool = False):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused)
    for b in batches:
        F.cross_entropy(model(b["input_ids"], b["padding_mask"]), b["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    dm = default_data()
    batches = random_batches(dm, 32, args.steps)
    vocab = dm.tokenizer.get_vocab_size()
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(model_config(args.size, vocab)).train()
    steps(model, batches[:1])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps(model, batches)
    print(f"machine: {machine()}; model={args.size}, {args.steps} steps of batch 32 (mixed lengths)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    for op in ("aten::bernoulli_", "aten::addmm", "aten::mm", "aten::_scaled_dot_product_flash_attention_for_cpu",
               "aten::native_layer_norm", "aten::gelu", "aten::index_select", "aten::index_copy"):
        share = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key == op) / total
        print(f"{op:55s} {share:6.1%} of self CPU time")
    # dropout's cost: the same steps with every dropout off, alternating
    no_dropout = EncoderForSequenceClassification(model_config(args.size, vocab, dropout=0.0, classifier_dropout=0.0,
                                                attention=AttentionConfig(num_heads=model.cfg.attention.num_heads,
                                                                          dropout=0.0))).train()
    no_dropout.load_state_dict(model.state_dict())
    times = alternate({"dropout 0.1": lambda: steps(model, batches), "no dropout": lambda: steps(no_dropout, batches)},
                      3, warmup=0)
    with_d, without = statistics.median(times["dropout 0.1"]), statistics.median(times["no dropout"])
    print(f"\nstep time with dropout 0.1: {with_d / args.steps * 1e3:.0f} ms, without: "
          f"{without / args.steps * 1e3:.0f} ms (dropout costs {with_d / without - 1:.0%})")
    # the optimizer: plain AdamW (a loop over the parameters) vs the fused kernel, alternating
    times = alternate({"plain": lambda: steps(model, batches), "fused": lambda: steps(model, batches, fused=True)},
                      5, warmup=0)
    plain, fused = statistics.median(times["plain"]), statistics.median(times["fused"])
    print(f"step time with plain AdamW: {plain / args.steps * 1e3:.0f} ms, fused: {fused / args.steps * 1e3:.0f} ms "
          f"({median_ratio(times, 'plain', 'fused'):.2f}x)")

if __name__ == "__main__":
    main()
