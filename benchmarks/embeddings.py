"""Retrieval quality of sentence embedders as this project states quality: the mean and standard deviation over
seeds of each run's best-validation checkpoint on held-out queries (data=bible_quotes: six modern words of a verse
-> the King James verse, among the 3.2k test verses), and on a transfer set no run trains on (data=wordnet_senses:
a WordNet usage example -> the definition of its sense), beside BM25 and all-MiniLM-L6-v2 zero-shot.

    python benchmarks/embeddings.py baselines                 # BM25 (bm25s) and all-MiniLM-L6-v2 zero-shot
    python benchmarks/embeddings.py run minilm --seeds 42 1 2 # python train.py per seed; results appended
    python benchmarks/embeddings.py peer --seeds 42           # the peer: SentenceTransformerTrainer, same settings
    python benchmarks/embeddings.py widths minilm minilm_matryoshka --dim 96  # their runs cut to 96 dimensions
    python benchmarks/embeddings.py run minilm_mined          # first mines a hard negative per training pair
    python benchmarks/embeddings.py run minilm_l2_taught      # a 2-layer student taught by minilm's first run
    python benchmarks/embeddings.py table                     # mean ± sd of everything recorded

Every number is NDCG@10 (and MRR@10, recall@10) from encoder/core/retrieval.py: the trained runs and all-MiniLM-L6-v2
through `python train.py ... train=false` (the same code as any evaluation), BM25 through the same `retrieval_set`
and `retrieval_metrics` on the same test rows. Runs go to outputs/embeddings/, one line per run to
benchmarks/results/embeddings.jsonl (paths relative to the repository).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine
from quality import spread  # mean ± sd in points, as the accuracy table prints it

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "embeddings.jsonl"
IN_DOMAIN, TRANSFER = "bible_quotes", "wordnet_senses"  # configs/data/
COLUMNS = {"bible_quotes": ("quote", "verse"), "wordnet_senses": ("example", "definition")}
RECIPES = {  # train.py overrides
    "minilm": ["experiment=minilm_bible_quotes"],  # all-MiniLM-L6-v2 fine-tuned, one epoch
    # the same, with batches drawn at random as sentence-transformers draws them (not grouped by length)
    "minilm_unsorted": ["experiment=minilm_bible_quotes", "data.group_by_length=false"],
    "small": ["task=contrastive", f"data={IN_DOMAIN}", "trainer.max_epochs=10", "optim.lr=1e-3"],  # from scratch
    # the loss also at 96 and 192 of the 384 dimensions (sentence-transformers' MatryoshkaLoss)
    "minilm_matryoshka": ["experiment=minilm_bible_quotes", "task.loss.matryoshka_dims=[96,192,384]"],
    # one hard negative per training pair, mined by all-MiniLM-L6-v2 zero-shot (`mined`); validation and test are
    # data=bible_quotes' own
    "minilm_mined": ["experiment=minilm_bible_quotes", "data.source=null", "data.data_files.train=outputs/mined/"
                     "bible_quotes_train.csv", *(f"data.data_files.{s}=${{paths.cache_dir}}/bible_quotes/{s}.csv"
                                                 for s in ("validation", "test")), "data.negative_columns=[negative_1]"],
    # all-MiniLM-L6-v2's lower 2 layers, taught by the fine-tuned 6-layer model (recipe minilm, its first recorded
    # run; `teacher()`): in-batch negatives and the teacher's ranking of each anchor's candidates (KL, alpha 0.5);
    # more epochs and a higher rate than the 6-layer model's one epoch at 2e-5, as the classification student needs
    "minilm_l2_taught": ["experiment=minilm_bible_quotes", "model=minilm_l3", "model.num_layers=2",
                         "model.init_layers=[0,1]", "trainer.max_epochs=3", "optim.lr=1e-4", "distill.teacher=TEACHER"],
    "minilm_l2": ["experiment=minilm_bible_quotes", "model=minilm_l3", "model.num_layers=2", "model.init_layers=[0,1]",
                  "trainer.max_epochs=3", "optim.lr=1e-4"],  # the same student without its teacher
}
MINED = ROOT / "outputs" / "mined" / "bible_quotes_train.csv"
SHOWN = ("ndcg@10", "mrr@10", "recall@10")


def train_py(*overrides: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, "callbacks.progress_bar.refresh_rate=0"],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    out = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    return json.loads((Path(out) / "metrics.json").read_text())["metrics"]


def evaluate(checkpoint: str, data: str, out: Path, *extra: str) -> dict:
    """{metric: value} of a checkpoint or embedder folder on a data config's test split (`train=false`)."""
    if not (out / "metrics.json").exists():
        train_py("task=contrastive", f"data={data}", "train=false", f"ckpt_path={checkpoint}", f"hydra.run.dir={out}",
                 *extra)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return {k.removeprefix("test/"): v for k, v in metrics.items() if k.removeprefix("test/") in SHOWN}


def write(record: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps({**record, "machine": machine(), "date": time.strftime("%Y-%m-%d")}) + "\n")
    print(f"{record['recipe']} seed {record['seed']}: in domain {record['in_domain']}, transfer "
          f"{record['transfer']}" + (f", {record['wall_s'] / 60:.1f} min" if record.get("wall_s") else ""), flush=True)


def mined() -> None:
    """outputs/mined/bible_quotes_train.csv: data=bible_quotes' training pairs with a hard negative each (once)."""
    if MINED.exists():
        return
    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import SOURCES

    MINED.parent.mkdir(parents=True, exist_ok=True)
    # from rank 10 down to 1000 (not the default 50): with ranks 10-50 only 13,565 of the 24,808 pairs kept a
    # negative, zero-shot MiniLM ranking many positives below 50; the margin 0.05 below the positive as by default
    subprocess.run([sys.executable, "-m", "encoder.training.mine", "all-MiniLM-L6-v2", SOURCES[IN_DOMAIN]()["train"],
                    str(MINED), "--anchor-column", "quote", "--positive-column", "verse", "--range", "10", "1000"],
                   cwd=ROOT, check=True)


def teacher() -> str:
    """The best checkpoint of the first recorded run of recipe minilm (the fine-tuned 6-layer model)."""
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    first = next((r for r in records if r["recipe"] == "minilm"), None)
    if first is None:
        raise SystemExit("no run of recipe minilm recorded: python benchmarks/embeddings.py run minilm first")
    return str(next((ROOT / first["run_dir"] / "checkpoints").glob("best-*.ckpt")).relative_to(ROOT))


def run(name: str, seeds: list[int]) -> None:
    if name == "minilm_mined":
        mined()
    overrides = [o.replace("TEACHER", teacher()) if o == "distill.teacher=TEACHER" else o for o in RECIPES[name]]
    for seed in seeds:
        out = ROOT / "outputs" / "embeddings" / name / f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        metrics = train_py(*overrides, f"seed={seed}", f"hydra.run.dir={out}")
        wall = time.perf_counter() - start
        best = next((out / "checkpoints").glob("best-*.ckpt"))
        write({"recipe": name, "seed": seed, "overrides": overrides, "wall_s": round(wall, 1),
               "in_domain": {k: metrics[f"test/{k}"] for k in SHOWN},
               "transfer": evaluate(str(best), TRANSFER, out / f"transfer-{TRANSFER}"),
               "run_dir": str(out.relative_to(ROOT))})


def widths(recipes: list[str], dim: int) -> None:
    """Each recorded run of `recipes` (its best checkpoint), scored on its first `dim` dimensions only
    (task.truncate_dim), in domain and on the transfer set: recorded as recipe '<recipe>@<dim>d'."""
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    for (recipe, seed), record in {(r["recipe"], r["seed"]): r for r in records if r["recipe"] in recipes}.items():
        run_dir = ROOT / record["run_dir"]
        best = str(next((run_dir / "checkpoints").glob("best-*.ckpt")))
        cut = f"task.truncate_dim={dim}"
        write({"recipe": f"{recipe}@{dim}d", "seed": seed, "overrides": [*record.get("overrides", []), cut],
               "in_domain": evaluate(best, IN_DOMAIN, run_dir / f"{IN_DOMAIN}-{dim}d", cut),
               "transfer": evaluate(best, TRANSFER, run_dir / f"{TRANSFER}-{dim}d", cut),
               "run_dir": record["run_dir"]})


def peer(seeds: list[int]) -> None:
    """all-MiniLM-L6-v2 fine-tuned by sentence-transformers' trainer with MultipleNegativesRankingLoss, as
    experiment=minilm_bible_quotes fine-tunes it (one epoch, batch 64 without duplicates, lr 2e-5, warmup 0.1, weight
    decay 0.01, max length 96), then scored by the same `train=false` as ours."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    sys.path.insert(0, str(ROOT))
    from encoder.training.data.sources import SOURCES
    from encoder.training.pretrained import all_minilm_l6_v2

    with open(SOURCES[IN_DOMAIN]()["train"], encoding="utf-8") as f:
        pairs = Dataset.from_list([{"anchor": r["quote"], "positive": r["verse"]} for r in csv.DictReader(f)])
    for seed in seeds:
        out = ROOT / "outputs" / "embeddings" / "sentence_transformers" / f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        model = SentenceTransformer(str(all_minilm_l6_v2()), device="cpu")
        model.max_seq_length = 96
        args = SentenceTransformerTrainingArguments(
            output_dir=str(out / "trainer"), per_device_train_batch_size=64, num_train_epochs=1, learning_rate=2e-5,
            warmup_ratio=0.1, weight_decay=0.01, batch_sampler="no_duplicates", save_strategy="no", report_to="none",
            use_cpu=True, seed=seed, disable_tqdm=True)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs,
                                   loss=MultipleNegativesRankingLoss(model)).train()
        wall = time.perf_counter() - start
        model.save(str(out / "model"))
        write({"recipe": "sentence_transformers", "seed": seed, "wall_s": round(wall, 1),
               "in_domain": evaluate(str(out / "model"), IN_DOMAIN, out / IN_DOMAIN),
               "transfer": evaluate(str(out / "model"), TRANSFER, out / TRANSFER),
               "run_dir": str(out.relative_to(ROOT))})


def bm25(data: str) -> dict:
    """BM25 (bm25s, its defaults: k1 1.5, b 0.75, Lucene's scoring; English stopwords, no stemming) over the
    test split's distinct documents, each distinct query scored against all of them."""
    import bm25s
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from encoder.core.retrieval import retrieval_metrics, retrieval_set
    from encoder.training.data.sources import SOURCES

    with open(SOURCES[data]()["test"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    query, document = COLUMNS[data]
    queries, documents, relevant = retrieval_set([r[query] for r in rows], [r[document] for r in rows])
    index = bm25s.BM25()
    index.index(bm25s.tokenize([rows[d][document] for d in documents], stopwords="en", show_progress=False),
                show_progress=False)
    tokens = bm25s.tokenize([rows[q][query] for q in queries], stopwords="en", return_ids=False, show_progress=False)
    scores = torch.from_numpy(np.stack([index.get_scores(t) for t in tokens]))
    return {k: v for k, v in retrieval_metrics(scores, relevant).items() if k in SHOWN}


def baselines() -> None:
    write({"recipe": "bm25", "seed": None, "in_domain": bm25(IN_DOMAIN), "transfer": bm25(TRANSFER)})
    out = ROOT / "outputs" / "embeddings" / "minilm_zero_shot"
    write({"recipe": "minilm_zero_shot", "seed": None,
           "in_domain": evaluate("all-MiniLM-L6-v2", IN_DOMAIN, out / IN_DOMAIN),
           "transfer": evaluate("all-MiniLM-L6-v2", TRANSFER, out / TRANSFER)})


def table() -> None:
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    latest = {(r["recipe"], r["seed"]): r for r in records}  # a seed run again replaces its earlier line
    print(f"{'recipe':18s} {'seeds':>5s} {'NDCG@10 held-out':>18s} {'MRR@10':>14s} {'NDCG@10 transfer':>18s} "
          f"{'wall min':>9s}")
    for name in dict.fromkeys(r["recipe"] for r in records):
        rs = [r for (recipe, _), r in latest.items() if recipe == name]
        walls = [r["wall_s"] / 60 for r in rs if r.get("wall_s")]
        print(f"{name:18s} {len(rs):>5d} {spread([r['in_domain']['ndcg@10'] for r in rs]):>18s} "
              f"{spread([r['in_domain']['mrr@10'] for r in rs]):>14s} "
              f"{spread([r['transfer']['ndcg@10'] for r in rs]):>18s} "
              f"{f'{statistics.mean(walls):.1f}' if walls else '-':>9s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "widths", "peer", "baselines", "table"])
    parser.add_argument("recipe", nargs="*", help=f"one or more of {sorted(RECIPES)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--dim", type=int, default=96, help="widths: the dimensions kept")
    args = parser.parse_args()
    if args.command in ("run", "widths") and not args.recipe:
        parser.error(f"{args.command} needs a recipe")
    if any(recipe not in RECIPES for recipe in args.recipe):
        parser.error(f"recipes: {sorted(RECIPES)}")
    if args.command == "run":
        for recipe in args.recipe:
            run(recipe, args.seeds)
    elif args.command == "widths":
        widths(args.recipe, args.dim)
    elif args.command == "peer":
        peer(args.seeds)
    elif args.command == "baselines":
        baselines()
    else:
        table()


if __name__ == "__main__":
    main()
