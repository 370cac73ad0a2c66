"""Sentence-embedding speed against sentence-transformers, the peer, on the same model (the offline
all-MiniLM-L6-v2), data (data=bible_quotes' training pairs), batch size and max length, in one run:

- training: examples (pairs) per second of `python train.py experiment=minilm_bible_quotes` (Lightning, task=contrastive,
  mnrl, no-duplicates batches) against SentenceTransformerTrainer with MultipleNegativesRankingLoss and its
  no-duplicates batch sampler, both at lr 2e-5 with warmup, fp32, over the same steps after a few to warm up;
  ours twice, with its length-grouped batches (the default) and with data.group_by_length=false (like for like);
- embedding: texts per second of our Predictor.embed against SentenceTransformer.encode at batch 64 on 2,048 verses
  (both sort texts by length; the vectors are checked equal first).

    python benchmarks/contrastive.py [--steps 30] [--rounds 3]
    python benchmarks/contrastive.py --models teacher.ckpt student.ckpt int8:teacher_export/ int8:student_export/
        trained embedders (checkpoints or exports; `int8:EXPORT` runs an export's int8 ONNX graph, made with
        export --onnx --int8) embedding the same 2,048 verses at batch 64 in one run: texts/s, each against the first
    python benchmarks/contrastive.py --int8-peer EXPORT ST_FOLDER
        one trained embedder as int8 ONNX both ways: ours (EXPORT, made with export --onnx --int8) against
        sentence-transformers' ONNX backend on its int8 graph (ST_FOLDER: the same checkpoint exported with
        --format sentence-transformers; export_dynamic_quantized_onnx_model writes its avx512_vnni graph there
        once; needs pip install 'optimum[onnxruntime]'), and each one's cosine to the fp32 vectors

The contenders alternate (ST, ours, ours unsorted, ST, ...); ratios are medians over the rounds, with their range.
Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L

from common import alternate, machine, median_ratio, spread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCH, MAX_LENGTH, WARM = 64, 96, 5


class StepClock(L.Callback):
    """The time at the end of each training step (`+callbacks.clock._target_=__main__.StepClock`)."""

    ends: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        StepClock.ends.append(time.perf_counter())


def per_second(ends: list[float], steps: int) -> float:
    """Pairs per second over the steps after the first WARM (data loading, forward, backward, optimizer)."""
    return (steps - WARM) * BATCH / (ends[steps - 1] - ends[WARM - 1])


def ours(steps: int, grouped: bool) -> float:
    import train
    from hydra.core.hydra_config import HydraConfig

    from encoder.training.launch import compose

    StepClock.ends = []
    with tempfile.TemporaryDirectory() as out:
        cfg = compose(str(ROOT / "configs"), "train", [
            "experiment=minilm_bible_quotes", f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "test=false",
            f"data.max_train_samples={steps * BATCH}", f"data.group_by_length={str(grouped).lower()}",
            "+callbacks.clock._target_=__main__.StepClock", "~callbacks.progress_bar", "~callbacks.model_summary",
            "~callbacks.model_checkpoint", "~callbacks.early_stopping", "trainer.enable_progress_bar=false", "logger=csv",
            f"paths.output_dir={out}"])
        HydraConfig.instance().set_config(cfg)
        train.train(cfg)
    return per_second(StepClock.ends, steps)


def theirs(steps: int, pairs: list[dict]) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from encoder.training.pretrained import all_minilm_l6_v2

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            StepClock.ends.append(time.perf_counter())

    StepClock.ends = []
    model = SentenceTransformer(str(all_minilm_l6_v2()), device="cpu")
    model.max_seq_length = MAX_LENGTH
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=2e-5, warmup_ratio=0.1,
            weight_decay=0.01, batch_sampler="no_duplicates", save_strategy="no", report_to="none", logging_steps=10**6,
            use_cpu=True, dataloader_drop_last=True, seed=42, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs[: steps * BATCH]),
                                             loss=MultipleNegativesRankingLoss(model), callbacks=[Clock()])
        trainer.train()
    return per_second(StepClock.ends, steps)


def embedding(texts: list[str], rounds: int) -> list[tuple[float, float]]:
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from encoder.serving import build
    from encoder.training.pretrained import all_minilm_l6_v2, as_saved

    st = SentenceTransformer(str(all_minilm_l6_v2()), device="cpu")
    st.max_seq_length = MAX_LENGTH
    saved = as_saved("all-MiniLM-L6-v2", "contrastive", MAX_LENGTH)
    task, model = build(saved, "all-MiniLM-L6-v2")
    predictor = task.predictor_class(model, Tokenizer.from_str(saved.tokenizer_json), MAX_LENGTH, BATCH)
    gap = (predictor.embed(texts) - st.encode(texts, convert_to_tensor=True)).abs().max().item()
    print(f"embedding: the same vectors (max |difference| {gap:.1e} over {len(texts)} texts)", flush=True)
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        st.encode(texts, batch_size=BATCH, convert_to_tensor=True)
        middle = time.perf_counter()
        with torch.inference_mode():
            predictor.embed(texts)
        end = time.perf_counter()
        results.append((len(texts) / (middle - start), len(texts) / (end - middle)))
    return results


def embedders(paths: list[str], texts: list[str], rounds: int) -> None:
    from encoder import load_model

    models = {path: load_model(path.removeprefix("int8:"), batch_size=BATCH,
                               **({"backend": "onnx", "int8": True} if path.startswith("int8:") else {}))
              for path in paths}
    times = alternate({path: (lambda m=m: m.embed(texts)) for path, m in models.items()}, rounds)
    print(f"{len(texts)} verses, batch {BATCH}, medians of {rounds} rounds (alternating)")
    for path, t in times.items():
        print(f"{len(texts) / statistics.median(t):8.1f} texts/s  {path}")
    first, *others = times
    for other in others:
        print(f"{other} embeds {median_ratio(times, first, other):.2f}x as fast as {first}{spread(times, first, other)}")


def int8_peer(export: str, folder: str, texts: list[str], rounds: int) -> None:
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    from encoder import load_model

    graph = Path(folder) / "onnx" / "model_qint8_avx512_vnni.onnx"
    if not graph.exists():
        export_dynamic_quantized_onnx_model(SentenceTransformer(folder, backend="onnx", device="cpu"), "avx512_vnni",
                                            folder)
    theirs = SentenceTransformer(folder, backend="onnx", device="cpu",
                                 model_kwargs={"file_name": str(graph.relative_to(folder))})
    theirs.max_seq_length = MAX_LENGTH
    ours = load_model(export, batch_size=BATCH, backend="onnx", int8=True)
    fp32 = F.normalize(load_model(export, batch_size=BATCH).embed(texts), dim=-1)
    for name, vectors in (("ours", ours.embed(texts)), ("sentence-transformers", torch.from_numpy(theirs.encode(texts)))):
        cosine = (F.normalize(vectors.float(), dim=-1) * fp32).sum(-1)
        print(f"{name} int8: cosine to the fp32 vectors mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    times = alternate({"sentence-transformers": lambda: theirs.encode(texts, batch_size=BATCH),
                       "ours": lambda: ours.embed(texts)}, rounds)
    print(f"{len(texts)} verses, batch {BATCH}, max length {MAX_LENGTH}, medians of {rounds} rounds (alternating)")
    for name, t in times.items():
        print(f"{len(texts) / statistics.median(t):8.1f} texts/s  {name} int8 ONNX")
    print(f"ours embeds {median_ratio(times, 'sentence-transformers', 'ours'):.2f}x as fast as sentence-transformers' "
          f"ONNX int8 backend{spread(times, 'sentence-transformers', 'ours')}")


def ratio_line(name: str, rates: list[tuple[float, float]], unit: str) -> str:
    """Medians of (sentence-transformers, ours) rates per round, and ours over theirs with its range."""
    times = {"theirs": [1 / t for t, _ in rates], "ours": [1 / o for _, o in rates]}
    return (f"{name}: ours {statistics.median(o for _, o in rates):.1f} {unit}, sentence-transformers "
            f"{statistics.median(t for t, _ in rates):.1f}: {median_ratio(times, 'theirs', 'ours'):.2f}x"
            f"{spread(times, 'theirs', 'ours')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help=f"training steps per run (> {WARM}: the first warm up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=2048, help="texts to embed")
    parser.add_argument("--models", nargs="+", help="trained embedders to time against each other (only that)")
    parser.add_argument("--int8-peer", nargs=2, metavar=("EXPORT", "ST_FOLDER"),
                        help="ours against sentence-transformers' ONNX int8 backend on one embedder (only that)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from encoder.training.data.sources import bible_quotes

    with open(bible_quotes()["train"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    print(f"machine: {machine()}", flush=True)
    texts = [r["verse"] for r in rows[: args.texts]]
    if args.models:
        return embedders(args.models, texts, args.rounds)
    if args.int8_peer:
        return int8_peer(*args.int8_peer, texts, args.rounds)
    print(ratio_line("embedding (texts/s, batch 64)", embedding(texts, args.rounds), "texts/s"), flush=True)
    pairs = [{"anchor": r["quote"], "positive": r["verse"]} for r in rows]
    grouped, plain = [], []
    for _ in range(args.rounds):
        st = theirs(args.steps, pairs)
        grouped.append((st, ours(args.steps, grouped=True)))
        plain.append((st, ours(args.steps, grouped=False)))
        print(f"round: sentence-transformers {st:.1f} pairs/s, ours {grouped[-1][1]:.1f} (length-grouped), "
              f"{plain[-1][1]:.1f} (not grouped)", flush=True)
    print(ratio_line("training (pairs/s, batch 64, length-grouped)", grouped, "pairs/s"))
    print(ratio_line("training (pairs/s, batch 64, not grouped)", plain, "pairs/s"))


if __name__ == "__main__":
    main()
