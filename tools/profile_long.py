"""Where the time goes for one 8,192-token text: fast backend vs transformers (torch.profiler)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from m3engine.backends.fast import FastBackend
from m3engine.bench.synthetic import build_synthetic
from m3engine.models.spec import inspect_model
from m3engine.types import Encoded, PackedBatch, TokenIds

d = build_synthetic("bge-m3", Path(tempfile.mkdtemp()) / "m3", Path(sys.argv[1]))
fast = FastBackend(inspect_model(d), TokenIds(1, frozenset({0, 1, 2, 3})), device="cuda", dtype="bf16")
ids = [0, *np.random.default_rng(0).integers(5, 250000, 8190).tolist(), 2]
batch = PackedBatch.from_encoded([Encoded(ids=ids)])
from transformers import AutoModel  # noqa: E402  (after the synthetic build: a script)

hf = AutoModel.from_pretrained(str(d), dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
t = torch.tensor([ids], device="cuda")
runs = {
    "fast": lambda: fast.hidden_states(batch, use_graphs=False),
    "hf": lambda: hf(input_ids=t),
}
with torch.inference_mode():
    for name, fn in runs.items():
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        print("=====", name, flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70))
