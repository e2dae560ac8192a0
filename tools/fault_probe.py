"""What a copy-out into fresh memory pays for mapping its pages, on this host.

    python3 tools/fault_probe.py [--mb 32] [--repeats 15]

One 16 k-token batch's ColBERT rows are (16,384, 1,024) float16, 32 MB. Prints the host's
transparent-huge-page settings, then medians in ms of:
- copy: `np.array(src, copy=True)` into fresh memory (what pending.copy_out does);
- prefault: `np.empty` and one byte written per 4 kB page, alone (mapping the pages ahead);
- copy into mapped: `np.copyto` into one such array, mapped once and reused (what would be left);
- faults: copy minus copy into mapped.
Fresh memory only from 32 MiB up: glibc serves smaller blocks from memory freed before (its mmap
threshold rises to the size of a freed mapped block, up to 32 MiB), so --mb 8 or 16 measures reused,
already mapped pages. Whether the arrays got huge pages is not checked; the THP mode is printed.
Round eleven (docs/benchmarks.md) tried the prefault in `HostCopy.wait`: no gain on the H200 hosts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

PAGE = 4096


def prefaulted(src: np.ndarray) -> np.ndarray:
    out = np.empty(src.shape, dtype=src.dtype)
    out.reshape(-1).view(np.uint8)[::PAGE] = 0
    return out


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
    host = src.numpy()
    mapped = prefaulted(host)
    rows = {
        "copy": median_ms(lambda: np.array(host, copy=True), args.repeats),
        "prefault": median_ms(lambda: prefaulted(host), args.repeats),
        "copy into mapped": median_ms(lambda: np.copyto(mapped, host), args.repeats),
    }
    rows["faults"] = rows["copy"] - rows["copy into mapped"]
    for label, ms in rows.items():
        print(f"{args.mb} MB {label}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
