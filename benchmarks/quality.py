"""Accuracy of training recipes as this project states accuracy: the mean and standard deviation over
seeds of the test accuracy of each run's best-validation checkpoint, next to the majority class and
TF-IDF (1-2 grams, sublinear tf) + logistic regression on the same split.

    python benchmarks/quality.py baselines                        # majority class, TF-IDF + logistic regression
    python benchmarks/quality.py run small --seeds 42 1 2         # python train.py per seed; results appended
    python benchmarks/quality.py run small_distilled --teacher outputs/.../best-....ckpt
    python benchmarks/quality.py run small_from_embedding_distilled --init-from outputs/.../best-cosine....ckpt --teacher ...
    python benchmarks/quality.py run modern_small_pretrained --init-from outputs/pretrain_english/.../last.ckpt
    python benchmarks/quality.py run small --set model.dropout=0.2 --name small_dropout0.2   # a variant
    python benchmarks/quality.py ood                              # out-of-domain accuracy of runs that lack it
    python benchmarks/quality.py table                            # mean ± sd of everything recorded

Each run is `python train.py <recipe> seed=S` in its own directory under outputs/quality/; its metrics
(test accuracy of the best-validation checkpoint, best validation accuracy, and its accuracy out of domain:
`train=false` on data=vader_polarity, tweets, product reviews and editorials no recipe trains on), parameters
and wall time go to benchmarks/results/quality.jsonl, one line per run, so the table can be rebuilt and
extended. A seed recorded again replaces its earlier line in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality.jsonl"
L2_STUDENT = ["experiment=minilm_rotten_tomatoes", "model=minilm_l3", "model.num_layers=2", "model.init_layers=[0,1]",
              "distill.teacher={teacher}"]  # the teacher's layers 0-1, taught (experiment=minilm_l2_student: 16 epochs)
RECIPES = {  # train.py overrides; {teacher} is --teacher
    "small": [],
    "small_before": ["model.pooling=cls", "model.attention.dropout=0.1"],  # the default until 0.2
    "tiny": ["model=tiny"],
    "minilm_teacher": ["experiment=minilm_rotten_tomatoes"],
    "minilm_l3_distilled": ["experiment=minilm_rotten_tomatoes", "model=minilm_l3", "distill.teacher={teacher}"],
    "minilm_l3": ["experiment=minilm_rotten_tomatoes", "model=minilm_l3"],
    "minilm_l2_distilled": L2_STUDENT,
    # the same, taught for 8 epochs instead of the teacher's 3: distillation gains from long schedules ("Knowledge
    # distillation: a good teacher is patient and consistent", Beyer et al. 2022); its validation still rose at 8
    "minilm_l2_distilled_8ep": L2_STUDENT + ["trainer.max_epochs=8"],
    # and for up to 16 (early stopping, patience 3, ends it when validation stops rising)
    "minilm_l2_distilled_16ep": L2_STUDENT + ["trainer.max_epochs=16"],
    # the 3-layer student with half of each layer's feed-forward units (those of largest weights): narrower
    "minilm_l3_ffn768_distilled": ["experiment=minilm_rotten_tomatoes", "model=minilm_l3", "model.ffn_dim=768",
                                   "model.prune_ffn=true", "distill.teacher={teacher}"],
    "small_distilled": ["distill.teacher={teacher}"],
    # the default model taught for up to 16 epochs (early stopping, patience 3) instead of 4
    "small_distilled_16ep": ["distill.teacher={teacher}", "trainer.max_epochs=16"],
    "small_distilled_corpus": ["distill.teacher={teacher}", "distill.extra_text=rotten_tomatoes_corpus"],
    "tiny_distilled": ["model=tiny", "distill.teacher={teacher}"],
    "tiny_distilled_corpus": ["model=tiny", "distill.teacher={teacher}", "distill.extra_text=rotten_tomatoes_corpus"],
    "tiny_distilled_augment": ["model=tiny", "distill.teacher={teacher}", "distill.augment=4"],
    "small_distilled_augment": ["distill.teacher={teacher}", "distill.augment=4"],
    "small_cls_pooler": ["model.pooling=cls", "model.pooler=true"],  # exportable with --format hf (issue 20)
    # from a `task=embedding` checkpoint (--init-from): the teacher's sentence embeddings learnt on unlabelled text
    "small_from_embedding": ["model.init_from={init}"],
    "small_from_embedding_distilled": ["model.init_from={init}", "distill.teacher={teacher}"],
    "tiny_from_embedding_distilled": ["model=tiny", "model.init_from={init}", "distill.teacher={teacher}"],
    # modern_small (rotary, GeGLU, pre-norm) from scratch, and from a checkpoint of experiment=pretrain_english
    # (--init-from: MLM on data=english_corpus), alone or taught (issue 37)
    "modern_small": ["model=modern_small"],
    "modern_small_pretrained": ["model=modern_small", "model.init_from={init}"],
    "modern_small_pretrained_distilled": ["model=modern_small", "model.init_from={init}", "distill.teacher={teacher}"],
    "tiny_distilled_augment_corpus": ["model=tiny", "distill.teacher={teacher}", "distill.augment=4",
                                      "distill.extra_text=rotten_tomatoes_corpus"],
}


OOD_DATA = "vader_polarity"  # configs/data/vader_polarity.yaml


def run(name: str, overrides: list[str], seeds: list[int], teacher: str | None, init: str | None = None) -> None:
    # recorded relative to the repository (results files hold no machine's paths)
    teacher, init = (os.path.relpath(Path(p).resolve(), ROOT) if p else None for p in (teacher, init))
    overrides = [o.format(teacher=teacher, init=init) for o in overrides]
    if any("None" in o for o in overrides):
        raise SystemExit(f"recipe {name} needs --teacher PATH (and --init-from PATH for *_from_embedding, *_pretrained*)")
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
                  "best_val_acc": metrics.get("best_val/acc"), "ood_acc": out_of_domain(out),
                  "wall_s": round(wall, 1), "params": parameters(out),
                  "run_dir": str(out.relative_to(ROOT)), "machine": machine(), "date": time.strftime("%Y-%m-%d")}
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{name} seed {seed}: test acc {record['test_acc']:.4f} (best val {record['best_val_acc']:.4f}, "
              f"out of domain {record['ood_acc']:.4f}), {wall / 60:.1f} min", flush=True)


def out_of_domain(run_dir: Path) -> float:
    """Test accuracy of a run's best-validation checkpoint on the out-of-domain set (`train=false`)."""
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    out = run_dir / f"ood-{OOD_DATA}"
    if not (out / "metrics.json").exists():
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), "train=false", f"ckpt_path={best}",
                               f"data={OOD_DATA}", f"hydra.run.dir={out}", "callbacks.progress_bar.refresh_rate=0"],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"out-of-domain evaluation of {best} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())["metrics"]["test/acc"]


def fill_out_of_domain() -> None:
    """Evaluate out of domain every recorded run whose directory is here and that lacks the number."""
    lines = RESULTS.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line) if line.strip() else None
        if record and record.get("ood_acc") is None and record.get("run_dir") and (ROOT / record["run_dir"]).is_dir():
            record["ood_acc"] = out_of_domain(ROOT / record["run_dir"])
            lines[i] = json.dumps(record)
            print(f"{record['recipe']} seed {record['seed']}: out of domain {record['ood_acc']:.4f}", flush=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


def parameters(run_dir: Path) -> int:
    import torch

    ckpt = torch.load(next((run_dir / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=True)
    return sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("model."))


def baselines() -> None:
    """Majority class and TF-IDF + logistic regression (C chosen on validation) on the default split."""
    import csv

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import SOURCES, rotten_tomatoes_critics

    splits = {}
    for split, path in [*rotten_tomatoes_critics().items(), ("ood", SOURCES[OOD_DATA]()["test"])]:
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        splits[split] = ([r["text"] for r in rows], [r["label"] for r in rows])
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits["train"], splits["validation"], splits["test"]
    ood_x, ood_y = splits["ood"]
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
        for name, acc, val, ood in (("majority", sum(y == majority for y in test_y) / len(test_y),
                                     sum(y == majority for y in val_y) / len(val_y),
                                     sum(y == majority for y in ood_y) / len(ood_y)),
                                    ("tfidf_logreg", best.score(x_test, test_y), best.score(x_val, val_y),
                                     best.score(tfidf.transform(ood_x), ood_y))):
            f.write(json.dumps({"recipe": name, "seed": None, "test_acc": acc, "best_val_acc": val, "ood_acc": ood,
                                "params": x_train.shape[1] + 1 if name != "majority" else 0, "wall_s": None,
                                "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                                "overrides": [settings] if name != "majority" else []}) + "\n")
            print(f"{name}: test acc {acc:.4f} (validation {val:.4f}, out of domain {ood:.4f})")


def table() -> None:
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    latest = {(r["recipe"], r["seed"]): r for r in records}  # a seed run again replaces its earlier line
    names = list(dict.fromkeys(r["recipe"] for r in records))
    print(f"{'recipe':28s} {'params':>10s} {'seeds':>5s} {'test acc (mean ± sd)':>22s} {'best val acc':>13s} "
          f"{'out of domain':>22s} {'wall min':>9s}")
    for name in names:
        rs = [r for (recipe, _), r in latest.items() if recipe == name]
        val = statistics.mean(100 * r["best_val_acc"] for r in rs if r["best_val_acc"] is not None)
        walls = [r["wall_s"] / 60 for r in rs if r["wall_s"]]
        wall = f"{statistics.mean(walls):9.1f}" if walls else f"{'-':>9s}"
        print(f"{name:28s} {rs[0]['params']:>10,d} {len(rs):>5d} {spread([r['test_acc'] for r in rs]):>22s}"
              f"{val:>14.2f} {spread([r.get('ood_acc') for r in rs]):>22s} {wall}")


def spread(values: list) -> str:
    """mean ± sd in percent (or '(1 run)', or '-' when none was measured)."""
    values = [100 * v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f} " + (f"± {statistics.stdev(values):4.2f}" if len(values) > 1 else "(1 run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "baselines", "ood", "table"])
    parser.add_argument("recipe", nargs="?", choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--teacher", help="the teacher checkpoint or export of the *_distilled recipes")
    parser.add_argument("--init-from", help="the task=embedding checkpoint of the *_from_embedding recipes")
    parser.add_argument("--set", nargs="*", default=[], help="more train.py overrides (a variant of the recipe)")
    parser.add_argument("--name", help="the name it is recorded under (default: the recipe's)")
    args = parser.parse_args()
    if args.command == "run":
        if not args.recipe:
            parser.error("run needs a recipe")
        run(args.name or args.recipe, RECIPES[args.recipe] + args.set, args.seeds, args.teacher, args.init_from)
    elif args.command == "baselines":
        baselines()
    elif args.command == "ood":
        fill_out_of_domain()
    else:
        table()


if __name__ == "__main__":
    main()
