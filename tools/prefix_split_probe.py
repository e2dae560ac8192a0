"""Does one text's prefix encode faster in pieces (the Rust pool encodes a batch's items in parallel)?

    PYTHONPATH=src python3 tools/prefix_split_probe.py TOKENIZER_DIR

The bench's 128-, 256-, 512- and 2,048-token texts (`latency_ladder`: ~1.5 n + 16 tokens, cut to n):
1. the prefix the engine encodes, whole and cut at spaces into about 2, 6 and 14 pieces
   (`_split_at_spaces`), each as one `encode_batch_fast` call, and whether the pieces' ids joined
   equal the whole prefix's;
2. `TextTokenizer.encode([text], n)` with `min_piece_chars` at 4,096 (no finer cut), 512 and 256.
Median microseconds of 2,000 calls each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer

from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.tokenization.tokenizer import CHARS_PER_TOKEN, TextTokenizer, _split_at_spaces


def median_us(fn: Callable[[], object], n: int = 2000) -> float:
    for _ in range(100):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(path: Path) -> None:
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    with tempfile.TemporaryDirectory() as tmp:  # a TextTokenizer needs a model directory
        model = build_synthetic(
            "bge-m3", Path(tmp) / "m3", path, Architecture(layers=1, hidden=64, heads=4, ffn=128)
        )
        engine_tok = TextTokenizer.load(model)
    print(f"cores {engine_tok.cores}", flush=True)
    maker = TextMaker(tok)
    for n in (128, 256, 512, 2048):
        text = maker.text(int(n * 1.5) + 16)
        prefix = text[: text.rfind(" ", 0, (n - 2) * CHARS_PER_TOKEN)]
        whole = tok.encode_batch_fast([prefix], add_special_tokens=False)[0].ids
        us = median_us(lambda p=prefix: tok.encode_batch_fast([p], add_special_tokens=False))
        cells = [f"{n} tokens, prefix {len(prefix)} chars: whole {us:.0f} us"]
        for k in (2, 4, 8):
            pieces = _split_at_spaces(prefix, max(1, len(prefix) // (2 * k - 1)))
            ids = [i for e in tok.encode_batch_fast(pieces, add_special_tokens=False) for i in e.ids]
            us = median_us(lambda p=pieces: tok.encode_batch_fast(p, add_special_tokens=False))
            cells.append(f"{len(pieces)} pieces {us:.0f} us (same ids: {ids == whole})")
        print("; ".join(cells), flush=True)
        cells = []
        for floor in (4096, 512, 256):
            engine_tok.min_piece_chars = floor
            us = median_us(lambda t=text, n=n: engine_tok.encode([t], n))
            cells.append(f"min_piece_chars {floor}: {us:.0f} us")
        print("  TextTokenizer.encode: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
