"""Does a huge JSON answer stall the event loop? One 64-text embed_m3 request with ColBERT vectors
(1,024 wide, fake backend) and, while it is serialised, ten small /embed requests: their latencies.

Run from the worktree root: PYTHONPATH=src:. python docs/bench/server-cpu/loop_stall.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from m3engine.settings import ServerSettings
from tests.api.asgi import LifespanClient
from tests.api.conftest import fake_engine
from tests.checkpoints import build_bge_m3


async def main() -> None:
    engine = fake_engine(build_bge_m3(Path(tempfile.mkdtemp())), max_batch_tokens=100000, max_batch_size=256)
    engine.backend.dim = 1024  # type: ignore[attr-defined]
    client = LifespanClient([engine], ServerSettings(warmup=False))
    http = await client.start()
    texts = ["word " * 100 + str(i) for i in range(64)]
    body = {"inputs": texts, "return_colbert": True, "return_dense": False, "return_sparse": False}
    start = time.perf_counter()
    big = asyncio.ensure_future(http.post("/v1/embed_m3", json=body, timeout=120))
    await asyncio.sleep(0.35)
    small = []
    for i in range(10):
        t = time.perf_counter()
        await http.post("/embed", json={"inputs": f"small {i}"})
        small.append(round((time.perf_counter() - t) * 1000, 1))
    answer = await big
    print(f"big answer: {len(answer.content) / 1e6:.0f} MB in {time.perf_counter() - start:.2f} s")
    print("small requests during it (ms):", small)
    await client.close()


asyncio.run(main())
