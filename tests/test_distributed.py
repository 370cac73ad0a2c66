"""A real 2-process DDP run (gloo, CPU) through train.py + Hydra: one run directory, one set of
checkpoints, and each rank trained on its own shard of length-grouped batches."""

import json
import os
import subprocess
import sys

import lightning as L
import torch

from conftest import ROOT, TINY


class RecordBatches(L.Callback):
    """Writes the training examples (as token tuples) each rank saw to seen-rank<N>.json."""

    def __init__(self, folder: str):
        self.folder, self.seen = folder, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        for ids, pad in zip(batch["input_ids"].tolist(), batch["padding_mask"].tolist()):
            self.seen.append([i for i, p in zip(ids, pad) if not p])

    def on_train_end(self, trainer, module):
        with open(os.path.join(self.folder, f"seen-rank{trainer.global_rank}.json"), "w") as f:
            json.dump(self.seen, f)


def test_two_process_ddp_writes_one_run_and_shards_the_data(tmp_path, rt_files):
    run_dir = tmp_path / "outputs" / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    overrides = [o for o in TINY if o != "trainer=debug"] + [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    args = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}", "+callbacks.record._target_=test_distributed.RecordBatches",
            f"+callbacks.record.folder={tmp_path}"]
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["run"]  # one run directory for both ranks
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    assert out.stdout.count("best checkpoint:") == 1  # printed by rank 0 only
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    seen = [json.loads((tmp_path / f"seen-rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 8 * 16  # 8 batches of 16 each
    shared = {tuple(x) for x in seen[0]} & {tuple(x) for x in seen[1]}
    assert len(shared) <= 2, "the ranks trained on the same examples"  # (duplicate texts aside)


def test_multirun_of_ddp_jobs_gives_one_directory_per_job_not_per_rank(tmp_path, rt_files):
    # lightning-hydra-template's most reported problem: each DDP rank re-ran the whole sweep
    overrides = [o for o in TINY if o != "trainer=debug"] + [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "~callbacks.tensorboard_visuals"]
    args = [sys.executable, str(ROOT / "train.py"), "-m", *overrides, "optim.lr=1e-4,3e-4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no stray outputs/ from a rank
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # two jobs, not two per rank
    for job in jobs:
        ckpt = torch.load(tmp_path / "sweep" / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 2
    assert out.stdout.count("sweep summary (2 jobs") == 1
    assert out.stdout.count("best checkpoint:") == 2  # one line per job, from its rank 0


def test_a_two_process_contrastive_run_gathers_negatives_from_both_ranks(tmp_path, rt_files):
    """task=contrastive under DDP with every rank's candidates and the cached loss, through train.py: it trains, and
    the retrieval metrics (whose states the ranks sync) are reported once."""
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if o != "trainer=debug"] + [
        "task=contrastive", "data=local_files", *(f"data.data_files.{s}={p}" for s, p in rt_files.items()),
        "data.text_pair_column=text", "data.label_column=null", "trainer=ddp", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "task.loss.gather_across_devices=true", "task.loss.mini_batch_size=4",
        "~callbacks.tensorboard_visuals"]
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert 0.0 < metrics["test/ndcg@10"] <= 1.0 and out.stdout.count("best checkpoint:") == 1
