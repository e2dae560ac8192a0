"""JSON responses built off the event loop.

A response of many float vectors (ColBERT rows are ~1,000 floats per token) takes seconds to turn
into JSON; done on the event loop it would stall the worker's coroutine and leave the device idle
(1.46 s for a 176 MB embed_m3 answer measured in-process; base64 of the same took 0.36 s). Shaping
and serialising run in a thread instead, which lets the loop keep launching batches (TEI fans results
out in spawn_blocking for the same reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Response
from pydantic_core import to_json  # Rust: about 6x faster than json.dumps on float lists


async def respond(build: Callable[[], Any]) -> Response:
    """`build()` returns the JSON-ready payload; it runs, with the serialisation, in a worker thread."""
    body = await asyncio.to_thread(lambda: to_json(build()))
    return Response(body, media_type="application/json")
