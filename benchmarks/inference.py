"""Inference over the test split: `encoder.load_model(ckpt).predict(texts)` vs Hugging Face
`BertForSequenceClassification` + its fast tokenizer, batched the usual way (input order,
`padding=True`, `torch.no_grad()`), with the same architecture, weights and tokenizer.

    python benchmarks/inference.py [--size small] [--rounds 5] [--batch-size 32]

Checks first that both give the same probabilities (to 1e-4), then alternates them.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from common import alternate, default_data, machine, median_ratio, model_config
from encoder import checkpoint, load_model
from encoder.hf import to_bert
from encoder.tasks.classification import EncoderForSequenceClassification


def save_export(model: EncoderForSequenceClassification, dm, folder: Path) -> None:
    """The model as an export folder (what `python -m encoder.export` writes)."""
    saved = checkpoint.Saved("classification", dataclasses.asdict(model.cfg), dm.tokenizer.to_str(), dm.label_names,
                             dm.cfg.max_length, model.state_dict())
    checkpoint.write_export(saved, folder)


def hf_predict(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt", return_token_type_ids=False)
            out.append(model(**enc).logits.softmax(-1))
    return torch.cat(out)


def main() -> None:
    from transformers import PreTrainedTokenizerFast

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    dm = default_data()
    texts = [t for t in dm.load_raw()["test"]["text"]]
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(model_config(args.size, dm.tokenizer.get_vocab_size(), num_labels=2)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_export(model, dm, Path(tmp))
        ours = load_model(tmp, batch_size=args.batch_size)
    hf = to_bert(model).eval()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=ours.tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    ours_probs = ours.probabilities(texts)
    hf_probs = hf_predict(hf, hf_tok, texts, args.batch_size, dm.max_length)
    diff = (ours_probs - hf_probs).abs().max().item()
    print(f"machine: {machine()}; {len(texts)} test texts, model={args.size}, batch={args.batch_size}")
    print(f"max |p_ours - p_hf| = {diff:.2e}; same labels: {bool((ours_probs.argmax(1) == hf_probs.argmax(1)).all())}")
    assert diff < 1e-4, "outputs differ"
    times = alternate({"ours": lambda: ours.predict(texts),
                       "hf": lambda: hf_predict(hf, hf_tok, texts, args.batch_size, dm.max_length)}, args.rounds)
    for name, t in times.items():
        print(f"{name:5s} median {statistics.median(t):.2f} s  ({len(texts) / statistics.median(t):.0f} texts/s)")
    print(f"\ninference speed-up ours/hf: {median_ratio(times, 'hf', 'ours'):.2f}x (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
