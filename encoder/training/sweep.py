"""After `python train.py -m ...`: one table of every job's overrides and final metrics.

Each run writes `metrics.json` into its directory (train.py): its metrics, overrides, and which way
its `objective` is better (`direction`: max for accuracy, min for a loss). This Hydra callback,
registered in configs/train.yaml under hydra.callbacks, gathers them when the sweep ends and writes
`<sweep dir>/summary.json` next to printing the table, best objective first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def collect(sweep_dir: Path) -> list[dict]:
    """Every job's metrics.json, best objective first (in its direction); jobs without one last."""
    rows = []
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: int(p.parent.name)
                               if p.parent.name.isdigit() else p.parent.name):
        rows.append({"job": metrics_file.parent.name, **json.loads(metrics_file.read_text(encoding="utf-8"))})

    def rank(row: dict) -> float:
        value = row["metrics"].get("objective")
        if value is None or value != value:  # no objective (null in metrics.json)
            return float("inf")
        return value if row.get("direction") == "min" else -value

    return sorted(rows, key=rank)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows:
            return
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
        keys = [k for k in ("objective", "test/acc", "test/f1", "val/loss") if k in rows[0]["metrics"]]
        shared = [o for o in rows[0]["overrides"] if all(o in r["overrides"] for r in rows)] if len(rows) > 1 else []
        print(f"\nsweep summary ({len(rows)} jobs, best first; {sweep_dir / 'summary.json'}):")
        if shared:
            print(f"every job: {' '.join(shared)}")
        print("job  " + "  ".join(f"{k:>9s}" for k in keys) + "  overrides")
        for r in rows:
            values = "  ".join(f"{_number(r['metrics'].get(k)):9.4f}" for k in keys)
            print(f"{r['job']:>3s}  {values}  {' '.join(o for o in r['overrides'] if o not in shared)}")


def _number(value) -> float:
    return float("nan") if value is None else value
