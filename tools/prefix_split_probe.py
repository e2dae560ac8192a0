"""Does one text's prefix encode faster in pieces (the Rust pool encodes a batch's items in parallel)?

    PYTHONPATH=src python3 tools/prefix_split_probe.py TOKENIZER_DIR

The bench's 128- and 512-token texts (`latency_ladder`: ~1.5 n + 16 tokens, cut to n): the prefix the
engine encodes (`TextTokenizer._prefix`), whole and cut at spaces into 2, 4 and 8 pieces
(`_split_at_spaces`), each as one `encode_batch_fast` call; median microseconds of 2,000 calls, and
whether the pieces' ids joined equal the whole prefix's.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer

from m3engine.bench.texts import TextMaker
from m3engine.tokenization import CHARS_PER_TOKEN, _split_at_spaces


def median_us(fn: object, n: int = 2000) -> float:
    call = fn  # type: ignore[assignment]
    for _ in range(100):
        call()  # type: ignore[operator]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(path: Path) -> None:
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    maker = TextMaker(tok)
    for n in (128, 512):
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
