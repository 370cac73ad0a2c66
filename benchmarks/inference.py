"""Prediction speed on the default test split (1,331 texts), medians of alternating rounds.

    python benchmarks/inference.py [--size small] [--rounds 5] [--batch-size 32]
        ours (`encoder.load_model(...).predict`) vs Hugging Face `BertForSequenceClassification` with the same
        architecture, weights and tokenizer, given the strongest setup a competent HF user runs: the same
        length-sorted batches and `torch.inference_mode()`. The weaker setup (input order, `no_grad`), what the
        HF examples do, is an extra row, labelled as such.
    python benchmarks/inference.py --models teacher.ckpt student.ckpt [...]
        trained models (checkpoints or exports) on the same texts in the same run: texts/s and test accuracy.

Checks first that ours and HF give the same probabilities (to 1e-4).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from common import alternate, default_data, machine, median_ratio, model_config
from encoder import checkpoint, load_model
from encoder.hf import to_bert
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
    texts = list(dm.load_raw()["test"]["text"])
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
    print(f"\nours / hf sorted (the strongest peer): {median_ratio(times, 'hf sorted', 'ours'):.2f}x; "
          f"ours / hf in input order: {median_ratio(times, 'hf input order (weaker)', 'ours'):.2f}x "
          f"(medians of {args.rounds} rounds)")


def trained_models(args) -> None:
    with open(rotten_tomatoes_critics()["test"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    models = {path: load_model(path, batch_size=args.batch_size) for path in args.models}
    accuracy = {path: sum(p["label"] == y for p, y in zip(m.predict(texts), gold)) / len(texts)
                for path, m in models.items()}
    times = alternate({path: (lambda m=m: m.predict(texts)) for path, m in models.items()}, args.rounds)
    print(f"machine: {machine()}; {len(texts)} test texts, batch={args.batch_size}, medians of {args.rounds} rounds")
    for path, t in times.items():
        params = sum(p.numel() for p in models[path].model.parameters())
        print(f"{len(texts) / statistics.median(t):8.0f} texts/s  test acc {accuracy[path]:.4f}  {params:>11,d} params  "
              f"{path}")
    if len(times) == 2:
        first, second = times
        print(f"\n{second} predicts {median_ratio(times, first, second):.2f}x as fast as {first}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="+", help="trained checkpoints or exports to time against each other")
    args = parser.parse_args()
    trained_models(args) if args.models else against_hf(args)


if __name__ == "__main__":
    main()
