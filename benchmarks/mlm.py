"""MLM training-step throughput: ours vs transformers' BertForMaskedLM + DataCollatorForLanguageModeling, the
same architecture, weights, rows, masking ratio and batch size. Also model FLOPs utilisation.

    python benchmarks/mlm.py [--size small] [--batch-size 32] [--ratios 0.15 0.3] [--pairs 5] [--record]
    python benchmarks/mlm.py --ratios 0.15 --document-attention   # + ours with data.document_attention=true
    python benchmarks/mlm.py --ratios 0.15 --modern               # + ours with model=modern_small's blocks
    python benchmarks/mlm.py --ratios 0.15 --modern --document-attention --length 512 --batch-size 8

The rows are our packed rows of the offline Rotten Tomatoes corpus (task=mlm's default: documents joined by
[SEP] into rows of exactly --length tokens (128), as `run_mlm`'s `group_texts` makes them), the same rows for both. One
step = collate (masking) + forward + loss + backward + AdamW step, in train mode. Ours: our Collator and
`task=mlm`'s step (the vocabulary projection only at masked positions); theirs: DataCollatorForLanguageModeling
(80/10/10 as ours) and BertForMaskedLM (SDPA attention, the projection at every position). The contenders
alternate and the ratio is the median over rounds. With --document-attention a third contender is ours with
attention kept within each text of a row (data.document_attention=true: a block mask through
nn.MultiheadAttention, positions from each text's start), on the same rows: what that costs. With --modern a
contender is ours with configs/model/modern_small.yaml's blocks (rotary attention through
scaled_dot_product_attention, GeGLU, pre-norm, no biases; small's parameter count), its own random weights: the
tokens/s of the two presets in one run. With both, modern_small keeps each text to itself two ways on the same
rows: `RotaryAttention.varlen` (the default: nested tensors of each text's tokens, no mask) and the dense
[batch * heads, seq, seq] mask (`unpad=false`, the path an ONNX export takes). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
from datetime import datetime
from pathlib import Path

import torch
import yaml

from common import alternate, flops_per_token, machine, median_ratio, model_config, peak_flops_fp32, spread
from encoder import tasks
from encoder.core.collate import Collator
from encoder.serving.hf import bert_config, bert_state_dict
from encoder.core.tokenizer import SPECIAL_TOKENS
from encoder.training.data.datamodule import TextDataModule

RESULTS = Path(__file__).resolve().parent / "results" / "mlm.jsonl"


def rows(max_length: int, cache: str) -> tuple[list[dict], object]:
    dm = TextDataModule(task="mlm", source="rotten_tomatoes_corpus", label_column=None, max_length=max_length,
                        packing=True, mlm_probability=0.15, cache_dir=cache,
                        tokenizer={"kind": "wordpiece", "vocab_size": 8192, "min_frequency": 2, "lowercase": True})
    dm.setup()
    train = dm.datasets["train"]
    full = [{"input_ids": ids} for ids in train["input_ids"] if len(ids) == max_length]
    return full, dm.tokenizer


def modern(cfg):
    """`cfg` with configs/model/modern_small.yaml's choices (its own file: the preset measured is the one shipped)."""
    preset = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "model" / "modern_small.yaml").read_text())
    preset.pop("defaults")
    attention = dataclasses.replace(cfg.attention, **preset.pop("attention", {}))
    return dataclasses.replace(cfg, **preset, attention=attention)


def ours_step(model, examples: list[list[dict]], collator: Collator):
    task, optimizer = tasks.get("mlm"), torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def run():
        for chunk in examples:
            task.step(model, collator(chunk)).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return run


def hf_step(model, examples: list[list[dict]], collator):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def run():
        for chunk in examples:
            batch = collator(chunk)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "base"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128, help="tokens per packed row")
    parser.add_argument("--batches", type=int, default=4, help="steps per timed round")
    parser.add_argument("--pairs", type=int, default=5, help="timed rounds")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.15, 0.3], help="masking ratios")
    parser.add_argument("--document-attention", action="store_true",
                        help="also time ours with attention kept within each text (data.document_attention=true)")
    parser.add_argument("--modern", action="store_true", help="also time ours with model=modern_small's blocks")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.relative_to(RESULTS.parents[2])}")
    args = parser.parse_args()
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as cache:
        examples, tok = rows(args.length, cache)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                     cls_token="[CLS]", mask_token="[MASK]")
    batches = [examples[i * args.batch_size:(i + 1) * args.batch_size] for i in range(args.batches)]
    cfg = model_config(args.size, tok.get_vocab_size(), pad_token_id=tok.token_to_id("[PAD]"))
    torch.manual_seed(0)
    ours = tasks.get("mlm").build_model(cfg).train()
    theirs = BertForMaskedLM(bert_config(cfg)).train()
    missing, unexpected = theirs.load_state_dict(bert_state_dict(ours.state_dict(), cfg, "mlm"), strict=False)
    tied = ("position_ids", "decoder.weight", "decoder.bias")  # the decoder is the embedding matrix and cls bias
    assert not [m for m in missing if not m.endswith(tied)] and not unexpected, (missing, unexpected)
    if args.modern:
        if args.size != "small":
            parser.error("--modern is model=modern_small: small's size (drop --size or --modern)")
        modern_cfg = modern(cfg)
        torch.manual_seed(0)
        ours_modern = tasks.get("mlm").build_model(modern_cfg).train()
    peak = peak_flops_fp32()
    tokens = args.batch_size * args.batches * args.length
    print(f"machine: {machine()}; {args.size} ({sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M parameters), "
          f"{args.batches} steps of {args.batch_size} x {args.length} packed tokens per round, {args.pairs} rounds")
    for ratio in args.ratios:
        specials = [tok.token_to_id(t) for t in SPECIAL_TOKENS if t != "[UNK]"]
        collator = Collator(pad_token_id=tok.token_to_id("[PAD]"), mlm_probability=ratio, vocab_size=tok.get_vocab_size(),
                            mask_token_id=tok.token_to_id("[MASK]"), special_token_ids=specials)
        hf_collator = DataCollatorForLanguageModeling(hf_tok, mlm_probability=ratio, return_tensors="pt")
        contenders = {"ours": ours_step(ours, batches, collator), "hf": hf_step(theirs, batches, hf_collator)}
        if args.document_attention:
            by_document = copy.copy(collator)
            by_document.document_separator = tok.token_to_id("[SEP]")
            contenders["ours_documents"] = ours_step(ours, batches, by_document)
        if args.modern:
            contenders["ours_modern"] = ours_step(ours_modern, batches, collator)
        if args.modern and args.document_attention:
            masked = copy.deepcopy(ours_modern)
            masked.encoder.unpad = False  # (packed rows have no padding: only attention's path differs)
            contenders["ours_modern_documents"] = ours_step(ours_modern, batches, by_document)
            contenders["ours_modern_documents_masked"] = ours_step(masked, batches, by_document)
        times = alternate(contenders, args.pairs)
        ratio_vs_hf = median_ratio(times, "hf", "ours")
        result = {"size": args.size, "mlm_probability": ratio, "batch_size": args.batch_size, "length": args.length}
        for name in contenders:
            per_s = tokens / sorted(times[name])[len(times[name]) // 2]
            result[f"{name}_tokens_per_s"] = round(per_s)
            model_cfg = modern_cfg if name.startswith("ours_modern") else cfg
            result[f"{name}_mfu"] = round(per_s * flops_per_token(model_cfg, args.length) / peak, 4)
        result["ours_vs_hf"] = round(ratio_vs_hf, 3)
        print(f"mask {ratio:.0%}: ours {result['ours_tokens_per_s']:7d} tokens/s (MFU {result['ours_mfu']:.1%}), "
              f"BertForMaskedLM {result['hf_tokens_per_s']:7d} tokens/s (MFU {result['hf_mfu']:.1%}): "
              f"ours {ratio_vs_hf:.2f}x{spread(times, 'hf', 'ours')}", flush=True)
        if args.document_attention:
            texts = sum(int((torch.tensor(e["input_ids"]) == tok.token_to_id("[SEP]")).sum()) for b in batches for e in b)
            result["ours_documents_vs_ours"] = round(median_ratio(times, "ours_documents", "ours"), 3)
            result["texts_per_row"] = round(texts / (args.batch_size * args.batches), 2)
            print(f"  ours with document attention ({result['texts_per_row']} texts a row): "
                  f"{result['ours_documents_tokens_per_s']:7d} tokens/s, ours without it is "
                  f"{result['ours_documents_vs_ours']:.2f}x as fast", flush=True)
        if args.modern:
            result["ours_modern_vs_ours"] = round(median_ratio(times, "ours", "ours_modern"), 3)
            print(f"  ours with modern_small's blocks: {result['ours_modern_tokens_per_s']:7d} tokens/s (MFU "
                  f"{result['ours_modern_mfu']:.1%}), {result['ours_modern_vs_ours']:.2f}x classic small"
                  f"{spread(times, 'ours', 'ours_modern')}", flush=True)
        if args.modern and args.document_attention:
            result["varlen_vs_masked"] = round(median_ratio(times, "ours_modern_documents_masked", "ours_modern_documents"), 3)
            print(f"  modern_small with document attention: nested tensors (varlen) "
                  f"{result['ours_modern_documents_tokens_per_s']:7d} tokens/s, the dense mask "
                  f"{result['ours_modern_documents_masked_tokens_per_s']:7d}: varlen {result['varlen_vs_masked']:.2f}x"
                  f"{spread(times, 'ours_modern_documents_masked', 'ours_modern_documents')}", flush=True)
        if args.record:
            with open(RESULTS, "a", encoding="utf-8") as f:
                f.write(json.dumps({**result, "machine": machine(), "date": datetime.now().strftime("%Y-%m-%d")}) + "\n")


if __name__ == "__main__":
    main()
