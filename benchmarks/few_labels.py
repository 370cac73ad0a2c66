"""Few labelled rows: accuracy of each method on the same draws of n labelled Rotten Tomatoes rows per class, on the
full default test split and out of domain (data=vader_polarity), and the wall time each method takes.

    python benchmarks/few_labels.py run --sizes 8 16 32 64 --draws 0 1 2        # every method on every draw
    python benchmarks/few_labels.py run --sizes 150 --methods ours tfidf         # some methods only
    python benchmarks/few_labels.py table                                        # mean ± sd per size and method

Methods (each on the same rows, drawn by `draw(n, d)`: n per class from the default train split, seeded by n and d):
- ours: `python train.py experiment=small_data` (SetFit's method on all-MiniLM-L6-v2, task.loss.name=setfit);
- minilm_finetune: the same recipe with cross-entropy end to end (a plain fine-tune of all-MiniLM-L6-v2, lr 5e-5);
- setfit: the `setfit` package (1.2) with its default settings, its body the same offline all-MiniLM-L6-v2 folder;
- tfidf: TF-IDF (1-2 grams, sublinear tf) + scikit-learn's logistic regression at its defaults (no rows to tune on);
- tiny: the few-rows recipe before this one (model=tiny from scratch, 30 epochs at lr 1e-3, early stopping on the
  10% of the rows it carves for validation);
- ours_carved: ours, choosing its checkpoint as bigger runs do (the best validation accuracy of 20 epochs, on 10% of
  the rows carved off), against the fixed schedule (all rows, the last epoch).
Wall time: from the start of a method to its test-split predictions (train.py's whole process for ours, tiny and
minilm_finetune), without the out-of-domain evaluation, which every method gets the same way (its model's
predictions on the vader texts, in this process). One line per (method, size, draw) goes to
benchmarks/results/few_labels.jsonl; runs to outputs/few_labels/. The setfit method needs the `setfit` package, in no
extra of ours: `pip install setfit` (1.2.0 was measured; it also needs `evaluate`).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine
from quality import spread  # mean ± sd in points, as the accuracy table prints it

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "few_labels.jsonl"
OUT = ROOT / "outputs" / "few_labels"
LABELS = ["rotten", "fresh"]
RECIPES = {  # train.py overrides
    "ours": ["experiment=small_data"],
    "minilm_finetune": ["experiment=small_data", "task.loss.name=cross_entropy", "optim.lr=5e-5"],
    # the recipe choosing its checkpoint as larger runs do: the best validation accuracy on 10% of the rows, carved
    "ours_carved": ["experiment=small_data", "data.val_fraction=0.1", "trainer.check_val_every_n_epoch=1",
                    "callbacks.model_checkpoint.monitor=val/acc", "callbacks.last_checkpoint.every_n_epochs=1"],
    "tiny": ["model=tiny", "trainer.max_epochs=30", "optim.lr=1e-3", "optim.warmup_ratio=0.06",
             "callbacks.early_stopping.patience=5"],
}
METHODS = ["tfidf", "ours", "setfit", "minilm_finetune", "tiny", "ours_carved"]


def splits() -> dict[str, tuple[list[str], list[str]]]:
    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import SOURCES, rotten_tomatoes_critics

    out = {}
    for split, path in [*rotten_tomatoes_critics().items(), ("ood", SOURCES["vader_polarity"]()["test"])]:
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out[split] = ([r["text"] for r in rows], [r["label"] for r in rows])
    return out


def draw(data: dict, n: int, d: int) -> Path:
    """n rows per label from the train split (seeded by n and d, the same for every method), as a csv file."""
    path = OUT / "draws" / f"n{n}-d{d}.csv"
    if not path.exists():
        texts, labels = data["train"]
        rng = random.Random(f"{n}-{d}")
        rows = [row for label in LABELS for row in rng.sample([(t, y) for t, y in zip(texts, labels) if y == label], n)]
        rng.shuffle(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([("text", "label"), *rows])
    return path


def accuracy(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold)


def train_py(method: str, rows: Path, test: Path, d: int, ood: tuple[list[str], list[str]]) -> dict:
    out = OUT / method / f"{rows.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *RECIPES[method], "data=local_files",
                           f"data.data_files.train={rows}", f"data.data_files.test={test}", f"data.label_names={LABELS}",
                           f"seed={d}", f"hydra.run.dir={out}", "callbacks.progress_bar.refresh_rate=0"],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{method} on {rows.name} failed:\n{done.stderr[-3000:]}")
    from encoder import load_model

    predictor = load_model(next((out / "checkpoints").glob("best-*.ckpt")))
    ood_acc = accuracy([p["label"] for p in predictor.predict(ood[0])], ood[1])
    return {"test_acc": json.loads((out / "metrics.json").read_text())["metrics"]["test/acc"], "ood_acc": ood_acc,
            "wall_s": round(wall, 1), "run_dir": str(out.relative_to(ROOT))}


def setfit(rows: Path, d: int, data: dict) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from encoder.training.pretrained import all_minilm_l6_v2

    with open(rows, encoding="utf-8") as f:
        train = list(csv.DictReader(f))
    start = time.perf_counter()
    model = SetFitModel.from_pretrained(str(all_minilm_l6_v2()))
    args = TrainingArguments(output_dir=str(OUT / "setfit" / rows.stem), seed=d, report_to="none",
                             show_progress_bar=False)
    Trainer(model=model, args=args,
            train_dataset=Dataset.from_list(train)).train()
    test_acc = accuracy(list(model.predict(data["test"][0])), data["test"][1])
    wall = time.perf_counter() - start
    return {"test_acc": test_acc, "ood_acc": accuracy(list(model.predict(data["ood"][0])), data["ood"][1]),
            "wall_s": round(wall, 1)}


def tfidf(rows: Path, data: dict) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    with open(rows, encoding="utf-8") as f:
        train = list(csv.DictReader(f))
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression().fit(vectorizer.fit_transform([r["text"] for r in train]), [r["label"] for r in train])
    test_acc = model.score(vectorizer.transform(data["test"][0]), data["test"][1])
    wall = time.perf_counter() - start
    return {"test_acc": test_acc, "ood_acc": model.score(vectorizer.transform(data["ood"][0]), data["ood"][1]),
            "wall_s": round(wall, 1)}


def run(sizes: list[int], draws: list[int], methods: list[str]) -> None:
    data = splits()
    from encoder.training.data.sources import rotten_tomatoes_critics

    test = Path(rotten_tomatoes_critics()["test"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for d in draws:
        for n in sizes:
            rows = draw(data, n, d)
            for method in methods:
                if method == "tfidf":
                    record = tfidf(rows, data)
                elif method == "setfit":
                    record = setfit(rows, d, data)
                else:
                    record = train_py(method, rows, test, d, data["ood"])
                record = {"method": method, "per_class": n, "draw": d, **record, "machine": machine(),
                          "date": time.strftime("%Y-%m-%d")}
                with open(RESULTS, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"{method} n={n} draw {d}: test {record['test_acc']:.4f}, out of domain {record['ood_acc']:.4f},"
                      f" {record['wall_s']} s", flush=True)


def table() -> None:
    """Mean ± sd over the draws per size and method, as a markdown table (benchmarks/README.md holds it)."""
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    latest = {(r["method"], r["per_class"], r["draw"]): r for r in records}  # a draw run again replaces its line
    print("| rows per label | method | draws | test accuracy | out of domain | wall s (median) |\n|---|---|---|---|---|---|")
    for n in sorted({n for _, n, _ in latest}):
        for method in METHODS:
            rs = [r for (m, size, _), r in latest.items() if m == method and size == n]
            if rs:
                print(f"| {n} | {method} | {len(rs)} | {spread([r['test_acc'] for r in rs])} | "
                      f"{spread([r['ood_acc'] for r in rs])} | {statistics.median(r['wall_s'] for r in rs):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "table"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64], help="labelled rows per class")
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    args = parser.parse_args()
    run(args.sizes, args.draws, args.methods) if args.command == "run" else table()


if __name__ == "__main__":
    main()
