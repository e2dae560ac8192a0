"""A/B of rerank tokenization: pairs built from the read template vs the post-processor per pair.

PYTHONPATH=src python tools/pair_tokenize_ab.py ../shared/fixtures/xlmr-tokenizer
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from m3engine.tokenization.tokenizer import TextTokenizer


def main(tokenizer_dir: str) -> None:
    tok = TextTokenizer.load(Path(tokenizer_dir))
    rng = random.Random(0)
    words = Path(__file__).resolve().parents[1].joinpath("README.md").read_text().split()
    docs = [" ".join(rng.choice(words) for _ in range(100)) for _ in range(100)]
    query = "What is BGE-M3 and how does it compute sparse weights?"
    template, times, outs = tok._pair_template, {"template": [], "post.process": []}, {}
    for _ in range(8):
        for name, choice in (("template", template), ("post.process", None)):
            tok._pair_template = choice
            start = time.perf_counter()
            encoded = tok.encode_pairs([query] * len(docs), docs, 8192, 6144)
            times[name].append(time.perf_counter() - start)
            outs[name] = [(e.ids, e.type_ids) for e in encoded]
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        print(f"{name}: median {median * 1e3:.1f} ms, best {min(values) * 1e3:.1f} ms")
    print("tokens", sum(len(e) for e in encoded), "identical:", outs["template"] == outs["post.process"])


if __name__ == "__main__":
    main(sys.argv[1])
