"""A timeline of one call: when each forward pass's results came back, and where the device idled.

    PYTHONPATH=src python benchmarks/timeline.py --tokenizer TOKENIZER_DIR [--workload passages] \
        [--device cuda] [--dtype bf16] [--max-batch-tokens 16384] [--trace] [--gap-ms 1]

It loads one Engine, warms it up with --warmup calls of the workload (passages, passages-all or
long for BGE-M3; rerank with --synthetic bge-reranker-v2-m3), then makes one more call and prints:
- for an embed call, one line per forward pass as its results were collected (the `progress`
  callback of `Engine.embed`): ms from the call's start, inputs and tokens in it, ms since the one
  before; long waits between batches show where the pipeline stalls;
- the call's wall time and tokens/s;
- with --trace, the call runs under torch.profiler (host and CUDA): the device's busy share of the
  call, its idle gaps of --gap-ms or more (ms from the first kernel), and the host events of
  --gap-ms or more per thread (a CUDA runtime call that blocks shows as one).

A dry run on the CPU: `--tiny --device cpu --passages 40 --workload passages`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from m3engine import Engine
from workloads import EMBED, RERANK, add_model_arguments, add_size_arguments, checkpoint, tokens, workloads


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    add_size_arguments(p)
    p.add_argument("--workload", help=f"one of {', '.join(EMBED + RERANK)} (default: the model's first)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-batch-tokens", type=int, default=16384)
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before the one shown")
    p.add_argument("--trace", action="store_true", help="run the call under torch.profiler")
    p.add_argument("--gap-ms", type=float, default=1.0, help="--trace: shortest gap or event shown")
    return p


def merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping (start, end) spans joined, in order."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def report_trace(prof: Any, wall_ms: float, gap_ms: float) -> None:
    """Device busy share and idle gaps, then long host events per thread (times in ms)."""
    events = list(prof.events())
    kernels = merged(
        [(e.time_range.start / 1e3, e.time_range.end / 1e3) for e in events if e.device_type.name == "CUDA"]
    )
    if kernels:
        origin = kernels[0][0]
        busy = sum(b - a for a, b in kernels)
        print(f"device: busy {busy:.1f} ms of the call's {wall_ms:.1f} ms ({busy / wall_ms:.0%})")
        for (_, end), (start, _) in itertools.pairwise(kernels):
            if start - end >= gap_ms:
                print(f"  idle {end - origin:9.2f} -> {start - origin:9.2f}  ({start - end:.2f} ms)")
    host = [e for e in events if e.device_type.name == "CPU"]
    if not host:
        return
    origin = min(e.time_range.start for e in host) / 1e3
    print(f"host events of {gap_ms} ms or more (ms from the trace's start):")
    for e in sorted(host, key=lambda e: (e.thread, e.time_range.start)):
        took = (e.time_range.end - e.time_range.start) / 1e3
        if took >= gap_ms:
            print(
                f"  thread {e.thread}: {e.time_range.start / 1e3 - origin:9.2f} {e.name[:70]} {took:.2f} ms"
            )


def main() -> None:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> None:
    model, reranker = checkpoint(args, scratch)
    name = args.workload or (RERANK if reranker else EMBED)[0]
    job = workloads(args, model, reranker, [name])[0]
    engine = Engine.load(
        model,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        max_batch_tokens=args.max_batch_tokens,
    )
    info = engine.info()
    print(f"{name} on {info['backend']}, {info['device']} ({info['dtype']})", flush=True)
    for _ in range(args.warmup):
        job.call(engine, None)
    marks: list[tuple[float, int, int]] = []

    def progress(inputs: int, batch_tokens: int) -> None:
        marks.append((time.perf_counter(), inputs, batch_tokens))

    prof = None
    with contextlib.ExitStack() as stack:
        if args.trace:
            import torch

            activities = [torch.profiler.ProfilerActivity.CPU]
            if info["device"].startswith("cuda"):
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            prof = stack.enter_context(torch.profiler.profile(activities=activities))
        start = time.perf_counter()
        records = job.call(engine, progress)
        wall_ms = (time.perf_counter() - start) * 1e3
    last = start
    for at, inputs, batch_tokens in marks:
        print(
            f"  {(at - start) * 1e3:9.2f} ms  batch of {inputs:4d} inputs, {batch_tokens:6d} tokens  "
            f"(+{(at - last) * 1e3:.2f} ms)"
        )
        last = at
    total = tokens(records)
    print(f"{name}: {wall_ms:.1f} ms, {len(marks)} batches, {total} tokens, {total / wall_ms:.1f} k tok/s")
    if prof is not None:
        report_trace(prof, wall_ms, args.gap_ms)


if __name__ == "__main__":
    main()
