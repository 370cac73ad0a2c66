"""Prediction speed on the default test split (1,331 texts), medians of alternating rounds.

    python benchmarks/inference.py [--size small] [--rounds 5] [--batch-size 32]
        ours (`encoder.load_model(...).predict`) vs Hugging Face `BertForSequenceClassification` with the same
        architecture, weights and tokenizer, given the strongest setup a competent HF user runs: the same
        length-sorted batches and `torch.inference_mode()`. The weaker setup (input order, `no_grad`), what the
        HF examples do, is an extra row, labelled as such.
    python benchmarks/inference.py --models teacher.ckpt student.ckpt int8:student_export/ [...]
        trained models (checkpoints or exports; `int8:EXPORT` runs an export's int8 ONNX graph, made with
        export --onnx --int8) on the same texts in the same run: texts/s, test accuracy, each against the first.
    python benchmarks/inference.py --backends EXPORT [--hf HF_EXPORT]
        one trained model through every way we serve it (PyTorch fp32, ONNX fp32, ONNX int8: an export made
        with --onnx --int8) and, given its --format hf export, the transformers pipeline and HF batched:
        texts/s on the test split and on 2,000 long texts (>= 200 tokens), and test accuracy.

Checks first that ours and HF give the same probabilities (to 1e-4).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import statistics
import tempfile
from pathlib import Path

import torch
from common import alternate, default_data, machine, median_ratio, model_config, spread
from tokenizers import Tokenizer

from encoder import load_model

from encoder.core import checkpoint
from encoder.serving.hf import to_bert
from encoder.tasks.classification import EncoderForSequenceClassification
from encoder.training.data.sources import rotten_tomatoes_critics


def save_export(model: EncoderForSequenceClassification, dm, folder: Path) -> None:
    """The model as an export folder (what `python -m encoder.export` writes)."""
    saved = checkpoint.Saved("classification", dataclasses.asdict(model.cfg), dm.tokenizer.to_str(), dm.label_names,
                             dm.cfg.max_length, model.state_dict())
    checkpoint.write_export(saved, folder)


def hf_predict(model, tokenizer, texts: list[str], batch_size: int, max_length: int, sort: bool) -> torch.Tensor:
    """HF's way: the fast tokenizer pads each batch; `sort` groups texts of similar length (then restores
    the input order) and runs under inference_mode, as ours does."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    out = torch.empty(len(texts), model.num_labels)
    with torch.inference_mode() if sort else torch.no_grad():
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            enc = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt", return_token_type_ids=False)
            out[chunk] = model(**enc).logits.softmax(-1)
    return out


def against_hf(args) -> None:
    from transformers import PreTrainedTokenizerFast

    dm = default_data()
    texts = list(dm.raw["test"]["text"])[: args.texts or None]
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(model_config(args.size, dm.tokenizer.get_vocab_size(), num_labels=2)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_export(model, dm, Path(tmp))
        ours = load_model(tmp, batch_size=args.batch_size)
    hf = to_bert(model).eval()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=ours.tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    length = dm.cfg.max_length
    ours_probs = ours.probabilities(texts)
    hf_probs = hf_predict(hf, hf_tok, texts, args.batch_size, length, sort=True)
    diff = (ours_probs - hf_probs).abs().max().item()
    print(f"machine: {machine()}; {len(texts)} test texts, model={args.size}, batch={args.batch_size}")
    print(f"max |p_ours - p_hf| = {diff:.2e}; same labels: {bool((ours_probs.argmax(1) == hf_probs.argmax(1)).all())}")
    assert diff < 1e-4, "outputs differ"
    times = alternate({"ours": lambda: ours.predict(texts),
                       "hf sorted": lambda: hf_predict(hf, hf_tok, texts, args.batch_size, length, sort=True),
                       "hf input order (weaker)": lambda: hf_predict(hf, hf_tok, texts, args.batch_size, length,
                                                                     sort=False)}, args.rounds)
    for name, t in times.items():
        print(f"{name:24s} median {statistics.median(t):.2f} s  ({len(texts) / statistics.median(t):.0f} texts/s)")
    print(f"\nours / hf sorted (the strongest peer): {median_ratio(times, 'hf sorted', 'ours'):.2f}x"
          f"{spread(times, 'hf sorted', 'ours')}; "
          f"ours / hf in input order: {median_ratio(times, 'hf input order (weaker)', 'ours'):.2f}x "
          f"(medians of {args.rounds} rounds)")


def trained_models(args) -> None:
    with open(rotten_tomatoes_critics()["test"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    models = {path: load_model(path.removeprefix("int8:"), batch_size=args.batch_size,
                               **({"backend": "onnx", "int8": True} if path.startswith("int8:") else {}))
              for path in args.models}
    accuracy = {path: sum(p["label"] == y for p, y in zip(m.predict(texts), gold)) / len(texts)
                for path, m in models.items()}
    times = alternate({path: (lambda m=m: m.predict(texts)) for path, m in models.items()}, args.rounds)
    print(f"machine: {machine()}; {len(texts)} test texts, batch={args.batch_size}, medians of {args.rounds} rounds")
    for path, t in times.items():
        params = sum(p.numel() for p in models[path].model.parameters())  # (an ONNX graph shows none)
        print(f"{len(texts) / statistics.median(t):8.0f} texts/s  test acc {accuracy[path]:.4f}  {params:>11,d} params  "
              f"{path}")
    first, *others = times
    for other in others:
        print(f"{other} predicts {median_ratio(times, first, other):.2f}x as fast as {first}"
              f"{spread(times, first, other)}")


def long_texts(count: int, tokenizer, seed: int = 0) -> list[str]:
    """`count` texts of at least 200 tokens, each joined from random snippets of the corpus."""
    import random

    with open(rotten_tomatoes_critics()["train"], encoding="utf-8") as f:
        snippets = [r["text"] for r in csv.DictReader(f)]
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    tokenizer.no_truncation()  # a predictor's tokenizer cuts at its max_length: count every token
    rng, out = random.Random(seed), []
    while len(out) < count:
        text = ""
        while len(tokenizer.encode(text).ids) < 200:
            text += " " + rng.choice(snippets)
        out.append(text.strip())
    return out


def labels_of(predictor, batch: list[str]) -> list[str]:
    return [r["label"] for r in predictor.predict(batch)]


def backends(args) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    with open(rotten_tomatoes_critics()["test"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    ours = {"ours, PyTorch fp32": load_model(args.backends, batch_size=args.batch_size),
            "ours, ONNX fp32": load_model(args.backends, batch_size=args.batch_size, backend="onnx"),
            "ours, ONNX int8": load_model(args.backends, batch_size=args.batch_size, backend="onnx", int8=True)}
    tokenizer = ours["ours, PyTorch fp32"].tokenizer
    longer = long_texts(args.long, tokenizer)
    runs = {name: functools.partial(labels_of, p) for name, p in ours.items()}
    if args.hf:
        classify = pipeline("text-classification", model=args.hf, device="cpu")
        runs["transformers pipeline"] = lambda batch: [r["label"] for r in classify(batch, batch_size=args.batch_size,
                                                                                     truncation=True)]
        hf_model, hf_tok = AutoModelForSequenceClassification.from_pretrained(args.hf).eval(), \
            AutoTokenizer.from_pretrained(args.hf)
        names = hf_model.config.id2label
        runs["HF model + fast tokenizer, sorted batches"] = lambda batch: [
            names[int(i)] for i in hf_predict(hf_model, hf_tok, batch, args.batch_size, 96, sort=True).argmax(-1)]
    accuracy = {name: sum(p == y for p, y in zip(run(texts), gold)) / len(texts) for name, run in runs.items()}
    short = alternate({name: (lambda r=run: r(texts)) for name, run in runs.items()}, args.rounds)
    long = alternate({name: (lambda r=run: r(longer)) for name, run in runs.items()}, max(1, args.rounds // 2))
    print(f"machine: {machine()}; batch {args.batch_size}; test split {len(texts)} texts, {len(longer)} long texts; "
          f"medians of alternating rounds")
    print(f"{'':42s} {'test texts/s':>12s} {'long texts/s':>12s} {'test acc':>9s}")
    for name in runs:
        print(f"{name:42s} {len(texts) / statistics.median(short[name]):12.0f} "
              f"{len(longer) / statistics.median(long[name]):12.0f} {accuracy[name]:9.4f}")
    if args.hf:
        best = max(ours, key=lambda n: -statistics.median(short[n]))
        print(f"\nbest of ours ({best}) vs the transformers pipeline: "
              f"{median_ratio(short, 'transformers pipeline', best):.2f}x on the test split, "
              f"{median_ratio(long, 'transformers pipeline', best):.2f}x on long texts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--texts", type=int, default=0, help="against HF: the first N test texts only (0: all)")
    parser.add_argument("--models", nargs="+", help="trained checkpoints or exports to time against each other")
    parser.add_argument("--backends", help="an export made with --onnx --int8: every way we serve it")
    parser.add_argument("--long", type=int, default=2000, help="with --backends: how many long texts")
    parser.add_argument("--hf", help="with --backends: the same model exported with --format hf")
    args = parser.parse_args()
    backends(args) if args.backends else trained_models(args) if args.models else against_hf(args)


if __name__ == "__main__":
    main()
