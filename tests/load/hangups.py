"""Many clients at once, a share of them hanging up halfway through sending their body.

Each client opens a connection, sends one POST /v1/embeddings and reads the answer, over and over;
with probability `hangup_share` it instead sends the headers and half the body and closes the socket.
Afterwards the server must show no 5xx, in its answers, its access log or its metrics, and its
admission gauges must be back at 0.

    >>> counts = asyncio.run(load(server, clients=200, seconds=60, hangup_share=0.3))
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter

from tests.api.server_process import ServerProcess

TEXT = "a passage of ordinary text, long enough to be uploaded in more than one piece " * 4


def _request(key: str, body: bytes) -> bytes:
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode()


async def _client(
    server: ServerProcess, stop: float, share: float, rng: random.Random, counts: Counter[str]
) -> None:
    host, port = "127.0.0.1", server.port
    while time.monotonic() < stop:
        body = json.dumps({"input": [TEXT] * rng.randint(1, 8)}).encode()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["connect_error"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(_request(server.key, body))
            if rng.random() < share:
                writer.write(body[: len(body) // 2])
                await writer.drain()
                await asyncio.sleep(rng.uniform(0, 0.05))
                counts["hung_up"] += 1
                continue
            writer.write(body)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 60)
            match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
            counts[match.group(1).decode() if match else "no_answer"] += 1
        except (OSError, TimeoutError):
            counts["transport_error"] += 1
        finally:
            writer.close()


async def load(server: ServerProcess, clients: int, seconds: float, hangup_share: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    stop = time.monotonic() + seconds
    rngs = [random.Random(i) for i in range(clients)]
    await asyncio.gather(*(_client(server, stop, hangup_share, rng, counts) for rng in rngs))
    return counts


def server_5xx(server: ServerProcess) -> list[str]:
    """Access-log lines and metric series of the server that show a 5xx or an internal outcome."""
    bad = []
    for line in server.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if int(record.get("status") or 0) >= 500 or record.get("level") in ("error", "critical"):
            bad.append(line[:300])
    outcomes = re.findall(r'm3engine_requests_total\{outcome="([a-z_]+)"', server.metrics())
    bad += [
        f"outcome {o}"
        for o in outcomes
        if o in ("internal", "backend", "oom", "not_ready", "deadline_exceeded")
    ]
    return bad


def gauges(server: ServerProcess) -> dict[str, float]:
    out = {}
    for name in ("m3engine_admitted_requests", "m3engine_admitted_tokens", "m3engine_admitted_answer_bytes"):
        match = re.search(rf"^{name} ([0-9.e+-]+)$", server.metrics(), re.MULTILINE)
        out[name] = float(match.group(1)) if match else float("nan")
    return out
