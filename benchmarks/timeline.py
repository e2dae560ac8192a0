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
- with --simulated-device US, no model runs: a stand-in device takes US microseconds per token of
  each batch, one batch after another, and returns placeholder outputs (dense and rerank
  workloads). The host's side runs for real (tokenization in pieces, batch forming, collection), so
  on any machine the timeline shows where the pipeline would leave a device of that speed idle:
  its busy share of the call and its idle gaps. US models the device (an H100 was busy ~36 ms with
  the rerank's 33 k tokens: ~1.1); the host is the machine this runs on.

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

import numpy as np

from m3engine import Engine, EngineSettings
from m3engine.backends.base import Backend, BackendInfo
from m3engine.models.spec import ModelSpec, inspect_model
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch
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
    p.add_argument("--gap-ms", type=float, default=1.0, help="shortest gap or event shown")
    p.add_argument(
        "--simulated-device",
        type=float,
        metavar="US",
        help="no model: a stand-in device taking US microseconds per token (see above)",
    )
    return p


SIMULATED = ("passages", "long", "queries", "rerank")  # the workloads of dense vectors or logits


class Until:
    """A simulated batch: done at `end` (perf_counter seconds)."""

    def __init__(self, end: float, outputs: BatchOutputs) -> None:
        self.end, self.outputs = end, outputs

    def done(self) -> bool:
        return time.perf_counter() >= self.end

    def result(self) -> BatchOutputs:
        time.sleep(max(0.0, self.end - time.perf_counter()))
        return self.outputs


class SimulatedDevice(Backend):
    """A device that runs batches one after another, each in LAUNCH_S + tokens x `us_per_token`,
    and returns ones (dense vectors or one logit per sequence). `spans` holds each batch's
    (start, end) in perf_counter seconds."""

    LAUNCH_S = 0.0003  # per batch: launches, copies, a CUDA graph's setup

    def __init__(self, spec: ModelSpec, us_per_token: float) -> None:
        self.info = BackendInfo("simulated", "cpu", "fp32", padded=False)
        self._spec, self._per_token = spec, us_per_token * 1e-6
        self.spans: list[tuple[float, float]] = []

    def launch(self, batch: PackedBatch, heads: HeadRequest) -> Until:
        start = max(time.perf_counter(), self.spans[-1][1] if self.spans else 0.0)
        end = start + self.LAUNCH_S + len(batch.input_ids) * self._per_token
        self.spans.append((start, end))
        n = len(batch.cu_seqlens) - 1
        if self._spec.is_cross_encoder:
            return Until(end, BatchOutputs(logits=np.ones((n, 1), np.float32)))
        return Until(end, BatchOutputs(dense=np.ones((n, self._spec.hidden_size), np.float32)))


def simulated_engine(model: str, us_per_token: float, budget: int) -> tuple[Engine, SimulatedDevice]:
    """An Engine over `model`'s tokenizer and tasks whose backend is a SimulatedDevice."""
    spec = inspect_model(Path(model))
    device = SimulatedDevice(spec, us_per_token)
    settings = EngineSettings(model=model, device="cpu", max_batch_tokens=budget)
    return Engine(spec, TextTokenizer.load(Path(model)), device, settings), device


def report_simulated(device: SimulatedDevice, start: float, wall_ms: float, gap_ms: float) -> None:
    """The simulated device's busy share of the call and its idle gaps (ms from the call's start)."""
    spans = [((a - start) * 1e3, (b - start) * 1e3) for a, b in device.spans if b > start]
    report_busy("simulated device", [(0.0, 0.0), *spans], wall_ms, gap_ms)


def report_busy(label: str, spans: list[tuple[float, float]], wall_ms: float, gap_ms: float) -> None:
    """The busy share of the call of a device's ordered (start, end) spans in ms, and its idle gaps
    of `gap_ms` or more (ms from the first span's start)."""
    origin = spans[0][0]
    busy = sum(b - a for a, b in spans)
    print(f"{label}: busy {busy:.1f} ms of the call's {wall_ms:.1f} ms ({busy / wall_ms:.0%})")
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start - end >= gap_ms:
            print(f"  idle {end - origin:9.2f} -> {start - origin:9.2f}  ({start - end:.2f} ms)")


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
        report_busy("device", kernels, wall_ms, gap_ms)
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
    simulated = None
    if args.simulated_device is not None:
        if name not in SIMULATED:
            raise SystemExit(f"--simulated-device runs {', '.join(SIMULATED)}, not {name}")
        engine, simulated = simulated_engine(model, args.simulated_device, args.max_batch_tokens)
    else:
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
    if simulated is not None:
        report_simulated(simulated, start, wall_ms, args.gap_ms)


if __name__ == "__main__":
    main()
