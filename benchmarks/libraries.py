"""What we wrote by hand, measured against the library that does the same job (issue 33, item 6).

    python benchmarks/libraries.py [--stream-batches 2000] [--resume-at 1950] [--repeat 8]

1. The learning-rate schedule: ours (one LambdaLR over `warmup_then_decay`) against torch's own schedulers
   chained (SequentialLR of LinearLR warm-up and CosineAnnealingLR / LinearLR decay): the same rates? And after a
   resume that extends the run (trainer.max_epochs raised), does the schedule follow the new length?
2. Resuming a stream: ours reads the batches already trained on again (exact, costs time), `datasets`' own
   IterableDataset.state_dict (via torchdata's StatefulDataLoader) jumps there: how long each takes, and whether
   the batches after the resume are those of a run that never stopped (on our stream: shuffled in a buffer, then
   packed into rows).
3. Resuming mid-epoch from the length-grouped sampler: our ResumableLoader against torchdata's
   StatefulDataLoader: the batches after a resume, and the time per epoch.

torchdata is not a dependency of encoder: parts 2 and 3 need `pip install torchdata` (0.11), and say so without it.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.training.module import warmup_then_decay  # noqa: E402


def schedules(total: int = 1000, warmup: int = 100, extended: int = 1500) -> None:
    """Part 1: the rates of both, step by step, and what each does when a resume at step 600 extends the run."""
    def ours(length: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
            warmup_then_decay, warmup=warmup, total=length, schedule="cosine", min_ratio=0.0))

    def theirs(length: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=length - warmup, eta_min=0.0)
        return opt, torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[warmup])

    def rates(make, length: int, steps: int, resume_at: int | None = None, new_length: int | None = None) -> list:
        opt, sched = make(length)
        out = []
        for step in range(steps):
            if step == resume_at:  # a resume: the schedule rebuilt for the new length, its state loaded
                state = sched.state_dict()
                opt, sched = make(new_length)
                sched.load_state_dict(state)
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    a, b = rates(ours, total, total), rates(theirs, total, total)
    print(f"1. schedule, {total} steps (warm-up {warmup}, cosine): largest difference between ours and torch's "
          f"SequentialLR(LinearLR, CosineAnnealingLR): {max(abs(x - y) for x, y in zip(a, b)):.2e}")
    a = rates(ours, total, extended, resume_at=600, new_length=extended)
    b = rates(theirs, total, extended, resume_at=600, new_length=extended)
    print(f"   resumed at step 600 with the run extended to {extended} steps: rate at step 999 ours {a[999]:.3f}, "
          f"torch's {b[999]:.3f}; at step {extended - 1} ours {a[-1]:.4f}, torch's {b[-1]:.4f} "
          f"(torch's restarts its cosine: {'yes' if max(b[1000:]) > 0.5 else 'no'})")


def digest(batch: dict) -> str:
    return hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest()[:12]


def stream_resume(batches: int, resume_at: int, repeat: int, folder: str) -> None:
    """Part 2: a packed, shuffled stream of the offline corpus's texts, resumed at `resume_at` of `batches`."""
    from datasets import load_dataset

    from encoder.core.collate import Collator
    from encoder.training.data import streaming
    from encoder.training.data.encoding import encoder_for
    from encoder.training.config import DataConfig
    from encoder.training.data.sources import rotten_tomatoes_corpus
    from encoder.tasks import get
    from encoder.core.tokenizer import train_tokenizer

    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        print("2. stream resume: skipped (pip install torchdata)")
        return
    with open(rotten_tomatoes_corpus()["train"], encoding="utf-8") as f:
        corpus = [" ".join(row["text"].split()) for row in csv.DictReader(f)]
    path = Path(folder) / "corpus.txt"  # the corpus `repeat` times, one text a line: a pass long enough to resume in
    path.write_text("".join(f"{t}\n" for _ in range(repeat) for t in corpus), encoding="utf-8")
    cfg = DataConfig(path="text", data_files={"train": str(path)}, packing=True, streaming=True, max_length=64,
                     label_column=None, mlm_probability=0.15)
    texts = load_dataset("text", data_files=str(path), split="train", streaming=True)
    tok = train_tokenizer(lambda: (r["text"] for r in texts.take(2000)), vocab_size=2000)
    encode = encoder_for(cfg, get("mlm"), tok, None)
    collate = Collator(pad_token_id=0)

    def stream():
        return streaming.rows(texts, encode, "text", seed=0, shuffle_buffer=1000).select_columns(["input_ids"])

    straight = [digest(b) for _, b in zip(range(batches), streaming.StreamLoader(stream(), 0, 1, batch_size=16,
                                                                                  collate_fn=collate,
                                                                                  processed=lambda: 0))]
    # ours: read again what was trained on, train from the next batch
    start = time.perf_counter()
    loader = streaming.StreamLoader(stream(), 0, 1, batch_size=16, collate_fn=collate, processed=lambda: resume_at)
    loader.load_state_dict({"batches": resume_at})
    ours = [digest(b) for _, b in zip(range(batches - resume_at), loader)]
    ours_s = time.perf_counter() - start
    # datasets' state_dict through torchdata's StatefulDataLoader
    first = StatefulDataLoader(stream(), batch_size=16, collate_fn=collate)
    for i, _ in enumerate(first, 1):
        if i == resume_at:
            state = first.state_dict()
            break
    start = time.perf_counter()
    theirs_loader = StatefulDataLoader(stream(), batch_size=16, collate_fn=collate)
    theirs_loader.load_state_dict(state)
    theirs = [digest(b) for _, b in zip(range(batches - resume_at), theirs_loader)]
    theirs_s = time.perf_counter() - start
    expected = straight[resume_at:]
    print(f"2. stream resume at batch {resume_at}: ours {ours_s:.2f} s to the last batch, "
          f"{sum(a == b for a, b in zip(ours, expected))}/{len(expected)} batches as a run that never stopped; "
          f"datasets' state_dict {theirs_s:.2f} s, {sum(a == b for a, b in zip(theirs, expected))}/{len(expected)}")


def loader_resume(resume_at: int = 100) -> None:
    """Part 3: the default data's training split, length-grouped batches of 32, resumed mid-epoch."""
    from encoder.training.data.sampler import LengthGroupedSampler, ResumableLoader
    from common import default_data

    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        print("3. loader resume: skipped (pip install torchdata)")
        return
    dm = default_data()
    ds = dm.datasets["train"].with_format(columns=["input_ids", "labels"])
    lengths = ds.with_format("arrow")["length"].to_numpy()

    def ours(processed: int):
        sampler = LengthGroupedSampler(lengths, 32, seed=0)
        sampler.set_epoch(1)
        return ResumableLoader(ds, batch_size=32, sampler=sampler, collate_fn=dm.collator, processed=lambda: processed)

    start = time.perf_counter()
    straight = [digest(b) for b in ours(0)]
    ours_epoch = time.perf_counter() - start
    resumed = ours(resume_at)
    resumed.load_state_dict(resumed.state_dict())
    after = [digest(b) for b in resumed]

    def theirs():
        sampler = LengthGroupedSampler(lengths, 32, seed=0)
        sampler.set_epoch(1)
        return StatefulDataLoader(ds, batch_size=32, sampler=sampler, collate_fn=dm.collator)

    first = theirs()
    for i, _ in enumerate(first, 1):
        if i == resume_at:
            state = first.state_dict()
            break
    start = time.perf_counter()
    second = theirs()
    second.load_state_dict(state)
    theirs_after = [digest(b) for b in second]
    theirs_rest = time.perf_counter() - start
    start = time.perf_counter()
    for _ in theirs():
        pass
    theirs_epoch = time.perf_counter() - start
    expected = straight[resume_at:]
    same, theirs_same = (sum(a == b for a, b in zip(got, expected)) for got in (after, theirs_after))
    print(f"3. loader resume at batch {resume_at} of {len(straight)}: ours {same}/{len(expected)} batches as an epoch "
          f"that never stopped, an epoch in {ours_epoch:.2f} s; StatefulDataLoader "
          f"{theirs_same}/{len(expected)} (rest in {theirs_rest:.2f} s), "
          f"an epoch in {theirs_epoch:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream-batches", type=int, default=2000)
    parser.add_argument("--resume-at", type=int, default=1950)
    parser.add_argument("--repeat", type=int, default=8, help="the offline corpus this many times: one pass")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    schedules()
    with tempfile.TemporaryDirectory() as folder:
        stream_resume(args.stream_batches, args.resume_at, args.repeat, folder)
    loader_resume()


if __name__ == "__main__":
    main()
