"""The benchmarks behind the README's figures still run and still print their headline ratio: each script is
run as a user runs it, on the real default data, with the fewest rounds and steps (the figures themselves
are not checked here: timings on a shared CI machine mean nothing)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # (machine.py: what the scripts print first)

RATIO = r"(\d+\.\d+)x"
RUNS = {  # the script's cheapest full run, and the line its README row quotes
    "epoch": (["--batches", "2", "--rounds", "1"],
              rf"ours \(model \+ path\) vs HF model on group_by_length, the strongest peer: {RATIO}"),
    "inference": (["--rounds", "1", "--texts", "64"], rf"ours / hf sorted \(the strongest peer\): {RATIO}"),
    "profile_step": (["--steps", "1"], rf"step time with plain AdamW: \d+ ms, fused: \d+ ms \({RATIO}\)"),
    "data_prep": ([], r"full setup, warm cache: +(\d+) examples/s"),
    "startup": (["--rounds", "1"], r"--help +median +(\d+\.\d+) s"),
    "mlm": (["--batches", "1", "--pairs", "1", "--ratios", "0.15", "--batch-size", "8", "--modern",
             "--document-attention"], rf"\): ours {RATIO}"),
    "corpus": (["--sizes", "1", "--runs", "1x2"], r"prepared at +([\d.]+) s"),
    # (its naive layer went unrun for weeks, broken by a new argument, while this test left the script out)
    "train_step": (["--sizes", "small", "--pairs", "1"], rf"small mixed .* ours/hf={RATIO}"),
    "contrastive": (["--steps", "7", "--rounds", "1", "--texts", "64"],
                    rf"training \(pairs/s, batch 64, length-grouped\): ours [\d.]+ pairs/s, sentence-transformers "
                    rf"[\d.]+: {RATIO}"),
}


@pytest.mark.parametrize("script", RUNS)
def test_each_benchmark_runs_and_prints_its_headline(script, rt_files):
    args, headline = RUNS[script]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # every speed names the machine it was measured on: the CPU, the instruction sets int8 depends on, versions
    from machine import cpu

    model, sets = cpu()
    assert f"machine: {model} (" in done.stdout and f"; {', '.join(sets) or 'no AVX2'}), torch " in done.stdout
    found = re.search(headline, done.stdout)
    assert found, done.stdout[-3000:]
    # the headline is what the measurements it prints give (not a constant, not another pair's ratio), within
    # the rounding of the printed numbers
    low, high = FROM_MEASUREMENTS[script](done.stdout)
    assert low <= float(found.group(1)) <= high, (low, high, done.stdout[-3000:])


def number(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def around(value: float, rel: float) -> tuple[float, float]:
    return value * (1 - rel), value * (1 + rel)


def per_second(count: float, seconds: float) -> tuple[float, float]:
    """count / seconds, where seconds was printed to 2 decimals."""
    return count / (seconds + 0.005), count / max(seconds - 0.005, 1e-9)


FROM_MEASUREMENTS = {  # script -> the interval its headline must lie in, from its other lines
    # one round: the median of per-round ratios is the ratio of the speeds printed (rounded to whole numbers)
    "epoch": lambda out: around(number(r"ours model on ours: (\d+)", out) / number(r"hf model on group: (\d+)", out),
                                0.02),
    "inference": lambda out: around(number(r"ours +median [\d.]+ s +\((\d+) texts/s\)", out)
                                    / number(r"hf sorted +median [\d.]+ s +\((\d+) texts/s\)", out), 0.02),
    # five rounds: the median of the per-round ratios is near, not equal to, the ratio of the medians
    "profile_step": lambda out: around(number(r"plain AdamW: (\d+) ms", out) / number(r"fused: (\d+) ms", out), 0.25),
    "data_prep": lambda out: per_second(12808, number(r"full setup, warm cache: +\d+ examples/s \(([\d.]+) s\)", out)),
    # --help is answered before torch is imported: faster than importing torch alone (its peer), measured alike
    "startup": lambda out: (0.0, number(r"import torch alone +median +([\d.]+) s", out)),
    # one round: the ratio of the two speeds printed (whole tokens/s)
    "mlm": lambda out: around(number(r"ours +(\d+) tokens/s", out) / number(r"BertForMaskedLM +(\d+) tokens/s", out),
                              0.01),
    # ready to train after the datamodule's own preparation (the "prepared in" its log says) and before the 20
    # steps are done (printed to one decimal)
    "corpus": lambda out: (number(r"\(setup +([\d.]+) s\)", out) - 0.05, number(r"20 steps done at +([\d.]+) s", out)),
    # one round: the ratio of the two speeds printed (whole tokens/s)
    "train_step": lambda out: around(number(r"small mixed .*tokens/s ours=(\d+)", out)
                                     / number(r"small mixed .*tokens/s ours=\d+ hf=(\d+)", out), 0.01),
    # one round: the ratio of the two training speeds printed (one decimal)
    "contrastive": lambda out: around(number(r"length-grouped\): ours ([\d.]+) pairs/s", out)
                                      / number(r"length-grouped\): ours [\d.]+ pairs/s, sentence-transformers ([\d.]+)",
                                               out), 0.02),
}


def test_mlm_time_trains_each_preset_for_its_minutes_and_says_which_reaches_the_loss_first(tmp_path, rt_files):
    """benchmarks/mlm_time.py on a budget: a capped run per preset, the validation losses read back from each run's
    TensorBoard events, and the headline about them; nothing recorded without --record."""
    results = ROOT / "benchmarks" / "results" / "mlm_time.jsonl"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mlm_time.py"), "--minutes", "0.25", "--out", str(tmp_path),
                           "--val-every", "3", "--overrides", "data=rotten_tomatoes_corpus", "data.max_train_samples=400",
                           "data.max_eval_samples=40", "data.batch_size=8", "model.num_layers=1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for model in ("small", "modern_small"):
        assert re.search(rf"^{model}: \d+ validations; last at [\d.]+ min, step \d+: val/loss \d+\.\d+$", done.stdout,
                         re.M), done.stdout
    assert re.search(r"^modern_small (reached small's final val/loss \d+\.\d+ at [\d.]+ min, small at [\d.]+ min: "
                     r"\d+\.\d+x as fast|did not reach small's final val/loss \d+\.\d+ in 0.25 minutes)$", done.stdout,
                     re.M), done.stdout
    assert (results.read_bytes() if results.exists() else None) == before


def test_mlm_time_interpolates_when_a_loss_is_reached():
    from mlm_time import reached

    points = [(60.0, 10, 8.0), (120.0, 20, 6.0), (180.0, 30, 5.0)]
    assert reached(points, 7.0) == 90.0 and reached(points, 8.5) == 60.0 and reached(points, 5.0) == 180.0
    assert reached(points, 4.9) is None
