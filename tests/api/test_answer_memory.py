"""The largest ColBERT answer a server admits costs no more memory than it was admitted for.

Issue 21, case 3: ColBERT answers were built as Python float lists (~80 bytes a float), so one
request could take gigabytes. Now an answer's size is admitted (--max-answer-bytes,
tasks/answer_size.py) and built from numpy by orjson. Here a server with a 64 MiB answer budget
gets the largest /embed_all request that fits it; its RSS is sampled while it answers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.api.server_process import ServerProcess
from tests.checkpoints import HIDDEN, MAX_POSITIONS

BUDGET = 64 << 20
TOKENS = MAX_POSITIONS - 2  # every text is cut to the model's limit
# tasks/answer_size.py's count for one text of TOKENS ColBERT rows of HIDDEN values
PER_TEXT = 512 + TOKENS * HIDDEN * (4 + 2 * 16)
MARGIN = 24 << 20  # the request itself: its body, its token ids, the parsed JSON


def test_a_maximal_colbert_answer_stays_within_its_admitted_size(bge_m3_dir: Path) -> None:
    count = BUDGET // PER_TEXT
    flags = {"max_answer_bytes": BUDGET, "max_queued_tokens": 1 << 20, "max_batch_tokens": 4096}
    with ServerProcess([bge_m3_dir], **flags) as server:
        auth = {"authorization": f"Bearer {server.key}"}
        body = {"inputs": ["word " * 400] * count}
        with httpx.Client(base_url=server.url, headers=auth, timeout=120) as client:
            client.post("/embed_all", json={"inputs": ["word " * 400] * 8})  # allocator and caches warm
            time.sleep(0.5)
            baseline = server.rss()
            peak, stop = [baseline], threading.Event()

            def sample() -> None:
                process = psutil.Process(server.pid)
                while not stop.wait(0.005):
                    peak[0] = max(peak[0], process.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            r = client.post("/embed_all", json=body)
            stop.set()
            sampler.join()
            assert r.status_code == 200, r.text[:300]
            rows = r.json()
            assert len(rows) == count and len(rows[0]) >= TOKENS - 1
            admitted = count * PER_TEXT
            grown = peak[0] - baseline
            answer = len(r.content) >> 20
            print(f"answer {answer} MiB, admitted {admitted >> 20} MiB, RSS grew {grown >> 20} MiB")
            assert grown <= admitted + MARGIN
            over = client.post("/embed_all", json={"inputs": ["word " * 400] * (count + 2)})
            assert over.status_code == 413 and over.json()["error_type"] == "answer_too_large"
