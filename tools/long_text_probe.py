"""The bench's batch-1 8,192-token case, taken apart: the same texts (same TextMaker seed and order
as runner.latency_ladder), engine and HF baseline in one process. python tools/long_text_probe.py TOK"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from m3engine.bench.hf import HFBaseline
from m3engine.bench.runner import load_engine
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.types import HeadRequest, PackedBatch


def ms(fn: Callable[[], object], reps: int = 8) -> str:
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return f"p50 {np.median(out) * 1e3:.1f} p90 {np.percentile(out, 90) * 1e3:.1f}"


path = build_synthetic("bge-m3", Path(tempfile.mkdtemp()) / "m3", Path(sys.argv[1]))
engine = load_engine(path, "cuda", "bf16", 16384)
hf = HFBaseline(path, cross_encoder=False, device="cuda")
maker = TextMaker(Tokenizer.from_file(str(path / "tokenizer.json")))
texts = {n: maker.text(int(n * 1.5) + 16) for n in (128, 256, 512, 1024, 2048, 4096, 8192)}
for n in (4096, 8192):
    text = texts[n]
    enc = engine.tokenizer.encode([text], n)
    batch = PackedBatch.from_encoded(enc)
    print(n, "chars", len(text), "tokens", len(engine.tokenizer._tok.encode(text).ids), flush=True)
    print(" engine tokenize", ms(lambda t=text, n=n: engine.tokenizer.encode([t], n)), flush=True)
    hf_tokenize = ms(lambda t=text, n=n: hf.tokenizer([t], truncation=True, max_length=n))
    print(" hf tokenize    ", hf_tokenize, flush=True)
    forward = ms(lambda b=batch: engine.backend.forward(b, HeadRequest(dense=True)))
    print(" forward        ", forward, flush=True)
    print(" engine.embed   ", ms(lambda t=text, n=n: engine.embed([t], max_length=n)), flush=True)
    print(" hf.embed       ", ms(lambda t=text, n=n: hf.embed([t], n)), flush=True)
    print(" engine.embed   ", ms(lambda t=text, n=n: engine.embed([t], max_length=n)), flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(4):
        engine.embed([text], max_length=n)
    torch.cuda.synchronize()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
    print(buf.getvalue()[-2500:], flush=True)
