"""What every benchmark prints first, and every result records: the machine a speed was measured on. int8's gain
(and even its accuracy) depends on the CPU's integer instructions: VNNI (int8 dot products) and AMX (int8/bf16
matrix tiles). The same int8 student ran 4.13x its teacher on an Intel Xeon with AVX-512 VNNI and AMX, 3.11x on
an AMD EPYC without AVX-512 or VNNI."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# (the name a benchmark prints, the flag /proc/cpuinfo lists)
INSTRUCTION_SETS = (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"),
                    ("AMX", "amx_tile"))


def cpu() -> tuple[str, list[str]]:
    """(the CPU's model name, the instruction sets of INSTRUCTION_SETS it has); from /proc/cpuinfo on Linux."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), []
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    present = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.machine()), [n for n, f in INSTRUCTION_SETS if f in present]


def machine() -> str:
    """`<CPU model> (<cores> cores; <instruction sets>), torch <version> (<threads> threads), onnxruntime <version>`."""
    import torch

    name, sets = cpu()
    try:
        import onnxruntime

        runtime = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        runtime = ""
    return (f"{name} ({os.cpu_count()} cores; {', '.join(sets) or 'no AVX2'}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){runtime}")


if __name__ == "__main__":
    print(f"machine: {machine()}")
