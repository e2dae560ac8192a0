"""Does the GIL's switch interval hold back the launching thread? Bulk embeds at several intervals.

    PYTHONPATH=src python tools/switch_interval_probe.py --tokenizer .carry-run/xlmr-tokenizer

A bulk call runs the launching thread (~300 kernel launches per batch, eager) beside the tokenizer
threads and the collecting thread; when it drops the GIL it waits up to `sys.getswitchinterval()`
(5 ms by default) to get it back from a thread that is busy in Python. On the synthetic BGE-M3 (bf16,
fast backend, CUDA) this times `Engine.embed` of the bench's passages (2,000) and long documents (24),
dense and all three, with the interval set to each value in turn, in one process, interleaved over
repeats (the first round is a warm-up). Prints k tokens/s per (workload, interval, outputs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer

from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.settings import EngineSettings

INTERVALS = (0.005, 0.001, 0.0002)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    maker = TextMaker(Tokenizer.from_file(str(args.tokenizer / "tokenizer.json")), seed=0)
    workloads = {
        "passages": (maker.passages(2000), 2048),
        "long_docs": (maker.long_documents(24), 8192),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = build_synthetic("bge-m3", Path(tmp) / "m3", args.tokenizer)
        settings = EngineSettings(model=str(path), backend="fast", device="cuda", dtype="bf16")
        engine = Engine.from_settings(settings)
        for name, (texts, limit) in workloads.items():
            tokens = sum(r.num_tokens for r in engine.embed(texts, max_length=limit))
            times: dict[tuple[float, bool], list[float]] = {}
            for rep in range(args.repeats + 1):
                for interval in INTERVALS:
                    for m3 in (False, True):
                        sys.setswitchinterval(interval)
                        start = time.perf_counter()
                        result = engine.embed(texts, max_length=limit, sparse=m3, colbert=m3)
                        elapsed = time.perf_counter() - start
                        del result
                        if rep:
                            times.setdefault((interval, m3), []).append(elapsed)
            sys.setswitchinterval(INTERVALS[0])
            for (interval, m3), values in sorted(times.items()):
                rate = tokens / statistics.median(values) / 1e3
                outputs = "all three" if m3 else "dense"
                print(f"{name} interval {interval * 1e3:.1f} ms {outputs}: {rate:.0f} k tok/s")


if __name__ == "__main__":
    main()
