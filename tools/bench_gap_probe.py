"""Where a bulk call's time goes besides the pipeline: freeing its result, Python's GC, glibc's heap.

    PYTHONPATH=src python3 tools/bench_gap_probe.py --tokenizer TOKENIZER_DIR [--device cuda] [--hf] \
        [--rounds 4] [--json OUT]

`m3engine bench` times `Engine.embed` of the 2,000 passages (all three outputs) as `workloads.timed`
does: the result is dropped inside the timed span, so freeing its ~1.1 GB of ColBERT rows is timed
too. The pipeline's own timelines (tools/pipeline_timeline.py) end when the call returns. This
probe times the same call in one process, a few calls per phase, the phases one after another
(each keeps what the one before set):

- `default`: the process as the bench runs it;
- `gc-frozen`: after `gc.freeze()` (what `m3engine serve` does at start-up: a full collection then
  walks only the objects made since);
- `heap-kept`: also glibc told to keep freed memory (mallopt: no trimming, no mmap for big blocks),
  so the next call's copy-out writes pages already mapped instead of faulting fresh ones in.

Per call: `call` (until embed returns), `free` (dropping the result afterwards), `gc` (the
collector's pauses inside the call, by generation, from gc.callbacks). A bulk call runs with the
collector off (gcpause.py); `--gc-on` leaves it on, as before that. Last, one more call counts the
objects the collector finds in its youngest generation when the call switches it back on (what the
first collection after the call walks), by type. With `--hf` the bench's HF
baseline model is loaded too, as in the bench (more Python objects for a full collection to walk).
On the CPU (`--tiny`, a 1-layer model) it is a smoke run of the probe itself.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from probe_cli import probe_parser  # a sibling module (tools/ is on the path)

from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.process import gcpause
from m3engine.settings import EngineSettings

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


class GcClock:
    """The collector's pauses, summed by generation, while `on` is set."""

    def __init__(self) -> None:
        self.on = False
        self.ms: dict[int, float] = {}
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            gen = info["generation"]
            self.ms[gen] = self.ms.get(gen, 0.0) + (time.perf_counter() - self._start) * 1e3


def keep_freed_memory() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)  # blocks up to 1 GiB from the heap, not their own mmap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 40)  # never give the heap's top back to the kernel


def one_call(engine: Engine, texts: list[str], clock: GcClock) -> dict[str, Any]:
    clock.ms = {}
    clock.on = True
    start = time.perf_counter()
    out = engine.embed(texts, max_length=2048, sparse=True, colbert=True)
    returned = time.perf_counter()
    del out
    freed = time.perf_counter()
    clock.on = False
    return {"call": (returned - start) * 1e3, "free": (freed - returned) * 1e3, "gc": dict(clock.ms)}


def summary(calls: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
    call = statistics.median(c["call"] for c in calls)
    whole = statistics.median(c["call"] + c["free"] for c in calls)
    gens = sorted({g for c in calls for g in c["gc"]})
    return {
        "call_ms": round(call, 1),
        "free_ms": round(statistics.median(c["free"] for c in calls), 1),
        "call_tok_s": round(tokens / call * 1e3),
        "with_free_tok_s": round(tokens / whole * 1e3),
        "gc_ms_by_generation": {g: [round(c["gc"].get(g, 0.0), 1) for c in calls] for g in gens},
        "calls_ms": [round(c["call"], 1) for c in calls],
    }


def young_at_reenable(engine: Engine, texts: list[str]) -> dict[str, Any]:
    """The youngest generation's objects by type when the call's end switches the collector on."""
    seen: dict[str, Any] = {}
    enable = gc.enable

    def counting_enable() -> None:
        young = gc.get_objects(0)
        seen["objects"] = len(young)
        seen["by_type"] = collections.Counter(type(o).__name__ for o in young).most_common(12)
        del young
        enable()

    gc.enable = counting_enable
    try:
        engine.embed(texts, max_length=2048, sparse=True, colbert=True)
    finally:
        gc.enable = enable
    return seen


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--hf", action="store_true", help="load the bench's HF baseline model too")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--gc-on", action="store_true", help="the collector stays on during calls")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gcpause.ENABLED = not args.gc_on
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bge-m3"
        arch = Architecture(layers=1, hidden=64, heads=4, ffn=128) if args.tiny else Architecture()
        build_synthetic("bge-m3", path, args.tokenizer, arch)
        engine = Engine.from_settings(EngineSettings(model=str(path), device=args.device, dtype=args.dtype))
        hf = None
        if args.hf:
            from m3engine.bench.hf import HFBaseline

            hf = HFBaseline(path, cross_encoder=False, device=args.device)
        texts = TextMaker(engine.tokenizer._tok).passages(args.passages)
        tokens = sum(len(e) for e in engine.tokenizer.encode(texts, 2048))
        clock = GcClock()
        print(f"{len(texts)} passages, {tokens} tokens; python objects tracked: {len(gc.get_objects())}")
        result: dict[str, Any] = {}
        for phase in ("default", "gc-frozen", "heap-kept"):
            if phase == "gc-frozen":
                gc.collect()
                gc.freeze()
            elif phase == "heap-kept":
                keep_freed_memory()
            one_call(engine, texts, clock)  # warm-up: graphs, pools, ring sizes, the heap's size
            calls = [one_call(engine, texts, clock) for _ in range(args.rounds)]
            result[phase] = summary(calls, tokens)
            print(f"{phase}: {json.dumps(result[phase])}", flush=True)
        if not args.gc_on:
            result["young_at_reenable"] = young_at_reenable(engine, texts)
            print(f"young objects at the end of a call: {json.dumps(result['young_at_reenable'])}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        del hf


if __name__ == "__main__":
    main()
