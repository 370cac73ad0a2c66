"""Accuracy of training recipes as this project states accuracy: the mean and standard deviation over
seeds of the test accuracy of each run's best-validation checkpoint, next to the majority class and
TF-IDF (1-2 grams, sublinear tf) + logistic regression on the same split.

    python benchmarks/quality.py baselines                        # majority class, TF-IDF + logistic regression
    python benchmarks/quality.py run small --seeds 42 1 2         # python train.py per seed; results appended
    python benchmarks/quality.py run small_distilled --teacher outputs/.../best-....ckpt
    python benchmarks/quality.py run small --set model.dropout=0.2 --name small_dropout0.2   # a variant
    python benchmarks/quality.py table                            # mean ± sd of everything recorded

Each run is `python train.py <recipe> seed=S` in its own directory under outputs/quality/; its metrics
(test accuracy of the best-validation checkpoint, best validation accuracy), parameters and wall time go
to benchmarks/results/quality.jsonl, one line per run, so the table can be rebuilt and extended.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality.jsonl"
RECIPES = {  # train.py overrides; {teacher} is --teacher
    "small": [],
    "small_before": ["model.pooling=cls", "model.attention.dropout=0.1"],  # the default until 0.2
    "tiny": ["model=tiny"],
    "minilm_teacher": ["experiment=minilm_rotten_tomatoes"],
    "small_distilled": ["distill.teacher={teacher}"],
    "small_distilled_corpus": ["distill.teacher={teacher}", "distill.extra_text=rotten_tomatoes_corpus"],
    "tiny_distilled": ["model=tiny", "distill.teacher={teacher}"],
    "tiny_distilled_corpus": ["model=tiny", "distill.teacher={teacher}", "distill.extra_text=rotten_tomatoes_corpus"],
}


def run(name: str, overrides: list[str], seeds: list[int], teacher: str | None) -> None:
    overrides = [o.format(teacher=teacher) for o in overrides]
    if any("None" in o for o in overrides):
        raise SystemExit(f"recipe {name} needs --teacher PATH")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        out = ROOT / "outputs" / "quality" / name / f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"seed={seed}",
                               f"hydra.run.dir={out}", "callbacks.progress_bar.refresh_rate=0"],
                              cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{name} seed {seed} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        record = {"recipe": name, "seed": seed, "overrides": overrides, "test_acc": metrics["test/acc"],
                  "best_val_acc": metrics.get("best_val/acc"), "wall_s": round(wall, 1), "params": parameters(out),
                  "run_dir": str(out.relative_to(ROOT)), "machine": machine(), "date": time.strftime("%Y-%m-%d")}
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{name} seed {seed}: test acc {record['test_acc']:.4f} (best val {record['best_val_acc']:.4f}), "
              f"{wall / 60:.1f} min", flush=True)


def parameters(run_dir: Path) -> int:
    import torch

    ckpt = torch.load(next((run_dir / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=True)
    return sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("model."))


def machine() -> str:
    import torch

    return f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}"


def baselines() -> None:
    """Majority class and TF-IDF + logistic regression (C chosen on validation) on the default split."""
    import csv

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import rotten_tomatoes_critics

    splits = {}
    for split, path in rotten_tomatoes_critics().items():
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        splits[split] = ([r["text"] for r in rows], [r["label"] for r in rows])
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits["train"], splits["validation"], splits["test"]
    majority = max(set(train_y), key=train_y.count)
    fits = []  # (validation accuracy, model, vectorizer, settings) over min_df and C, chosen on validation
    for min_df in (1, 2):
        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df)
        x_train, x_val = tfidf.fit_transform(train_x), tfidf.transform(val_x)
        for c in (0.5, 1, 2, 4, 8, 16, 32):
            model = LogisticRegression(C=c, max_iter=3000).fit(x_train, train_y)
            fits.append((model.score(x_val, val_y), model, tfidf, f"min_df={min_df} C={c}"))
    _, best, tfidf, settings = max(fits, key=lambda f: f[0])
    x_train, x_val, x_test = tfidf.transform(train_x), tfidf.transform(val_x), tfidf.transform(test_x)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        for name, acc, val in (("majority", sum(y == majority for y in test_y) / len(test_y),
                                sum(y == majority for y in val_y) / len(val_y)),
                               ("tfidf_logreg", best.score(x_test, test_y), best.score(x_val, val_y))):
            f.write(json.dumps({"recipe": name, "seed": None, "test_acc": acc, "best_val_acc": val,
                                "params": x_train.shape[1] + 1 if name != "majority" else 0, "wall_s": None,
                                "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                                "overrides": [settings] if name != "majority" else []}) + "\n")
            print(f"{name}: test acc {acc:.4f} (validation {val:.4f})")


def table() -> None:
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    names = list(dict.fromkeys(r["recipe"] for r in records))
    print(f"{'recipe':28s} {'params':>10s} {'seeds':>5s} {'test acc (mean ± sd)':>22s} {'best val acc':>13s} "
          f"{'wall min':>9s}")
    for name in names:
        rs = [r for r in records if r["recipe"] == name]
        acc = [100 * r["test_acc"] for r in rs]
        spread = f"± {statistics.stdev(acc):4.2f}" if len(acc) > 1 else "(1 run)"
        val = statistics.mean(100 * r["best_val_acc"] for r in rs if r["best_val_acc"] is not None)
        walls = [r["wall_s"] / 60 for r in rs if r["wall_s"]]
        wall = f"{statistics.mean(walls):9.1f}" if walls else f"{'-':>9s}"
        print(f"{name:28s} {rs[0]['params']:>10,d} {len(rs):>5d} {statistics.mean(acc):>14.2f} {spread:7s}"
              f"{val:>12.2f} {wall}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "baselines", "table"])
    parser.add_argument("recipe", nargs="?", choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--teacher", help="the teacher checkpoint or export of the *_distilled recipes")
    parser.add_argument("--set", nargs="*", default=[], help="more train.py overrides (a variant of the recipe)")
    parser.add_argument("--name", help="the name it is recorded under (default: the recipe's)")
    args = parser.parse_args()
    if args.command == "run":
        if not args.recipe:
            parser.error("run needs a recipe")
        run(args.name or args.recipe, RECIPES[args.recipe] + args.set, args.seeds, args.teacher)
    elif args.command == "baselines":
        baselines()
    else:
        table()


if __name__ == "__main__":
    main()
