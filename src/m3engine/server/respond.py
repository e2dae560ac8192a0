"""JSON responses: small ones built on the event loop, big ones off it, in pieces.

A response of many float vectors (ColBERT rows are ~1,000 floats per token) takes a second or more
to turn into JSON. Done on the event loop, it would stall the coroutine that launches batches and
leave the device idle; TEI fans results out in spawn_blocking for the same reason. Here shaping and
serialising run in a thread, and the serialiser (pydantic-core, ~6x faster than json.dumps on float
lists) is called once per record: it holds the GIL while it runs, so one call for the whole answer
would still block the loop for its full length.

A small answer (one query's vector) is built on the loop: the thread hop cost more CPU than the
work (2-core VM: one 1,024-float answer 0.10-0.12 ms of CPU inline, 0.18-0.32 ms through `to_thread`), and
the thread would not free the loop anyway, since the serialiser holds the GIL for far less than
the interpreter's switch interval (5 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Response
from pydantic_core import to_json

# Numbers an answer may hold and still be built on the loop: four 1,024-wide vectors, about 0.5 ms
# of CPU (measured on a 2-core VM).
INLINE_VALUES = 4096


def encode(payload: Any) -> bytes:
    """JSON bytes of `payload`, serialising a top-level list or a "data" list element by element."""
    if isinstance(payload, list):
        return b"[" + b",".join(to_json(item) for item in payload) + b"]"
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        head = to_json({k: v for k, v in payload.items() if k != "data"})  # b'{...}'
        joiner = b"," if len(head) > 2 else b""
        return head[:-1] + joiner + b'"data":' + encode(payload["data"]) + b"}"
    return to_json(payload)


def values_of(records: Iterable[Any]) -> int:
    """About how many numbers the answer of these records holds: their vectors' values, sparse
    weights as two each, and one for anything else (a score, a label)."""
    total = 0
    for record in records:
        dense, sparse, colbert = (getattr(record, name, None) for name in ("dense", "sparse", "colbert"))
        total += 0 if dense is None else dense.size
        total += 0 if sparse is None else 2 * sparse.indices.size
        total += 0 if colbert is None else colbert.size
        total += dense is None and sparse is None and colbert is None
    return total


async def respond(build: Callable[[], Any], values: int) -> Response:
    """`build()` returns the JSON-ready payload of about `values` numbers (`values_of`); it runs,
    with the serialisation, on the loop for a small answer, else in a worker thread."""
    if values <= INLINE_VALUES:
        body = encode(build())
    else:
        body = await asyncio.to_thread(lambda: encode(build()))
    return Response(body, media_type="application/json")
