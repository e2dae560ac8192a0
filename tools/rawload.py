"""A low-overhead closed-loop HTTP/1.1 load generator (raw asyncio sockets, keep-alive), so the
client is not what limits a CPU measurement of the server on a small VM.

    python tools/rawload.py --url http://127.0.0.1:8099 --concurrency 32 --duration 15

Sends /v1/embeddings with one short query per request (4-16 words, as the bench's `queries`
workload) and prints one JSON line: requests, errors, req/s, p50 and p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

WORDS = ["retrieval", "dense", "sparse", "vector", "search", "model", "query", "passage", "index", "rank"]


def _bodies(count: int) -> list[bytes]:
    rng = random.Random(0)
    out = []
    for _ in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16)))
        body = json.dumps({"input": text}).encode()
        head = (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def _client(
    host: str, port: int, bodies: list[bytes], stop: float, lat: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = random.randrange(len(bodies))
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        writer.write(bodies[i % len(bodies)])
        i += 1
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if status != 200:
            errors.append(status)
    writer.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8099")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=15)
    a = p.parse_args()
    host, port = a.url.removeprefix("http://").split(":")
    bodies = _bodies(1024)
    lat: list[float] = []
    errors: list[int] = []
    begin = time.perf_counter()
    stop = begin + a.duration
    await asyncio.gather(*(_client(host, int(port), bodies, stop, lat, errors) for _ in range(a.concurrency)))
    elapsed = time.perf_counter() - begin
    lat.sort()
    pct = lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2)  # noqa: E731
    print(
        json.dumps(
            {
                "requests": len(lat),
                "errors": len(errors),
                "rps": round(len(lat) / elapsed, 1),
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
