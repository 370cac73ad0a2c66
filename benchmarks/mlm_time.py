"""MLM validation loss against wall-clock time, classic `small` against `modern_small` (the same parameter count):
which preset reaches a loss first. Each preset is one `python train.py task=mlm data=... model=<preset>` run capped
by `trainer.max_time`, one after the other, alone on the machine (a run beside another skews both clocks), with
`optim.warmup_steps` then a constant rate (a schedule over max_epochs would still be warming up when time runs out).

    python benchmarks/mlm_time.py --minutes 12                       # the offline Rotten Tomatoes corpus
    python benchmarks/mlm_time.py --minutes 12 --overrides data=local_files data.path=text \
        data.data_files.train=corpus.txt
    python benchmarks/mlm_time.py --minutes 12 --models small --overrides data=rotten_tomatoes_corpus \
        model.positions=rotary                                      # an ablation: one option changed on small

Each run validates every `--val-every` training steps; the points are (seconds since the run's first logged step,
val/loss) read from its TensorBoard events. The headline: how soon the second preset reaches the loss the first
ends at (interpolated between validations), against the first's time. With --record, one line per run goes to
benchmarks/results/mlm_time.jsonl (its points, the run folder relative to the repository) and the curves to
benchmarks/results/mlm_time.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mlm_time.jsonl"
PLOT = ROOT / "benchmarks" / "results" / "mlm_time.png"


def losses(run: Path) -> list[tuple[float, int, float]]:
    """(seconds from the first logged training loss, step, val/loss) of each validation of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    start = events.Scalars("train/loss")[0].wall_time
    return [(round(e.wall_time - start, 1), e.step, round(e.value, 4)) for e in events.Scalars("val/loss")]


def reached(points: list, loss: float) -> float | None:
    """The time at which a run's validation loss first comes down to `loss`, interpolated; None if it never does."""
    for (t0, _, l0), (t1, _, l1) in zip([(0.0, 0, float("inf"))] + points, points):
        if l1 <= loss:
            return t1 if l0 == float("inf") else t0 + (t1 - t0) * (l0 - loss) / (l0 - l1)
    return None


def headline(first: dict, second: dict, minutes: float) -> None:
    """When `second` comes down to the loss `first` ends at, against `first`'s time."""
    target = first["points"][-1]
    when = reached(second["points"], target[2])
    if when is None:
        print(f"{second['model']} did not reach {first['model']}'s final val/loss {target[2]:.3f} in {minutes:g} "
              f"minutes", flush=True)
    else:
        print(f"{second['model']} reached {first['model']}'s final val/loss {target[2]:.3f} at {when / 60:.1f} min, "
              f"{first['model']} at {target[0] / 60:.1f} min: {target[0] / when:.2f}x as fast", flush=True)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        ax.plot([p[0] / 60 for p in row["points"]], [p[2] for p in row["points"]], marker="o", label=row["model"])
    ax.set_xlabel("minutes of training (2-core CPU)")
    ax.set_ylabel("MLM validation loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12, help="training time of each run (trainer.max_time)")
    parser.add_argument("--val-every", type=int, default=100, help="training steps between validations")
    parser.add_argument("--models", nargs="+", default=["small", "modern_small"])
    parser.add_argument("--overrides", nargs="+", default=["data=rotten_tomatoes_corpus"],
                        help="train.py overrides for both runs (the data)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps, then a constant learning rate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "mlm_time", help="where the runs go")
    parser.add_argument("--record", action="store_true", help="append to results/mlm_time.jsonl and draw the plot")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.minutes:g} minutes of MLM per model, one model at a time", flush=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    seconds = round(args.minutes * 60)
    max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"  # DD:HH:MM:SS
    rows = []
    for model in args.models:
        run = args.out.resolve() / f"{model}_{stamp}"
        # a time cap leaves no step count to schedule by: warm up over --warmup steps, then hold the rate (WSD's
        # stable phase), the same for both
        overrides = ["task=mlm", *args.overrides, f"model={model}", f"seed={args.seed}", "trainer.max_epochs=1000",
                     f"optim.warmup_steps={args.warmup}", "optim.schedule=constant",
                     f"trainer.max_time={max_time}", f"trainer.val_check_interval={args.val_every}",
                     "trainer.check_val_every_n_epoch=null", "~callbacks.tensorboard_visuals",
                     "~callbacks.early_stopping", f"hydra.run.dir={run}"]
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides,
                               "callbacks.progress_bar.refresh_rate=0"], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
        points = losses(run)
        where = str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else run.name
        rows.append({"model": model, "minutes": args.minutes, "overrides": overrides[:-1], "points": points,
                     "run": where, "machine": machine(), "date": stamp[:10]})
        print(f"{model}: {len(points)} validations; last at {points[-1][0] / 60:.1f} min, step {points[-1][1]}: "
              f"val/loss {points[-1][2]:.3f}", flush=True)
        print("  curve (min: val/loss): " + ", ".join(f"{t / 60:.1f}: {loss:.3f}" for t, _, loss in points), flush=True)
    if len(rows) > 1:  # (one model, an ablation: its curve is the result)
        headline(rows[0], rows[-1], args.minutes)
    if args.record:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        plot(rows)


if __name__ == "__main__":
    main()
