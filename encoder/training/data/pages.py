"""Handing back the memory-mapped pages that a pass over a dataset has read (Linux; elsewhere a no-op).

`datasets` reads its Arrow files through memory maps. Every page a pass touches stays in the process's
resident set until the kernel needs the memory. Those pages are clean page cache and can be reclaimed, but
they are what `ps`, `top`, psutil and a scheduler's RSS accounting report: preparing a 2 GB corpus read as a
3.6 GB process while it needed 1.1 GB (the confusion of datasets issue #4883). madvise(MADV_DONTNEED) on a
read-only mapping drops its pages from this process's page tables. The page cache keeps them, and a later
read maps them again from there (or from disk), so nothing read can change.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Callable

from datasets import Dataset

log = logging.getLogger(__name__)

EVERY_BATCHES = 25  # a pass hands its pages back every this many batches (of 1,000 texts: some 20-50 MB)
_MADV_DONTNEED = 4
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def files_of(*datasets: Dataset) -> tuple[str, ...]:
    """The Arrow files the datasets read (none for one held in memory)."""
    return tuple(sorted({os.path.realpath(f["filename"]) for ds in datasets for f in ds.cache_files}))


def release(files: tuple[str, ...]) -> None:
    """Drops this process's resident pages of the read-only mappings of `files`."""
    if _libc is None or not files:
        return
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:  # start-end perms offset dev inode path
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or "w" in fields[1] or fields[5].rstrip("\n") not in files:
                continue  # (a writable private mapping may hold changes that DONTNEED would throw away)
            start, end = (int(a, 16) for a in fields[0].split("-"))
            if _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) != 0:
                log.debug("madvise on %s failed: %s", fields[5].strip(), os.strerror(ctypes.get_errno()))


class releasing:
    """`fn` (a `datasets.map`/`filter` function over batches of the dataset reading `files`), handing back the
    pages read every EVERY_BATCHES calls. It runs in whichever process `datasets` gives it to. (A class, not a
    closure: `datasets` pickles it, to hash it and to send it to its worker processes.)"""

    def __init__(self, files: tuple[str, ...], fn: Callable):
        self.files, self.fn, self.calls = files, fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls % EVERY_BATCHES == 0:
            release(self.files)
        return self.fn(*args, **kwargs)


def texts(ds: Dataset, column: str, batch_size: int = 1000):
    """A column's values, `batch_size` rows at a time: memory stays flat in the corpus size, mapped pages too."""
    files = files_of(ds)
    for i, batch in enumerate(ds.select_columns([column]).iter(batch_size=batch_size), 1):
        yield from batch[column]
        if i % EVERY_BATCHES == 0:
            release(files)
    release(files)

