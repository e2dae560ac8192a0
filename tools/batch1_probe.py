"""Where one short text's time goes (device): tokenize, prepare, forward, total; graph replay alone.

PYTHONPATH=src python3 tools/batch1_probe.py TOKENIZER_DIR    # prints one JSON line per length

With `--attention NAME,NAME`, an A/B in one process instead: per round, per Triton attention config
(varlen_attention.CONFIGS; the graphs captured afresh for each), `Engine.embed` and the graph
replay of the same 128- and 512-token texts, one JSON line per config and round.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.types import HeadRequest, PackedBatch


def median_ms(fn: Callable[[], object], n: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def replay_ms(engine: Engine, packed: PackedBatch) -> float:
    graphs = engine.backend.graphs  # type: ignore[attr-defined]
    key = graphs.bucket(packed.num_tokens, packed.num_seqs, packed.max_len)
    captured = graphs.get(key)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(100):
        captured.graph.replay()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / 100


def main(tokenizer: Path, attention: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = build_synthetic("bge-m3", Path(scratch) / "m3", tokenizer)
        engine = Engine.load(str(path), backend="fast", device="cuda", dtype="bf16")
        maker = TextMaker(Tokenizer.from_file(str(path / "tokenizer.json")))
        texts = {n: maker.text(int(n * 1.5) + 16) for n in (128, 512)}
        if not attention:
            for n, text in texts.items():
                print(json.dumps(breakdown(engine, text, n)), flush=True)
        for round_ in range(3 if attention else 0):
            for name in attention:
                print(json.dumps({"round": round_, **attention_ab(engine, name, texts)}), flush=True)


def attention_ab(engine: Engine, name: str, texts: dict[int, str]) -> dict[str, object]:
    """embed and replay of each text with the Triton attention config `name`, graphs captured anew."""
    from m3engine.backends.fast import varlen_attention
    from m3engine.backends.fast.graphs import GraphRunner

    backend: Any = engine.backend
    backend.attention_config = varlen_attention.CONFIGS[name]
    backend.graphs = GraphRunner(backend._encode, backend._device, max_tokens=backend.graphs.max_tokens)
    row: dict[str, object] = {"config": name}
    for n, text in texts.items():
        packed = PackedBatch.from_encoded(engine.tokenizer.encode([text], n))
        row[f"embed{n}"] = round(median_ms(lambda t=text, n=n: engine.embed([t], max_length=n), 300), 3)
        row[f"replay{n}"] = round(replay_ms(engine, packed), 3)
    return row


def breakdown(engine: Engine, text: str, n: int) -> dict[str, float]:
    """`text` cut to `n` tokens (as the bench does), each stage alone and the whole embed call."""
    encoded = engine.tokenizer.encode([text], n)
    packed = PackedBatch.from_encoded(encoded)
    return {
        "tokens": packed.num_tokens,
        "tokenize_ms": median_ms(lambda: engine.tokenizer.encode([text], n)),
        "prepare_ms": median_ms(lambda: engine.tasks.embed([text], max_length=n)),
        "pack_ms": median_ms(lambda: PackedBatch.from_encoded(encoded)),
        "forward_ms": median_ms(lambda: engine.backend.forward(packed, HeadRequest(dense=True))),
        "replay_ms": replay_ms(engine, packed),
        "embed_ms": median_ms(lambda: engine.embed([text], max_length=n)),
    }


if __name__ == "__main__":
    names = sys.argv[sys.argv.index("--attention") + 1].split(",") if "--attention" in sys.argv else []
    main(Path(sys.argv[1]), names)
