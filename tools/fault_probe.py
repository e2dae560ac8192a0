"""What a copy-out into fresh memory pays for mapping its pages, on this host.

    python3 tools/fault_probe.py [--mb 32] [--repeats 15]

One 16 k-token batch's ColBERT rows are (16,384, 1,024) float16, 32 MB. Prints the host's
transparent-huge-page settings, then medians in ms of:
- copy: `np.array(src, copy=True)` into fresh memory (pending.copy_out before PREFAULT);
- prefault: `pending.destination(src, prefault=True)` alone (np.empty + one byte per page);
- copy into mapped: `np.copyto` into that prefaulted array (what is left after the wait).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from m3engine.pending import copy_out, destination


def median_ms(step: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kept = step()
        times.append(time.perf_counter() - start)
        del kept  # freed before the next round, as a caller drops an old result
    return statistics.median(times) * 1e3


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--mb", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    for name in ("enabled", "defrag"):
        path = Path("/sys/kernel/mm/transparent_hugepage") / name
        print(f"THP {name}: {path.read_text().strip() if path.exists() else 'n/a'}")
    src = torch.randn(args.mb << 19, dtype=torch.float32).to(torch.float16).view(-1, 1024)
    mapped = destination(src, prefault=True)
    rows = {
        "copy": median_ms(lambda: np.array(src.numpy(), copy=True), args.repeats),
        "prefault": median_ms(lambda: destination(src, prefault=True), args.repeats),
        "copy into mapped": median_ms(lambda: copy_out(src, mapped), args.repeats),
    }
    for label, ms in rows.items():
        print(f"{args.mb} MB {label}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
