"""OpenAI's embeddings API: POST /v1/embeddings, GET /v1/models (shapes: reference/api.md b.1)."""

from __future__ import annotations

import time
import uuid
from typing import Literal, cast

from fastapi import APIRouter, Request, Response
from pydantic import Field

from m3engine.server.respond import respond, values_of
from m3engine.server.routes import vectors
from m3engine.server.routes.inputs import TextsRequest
from m3engine.server.submit import server_state, submit
from m3engine.tasks.options import EmbedOptions

router = APIRouter(tags=["OpenAI"])

TokenIds = list[int]


class EmbeddingsRequest(TextsRequest):
    input: str | list[str] | TokenIds | list[TokenIds] = Field(
        description="A text, a list of texts, a token-id list, or a list of token-id lists."
    )
    model: str | None = Field(None, description="A served model; the default embedding model when omitted.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N values (then re-normalise).")
    user: str | None = None
    input_type: Literal["query", "passage"] = Field(
        "passage", description="m3engine: query applies the query policy."
    )
    truncate: bool = Field(True, description="m3engine: cut inputs over the token limit instead of failing.")


def _as_ids(value: object) -> list[list[int]] | None:
    """OpenAI's token-id forms as a list of sequences; None when the input is text."""
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return [list(value)]
    if isinstance(value, list) and value and all(isinstance(s, list) for s in value):
        return [list(s) for s in value]
    return None


@router.post("/v1/embeddings", summary="Create embeddings (OpenAI-compatible)")
async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    ids = _as_ids(body.input)
    # token ids run as given: input_type (the query instruction and length) applies to texts only
    options = EmbedOptions(input_type=body.input_type, truncate=body.truncate, dimensions=body.dimensions)
    if ids is not None:
        records, served = await submit(
            request, body.model, "embed", lambda t: t.embed_ids(ids, options), [len(s) for s in ids]
        )
    else:
        # Not token ids, so a text or a list of texts (pydantic rejects mixed lists).
        texts = [body.input] if isinstance(body.input, str) else cast(list[str], list(body.input))
        records, served = await submit(
            request, body.model, "embed", lambda t: t.embed(texts, options), [len(x) for x in texts]
        )
    tokens = sum(r.num_tokens for r in records)

    def build() -> dict[str, object]:
        data = [
            {
                "object": "embedding",
                "index": r.index,
                "embedding": vectors.vector(r.dense, body.encoding_format),
            }
            for r in records
            if r.dense is not None
        ]
        return {
            "object": "list",
            "data": data,
            "model": served.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "id": f"embd-{uuid.uuid4().hex}",
            "created": int(time.time()),
        }

    return await respond(build, values_of(records))


@router.get("/v1/models", summary="List served models (OpenAI-compatible)")
async def models(request: Request) -> dict[str, object]:
    state = server_state(request)
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": m.created,
                "owned_by": "m3engine",
                "kind": m.kind.value,
                "root": m.name,  # vLLM's field: aliases of one model share it
            }
            for m in state.models
            for name in m.names
        ],
    }
