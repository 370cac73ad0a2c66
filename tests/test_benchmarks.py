"""The benchmarks behind the README's figures still run and still print their headline ratio: each script is
run as a user runs it, on the real default data, with the fewest rounds and steps (the figures themselves
are not checked here: timings on a shared CI machine mean nothing). train_step.py is left out: even at one
round it takes two minutes (it measures the machine's matmul peak and times a naive layer as well)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

RATIO = r"(\d+\.\d+)x"
RUNS = {  # the script's cheapest full run, and the line its README row quotes
    "epoch": (["--batches", "2", "--rounds", "1"],
              rf"ours \(model \+ path\) vs HF model on group_by_length, the strongest peer: {RATIO}"),
    "inference": (["--rounds", "1", "--texts", "64"], rf"ours / hf sorted \(the strongest peer\): {RATIO}"),
    "profile_step": (["--steps", "1"], rf"step time with plain AdamW: \d+ ms, fused: \d+ ms \({RATIO}\)"),
    "data_prep": ([], r"full setup, warm cache: +(\d+) examples/s"),
    "startup": (["--rounds", "1"], r"--help +median +(\d+\.\d+) s"),
}


@pytest.mark.parametrize("script", RUNS)
def test_each_benchmark_runs_and_prints_its_headline(script, rt_files):
    args, headline = RUNS[script]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(headline, done.stdout)
    assert found and float(found.group(1)) > 0, done.stdout[-3000:]
