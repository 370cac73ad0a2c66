"""The GPU check, one script for a lent GPU machine (under 5 minutes on an H100):

  1. train_step at `base` in bf16 autocast: ours vs Hugging Face BERT (SDPA), mixed-length and
     unpadded batches, alternating, median ratio; MFU against the card's measured bf16 matmul peak.
  2. attention runs on a fused kernel: the same step with the math kernel disabled
     (`torch.nn.attention.sdpa_kernel`) still runs.
  3. the same with `torch.compile` (ours).
  4. `python train.py trainer=gpu` (the default run on the GPU), timed.

    python benchmarks/gpu.py [--pairs 5] [--skip-train]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import (alternate, default_data, flops_per_token, full_batches, machine, median_ratio, model_config,
                    random_batches)
from encoder.serving.hf import to_bert
from encoder.tasks.classification import EncoderForSequenceClassification


def step_fn(model, batches, hf: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def run():
        for b in batches:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                if hf:
                    logits = model(input_ids=b["input_ids"], attention_mask=(~b["padding_mask"]).long()).logits
                else:
                    logits = model(b["input_ids"], b["padding_mask"])
            F.cross_entropy(logits.float(), b["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    return run


def bf16_peak(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 20 * 2 * n**3 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine")
    print(f"machine: {machine()}; device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    dm = default_data()
    vocab = dm.tokenizer.get_vocab_size()
    peak = bf16_peak()
    print(f"bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s")
    cuda = lambda bs: [{k: v.cuda() for k, v in b.items()} for b in bs]  # noqa: E731
    sets = {"mixed": cuda(random_batches(dm, 32, 8)), "no-pad": cuda(full_batches(32, 128, 8, vocab))}
    torch.manual_seed(0)
    ours = EncoderForSequenceClassification(model_config("base", vocab)).cuda().train()
    hf = to_bert(ours).cuda().train()
    summary = []
    for name, batches in sets.items():
        real = sum(int((~b["padding_mask"]).sum()) for b in batches)
        context = sum(b["padding_mask"].shape[1] for b in batches) / len(batches)
        times = alternate({"ours": step_fn(ours, batches, False), "hf": step_fn(hf, batches, True)}, args.pairs)
        fpt = flops_per_token(ours.cfg, context)
        t_ours, t_hf = statistics.median(times["ours"]), statistics.median(times["hf"])
        line = (f"base bf16 {name:7s} tokens/s ours={real / t_ours:,.0f} hf={real / t_hf:,.0f}  "
                f"MFU ours={fpt * real / t_ours / peak:.1%} hf={fpt * real / t_hf / peak:.1%}  "
                f"ours/hf={median_ratio(times, 'hf', 'ours'):.2f}x")
        print(line, flush=True)
        summary.append(line)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        step_fn(ours, sets["mixed"], False)()
        step_fn(ours, sets["no-pad"], False)()
    summary.append("fused attention: a training step runs with the math SDPA kernel disabled (mixed and no-pad)")
    print(summary[-1], flush=True)
    compiled = EncoderForSequenceClassification(model_config("base", vocab)).cuda().train()
    compiled.load_state_dict(ours.state_dict())
    compiled.compile(dynamic=True)
    for name, batches in sets.items():
        times = alternate({"eager": step_fn(ours, batches, False), "compiled": step_fn(compiled, batches, False)},
                          args.pairs, warmup=2)
        summary.append(f"torch.compile {name}: compiled/eager speed {median_ratio(times, 'eager', 'compiled'):.2f}x")
        print(summary[-1], flush=True)
    if not args.skip_train:
        start = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "trainer=gpu"], cwd=Path(__file__).resolve().parents[1],
                       check=True, stdout=subprocess.DEVNULL)
        summary.append(f"python train.py trainer=gpu: {time.perf_counter() - start:.0f} s wall")
        print(summary[-1])
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
