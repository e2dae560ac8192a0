"""What the host pays to bring a batch's outputs back, and what all three outputs cost over dense.

    PYTHONPATH=src python tools/host_copy_probe.py --tokenizer .carry-run/xlmr-tokenizer      # CUDA
    PYTHONPATH=src python tools/host_copy_probe.py --tokenizer ../shared/fixtures/xlmr-tokenizer \
        --device cpu --dtype bf16 --tiny --rows 2048 --passages 60 --long-docs 2                # dry run

Three tables, printed to stdout (and --json):

1. copies: one batch's ColBERT rows, (--rows, 1024) in fp32 and fp16, and one dense row (batch 1),
   brought to the host while the caller keeps every earlier result alive (as a bulk call does):
   - fresh_pin: `torch.empty(pin_memory=True)` per launch (the old HostCopy): alloc, copy, total;
   - ring: HostCopy through host_ring.HostRing (a reused pinned slot, copied out at wait()): launch
     (host time to queue), wait (copy + copy-out), total; and copy-out alone with numpy (what
     pending.copy_out does) and with torch (empty + copy_), for the record.
   On the CPU there is no pinning and no device: the ring's copies and copy-outs are what it times.
2. end to end: `Engine.embed` of the bench's passages (2,000 lognormal, median ~200 tokens, <= 2,048)
   and long documents (24 of 4-8 k tokens) on the synthetic full-size BGE-M3, dense and all three,
   in five variants switched in-process, taken in turn each repeat (drift falls on all alike):
     old      fp32 ColBERT head and rows, a fresh pinned buffer per launch (before this change);
     fp16     float16 ColBERT rows, fresh pinned buffers;
     ring     fp32 ColBERT rows, the reused ring;
     new      float16 rows and the ring (the default now);
     torch-copy  new, with the ring's copy-out by torch (empty + copy_, threaded) instead of numpy.
   Issue 3's target: all three <= 1.10 x dense. Also the ring's re-pins over the whole run.
3. the ColBERT rows of `new` against `old` (per-vector cosine): what float16 rows cost in accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from probe_cli import fast_settings, probe_parser  # a sibling module (tools/ is on the path)
from torch.nn import functional as F

from m3engine.backends import pending
from m3engine.backends.fast import FastBackend
from m3engine.backends.host_ring import HostRing
from m3engine.backends.transfer import HostCopy
from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.models.heads import M3Heads

KEEP = 8  # earlier results the caller holds: the caching host allocator cannot reuse their blocks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def copy_rows(device: torch.device, rows: int, width: int, repeats: int) -> list[dict[str, Any]]:
    """Table 1: fresh pinned buffer per launch against the ring, one (rows, width) output per launch."""
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None  # type: ignore[no-untyped-call]
    out = []
    for label, shape, dtype in (
        ("colbert fp32", (rows, width), torch.float32),
        ("colbert fp16", (rows, width), torch.float16),
        ("dense 1 row", (1, width), torch.float32),
    ):
        source = torch.randn(shape, device=device).to(dtype)
        kept: list[Any] = []
        alloc, copy_ms, fresh = [], [], []
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            host = torch.empty(shape, dtype=dtype, pin_memory=cuda)
            allocated = time.perf_counter()
            host.copy_(source, non_blocking=True)
            _sync(device)
            array = host.numpy()
            end = time.perf_counter()
            kept = [*kept[-KEEP:], array]
            alloc.append(allocated - start)
            copy_ms.append(end - allocated)
            fresh.append(end - start)
        ring = HostRing(pin=cuda)
        kept = []
        launch, wait, total = [], [], []
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            pending = HostCopy({"x": source}, stream, ring)
            launched = time.perf_counter()
            array = pending.wait()["x"]
            end = time.perf_counter()
            kept = [*kept[-KEEP:], array]
            launch.append(launched - start)
            wait.append(end - launched)
            total.append(end - start)
        host_copy = source.cpu()
        np_out, torch_out = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            kept = [*kept[-KEEP:], np.array(host_copy.numpy(), copy=True)]
            np_out.append(time.perf_counter() - start)
            start = time.perf_counter()
            fresh_t = torch.empty(shape, dtype=dtype)
            fresh_t.copy_(host_copy)
            kept = [*kept[-KEEP:], fresh_t]
            torch_out.append(time.perf_counter() - start)
        row = {
            "output": label,
            "MB": source.numel() * source.element_size() / 1e6,
            "fresh_pin_alloc_ms": _median_ms(alloc[1:]),
            "fresh_pin_copy_ms": _median_ms(copy_ms[1:]),
            "fresh_pin_total_ms": _median_ms(fresh[1:]),
            "ring_launch_ms": _median_ms(launch[1:]),
            "ring_wait_ms": _median_ms(wait[1:]),
            "ring_total_ms": _median_ms(total[1:]),
            "copy_out_numpy_ms": _median_ms(np_out),
            "copy_out_torch_ms": _median_ms(torch_out),
            "ring_pins": ring.grown,
        }
        out.append(row)
        del kept
    return out


def _old_colbert(heads: M3Heads) -> Callable[[torch.Tensor], torch.Tensor]:
    """The head before this change: fp32 linear over fp32 states, fp32 rows."""
    return lambda hidden: F.normalize(heads.colbert_linear(hidden.float()), dim=-1)


class Variants:
    """Switch the engine between the old and new ColBERT precision and host copies, in-process."""

    def __init__(self, engine: Engine) -> None:
        backend = engine.backend
        assert isinstance(backend, FastBackend) and backend._m3 is not None
        self.backend, self.heads = backend, backend._m3
        self.ring = backend.ring if backend.ring is not None else HostRing(pin=False)
        self.pins_before = self.ring.grown

    def use(self, fp16: bool, ring: bool, torch_copy: bool = False) -> None:
        pending.copy_out = _torch_copy_out if torch_copy else _numpy_copy_out  # type: ignore[assignment]
        if fp16:
            self.heads.__dict__.pop("colbert", None)  # the class's method again
        else:
            self.heads.colbert = _old_colbert(self.heads)  # type: ignore[method-assign]
        on_cuda = self.backend._device.type == "cuda"
        self.backend.ring = self.ring if ring and on_cuda else None


def _torch_copy_out(tensor: torch.Tensor) -> np.ndarray:
    out = torch.empty(tensor.shape, dtype=tensor.dtype)
    out.copy_(tensor)
    return out.numpy()


_numpy_copy_out = pending.copy_out
# (ColBERT in fp16, ring, copy-out with torch instead of numpy)
VARIANTS = {
    "old": (False, False, False),
    "fp16": (True, False, False),
    "ring": (False, True, False),
    "new": (True, True, False),
    "torch-copy": (True, True, True),
}


def end_to_end(engine: Engine, maker: TextMaker, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Table 2: dense and all three under each variant, each call timed in turn every repeat."""
    variants = Variants(engine)
    passages = maker.passages(args.passages)
    docs = maker.long_documents(args.long_docs)
    device = engine.backend._device  # type: ignore[attr-defined]
    rows = []
    for name, texts, limit in (("passages", passages, 2048), ("long_docs", docs, 8192)):
        tokens = sum(r.num_tokens for r in engine.embed(texts, max_length=limit))
        calls: dict[str, Callable[[], object]] = {}
        for variant, (fp16, ring, torch_copy) in VARIANTS.items():

            def call(
                t: list[str] = texts,
                n: int = limit,
                f: bool = fp16,
                r: bool = ring,
                tc: bool = torch_copy,
                m3: bool = False,
            ) -> object:
                variants.use(f, r, tc)
                return engine.embed(t, max_length=n, sparse=m3, colbert=m3)

            calls[f"{variant} dense"] = call
            calls[f"{variant} all"] = lambda c=call: c(m3=True)  # type: ignore[misc]
        times: dict[str, list[float]] = {key: [] for key in calls}
        for fn in calls.values():  # warm-up: graphs, allocator, ring slots
            fn()
        for _ in range(args.repeats):
            for key, fn in calls.items():
                _sync(device)
                start = time.perf_counter()
                result = fn()
                _sync(device)
                times[key].append(time.perf_counter() - start)
                del result
        for variant in VARIANTS:
            dense = statistics.median(times[f"{variant} dense"])
            every = statistics.median(times[f"{variant} all"])
            row = {
                "workload": name,
                "variant": variant,
                "texts": len(texts),
                "tokens": tokens,
                "dense_ms": dense * 1e3,
                "all_ms": every * 1e3,
                "dense_k_tok_s": tokens / dense / 1e3,
                "all_k_tok_s": tokens / every / 1e3,
                "all_over_dense": every / dense,
            }
            rows.append(row)
    variants.use(True, True)
    print(f"ring re-pins over the end-to-end runs: {variants.ring.grown - variants.pins_before}", flush=True)
    return rows


def accuracy(engine: Engine, maker: TextMaker) -> dict[str, Any]:
    """Table 3: float16 ColBERT rows (new) against fp32 rows of the same states (old)."""
    variants = Variants(engine)
    texts = maker.passages(64)
    variants.use(False, True)
    old = engine.embed(texts, max_length=2048, colbert=True)
    variants.use(True, True)
    new = engine.embed(texts, max_length=2048, colbert=True)
    cosines = []
    for a, b in zip(new, old, strict=True):
        assert a.colbert is not None and b.colbert is not None
        x, y = a.colbert.astype(np.float32), b.colbert.astype(np.float32)
        cosines.append((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)))
    allc = np.concatenate(cosines)
    dtypes = f"{new[0].colbert.dtype} / {old[0].colbert.dtype}"  # type: ignore[union-attr]
    return {
        "texts": len(texts),
        "vectors": len(allc),
        "dtypes_new_old": dtypes,
        "cos_mean": float(allc.mean()),
        "cos_min": float(allc.min()),
    }


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {title}")
    if not rows:
        return
    keys = list(rows[0])
    digits = {k: 6 if k.startswith("cos") else 3 for k in keys}
    cells = [[f"{r[k]:.{digits[k]}f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print(" | ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    for c in cells:
        print(" | ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
    print(flush=True)


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--rows", type=int, default=16384, help="table 1: ColBERT rows of one batch")
    parser.add_argument("--copy-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--tiny", action="store_true", help="a 1-layer model (a dry run)")
    parser.add_argument("--scratch", type=Path, default=None, help="where to build the synthetic model")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}",
        flush=True,
    )
    copies = copy_rows(device, args.rows, 1024, args.copy_repeats)
    _table(f"1. one output to the host, caller keeping {KEEP} earlier results (ms)", copies)
    tiny = Architecture(layers=1, hidden=64, heads=4, ffn=128)
    with tempfile.TemporaryDirectory() as tmp:
        path = (args.scratch or Path(tmp)) / "bge-m3"
        if not (path / "config.json").is_file():
            build_synthetic("bge-m3", path, args.tokenizer, tiny if args.tiny else Architecture())
        engine = Engine.from_settings(fast_settings(args, path))
        maker = TextMaker(engine.tokenizer._tok)
        print(f"model built and loaded at {time.perf_counter() - started:.0f} s", flush=True)
        e2e = end_to_end(engine, maker, args)
        _table("2. Engine.embed end to end: all three over dense, old / fp16 rows / ring / new", e2e)
        acc = accuracy(engine, maker)
        _table("3. ColBERT rows, new (float16) against old (fp32 head)", [acc])
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        config = {k: str(v) for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps({"args": config, "copies": copies, "end_to_end": e2e, "accuracy": acc}, indent=1)
        )


if __name__ == "__main__":
    main()
