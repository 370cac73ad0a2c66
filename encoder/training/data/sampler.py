"""Length-grouped sampling for training: batches of similar lengths, seeded, shardable, resumable."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, Sampler


class LengthGroupedSampler(Sampler[int]):
    """Random order in which neighbours have similar lengths, so batches carry little padding.

    As Hugging Face's `group_by_length`: shuffle, cut into mega-batches of `batch_size * mega`,
    sort each by length (longest first), then shuffle the order of the resulting batches, so each
    epoch sees different batch compositions and no length-ordered drift. Seeded by seed + epoch.
    It yields indices (not batches), so Lightning can still shard it across processes.

    `mega=1` gives a plain shuffle (each group is one batch). To resume mid-epoch, `resume(epoch,
    consumed)` makes the next pass over that epoch skip the indices already trained on.
    With several processes (DDP), every rank computes the same batch list and takes every
    `num_replicas`-th whole batch (padded by repeating the first ones so ranks stay in step), so
    batches stay length-grouped and ranks see different data.
    """

    def __init__(self, lengths: list[int], batch_size: int, mega: int = 50, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, keys: list[tuple] | None = None):
        self.lengths = torch.tensor(lengths)  # a copy: Arrow's arrays are read-only, which torch warns about
        self.keys = keys  # each example's texts (as numbers): no batch holds one twice (texts encoded apart)
        self.batch_size = batch_size
        self.mega = mega
        self.seed = seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, indices to skip)
        self._planned: tuple[int, list[torch.Tensor]] | None = None  # (epoch, its batches): len() and iter() share

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        self._skip = (epoch, consumed)

    def __len__(self) -> int:
        if self.num_replicas == 1 and self.keys is None:
            return len(self.lengths)
        return sum(len(b) for b in self._batches()[self.rank :: self.num_replicas])

    def __iter__(self):
        skip = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            skip, self._skip = self._skip[1], None
        mine = [i for batch in self._batches()[self.rank :: self.num_replicas] for i in batch.tolist()]
        yield from mine[skip:]

    def _batches(self) -> list[torch.Tensor]:
        """This epoch's batches, planned once (with `keys`, placing each example is a pass in Python)."""
        if self._planned is None or self._planned[0] != self.epoch:
            self._planned = (self.epoch, self._plan())
        return self._planned[1]

    def _plan(self) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g)
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches.extend(chunk.split(self.batch_size))
        if self.keys is not None:
            batches = self._distinct(torch.cat(batches).tolist() if batches else [])
        # Only the last batch may be short: keep it last so DataLoader's batch boundaries line up.
        last = [batches.pop()] if batches and len(batches[-1]) < self.batch_size else []
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()] + last
        short = -len(batches) % self.num_replicas  # every rank gets as many batches
        return batches + batches[:short]

    def _distinct(self, order: list[int]) -> list[torch.Tensor]:
        """`order` in batches of `batch_size` none of which holds a text twice: an example whose text the batch being
        filled already holds waits for a later batch (as sentence-transformers' NoDuplicatesBatchSampler does). What
        still waits at the end (duplicates of the last batch's texts) sits this epoch out; another epoch's order
        places it elsewhere."""
        batches, batch, seen, waiting = [], [], set(), []
        for i in order:
            waiting.append(i)
            kept = []
            for j in waiting:
                if len(batch) < self.batch_size and seen.isdisjoint(self.keys[j]):
                    batch.append(j)
                    seen.update(self.keys[j])
                    if len(batch) == self.batch_size:
                        batches.append(torch.tensor(batch))
                        batch, seen = [], set()
                else:
                    kept.append(j)
            waiting = kept
        return batches + ([torch.tensor(batch)] if batch else [])


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch, and saying so to Lightning (which otherwise warns
    that a mid-epoch resume is unreliable): its state is where the sampler stood, the epoch and the
    examples already trained on (`processed()` batches), saved in checkpoints and handed back on resume."""

    def __init__(self, *args, processed: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self._processed = processed

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "consumed": self._processed() * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume(state["epoch"], state["consumed"])
