"""JSON responses built off the event loop, in pieces.

A response of many float vectors (ColBERT rows are ~1,000 floats per token) takes a second or more
to turn into JSON. Done on the event loop, it would stall the coroutine that launches batches and
leave the device idle; TEI fans results out in spawn_blocking for the same reason. Here shaping and
serialising run in a thread, and the serialiser (pydantic-core, ~6x faster than json.dumps on float
lists) is called once per record: it holds the GIL while it runs, so one call for the whole answer
would still block the loop for its full length. `docs/bench/server-cpu/loop_stall.py` measures it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Response
from pydantic_core import to_json


def encode(payload: Any) -> bytes:
    """JSON bytes of `payload`, serialising a top-level list or a "data" list element by element."""
    if isinstance(payload, list):
        return b"[" + b",".join(to_json(item) for item in payload) + b"]"
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        head = to_json({k: v for k, v in payload.items() if k != "data"})  # b'{...}'
        joiner = b"," if len(head) > 2 else b""
        return head[:-1] + joiner + b'"data":' + encode(payload["data"]) + b"}"
    return to_json(payload)


async def respond(build: Callable[[], Any]) -> Response:
    """`build()` returns the JSON-ready payload; it runs, with the serialisation, in a worker thread."""
    body = await asyncio.to_thread(lambda: encode(build()))
    return Response(body, media_type="application/json")
