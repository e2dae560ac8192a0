"""text-embeddings-inference's routes (shapes: reference/api.md b.2).

/embed_sparse returns BGE-M3's sparse head in TEI's [{index, value}] shape; /embed_all returns
BGE-M3's per-token ColBERT vectors (the model's multi-vector output), not raw hidden states.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from m3engine.errors import InputError
from m3engine.results import Classification
from m3engine.scheduling.admission import estimate_tokens
from m3engine.server.respond import respond, values_of
from m3engine.server.routes import vectors
from m3engine.server.routes.inputs import TextsRequest
from m3engine.server.routes.tokens import decode_ids, tokenize_detail
from m3engine.server.submit import check_count, server_state, submit
from m3engine.tasks.builder import Prepared, TaskBuilder
from m3engine.tasks.options import ClassifyOptions, EmbedOptions, RerankOptions

router = APIRouter(tags=["TEI"])
Inputs = str | list[str]


class EmbedRequest(TextsRequest):
    inputs: Inputs
    truncate: bool = True
    truncation_direction: Literal["right", "Right"] = Field(
        "right", description="Only right truncation is supported."
    )
    prompt_name: None = Field(None, description="Prompts are not supported; use input_type on /v1/embed_m3.")
    normalize: bool = True
    dimensions: int | None = Field(None, ge=1)
    model: str | None = None


def _texts(inputs: Inputs) -> list[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


@router.post("/embed", summary="Dense embeddings (TEI)")
async def embed(body: EmbedRequest, request: Request) -> Response:
    texts = _texts(body.inputs)
    options = EmbedOptions(truncate=body.truncate, normalize=body.normalize, dimensions=body.dimensions)
    records, _ = await submit(
        request, body.model, "embed", lambda t: t.embed(texts, options), [len(x) for x in texts]
    )
    return await respond(
        lambda: [r.dense.tolist() for r in records if r.dense is not None], values_of(records)
    )


@router.post("/embed_sparse", summary="BGE-M3 sparse weights as [{index, value}] (TEI)")
async def embed_sparse(body: EmbedRequest, request: Request) -> Response:
    texts = _texts(body.inputs)
    options = EmbedOptions(dense=False, sparse=True, truncate=body.truncate)
    records, _ = await submit(
        request, body.model, "m3", lambda t: t.embed(texts, options), [len(x) for x in texts]
    )
    return await respond(
        lambda: [vectors.sparse(r.sparse, "tei") for r in records if r.sparse is not None],
        values_of(records),
    )


@router.post("/embed_all", summary="BGE-M3 ColBERT vectors per token (TEI's embed_all shape)")
async def embed_all(body: EmbedRequest, request: Request) -> Response:
    texts = _texts(body.inputs)
    options = EmbedOptions(dense=False, colbert=True, truncate=body.truncate)
    records, _ = await submit(
        request, body.model, "m3", lambda t: t.embed(texts, options), [len(x) for x in texts]
    )
    return await respond(
        lambda: [r.colbert.tolist() for r in records if r.colbert is not None], values_of(records)
    )


class RerankRequest(BaseModel):
    query: str
    texts: list[str]
    truncate: bool = True
    truncation_direction: Literal["right", "Right"] = "right"
    raw_scores: bool = False
    return_text: bool = False
    model: str | None = None


@router.post("/rerank", summary="Rerank texts against a query (TEI)")
async def rerank(body: RerankRequest, request: Request) -> list[dict[str, object]]:
    options = RerankOptions(normalize=not body.raw_scores, truncate=body.truncate)
    results, _ = await submit(
        request,
        body.model,
        "rerank",
        lambda t: t.rerank(body.query, body.texts, options),
        [len(body.query) + len(x) for x in body.texts],
    )
    out: list[dict[str, object]] = []
    for r in results:
        item: dict[str, object] = {"index": r.index, "score": r.score}
        if body.return_text:
            item["text"] = body.texts[r.index]
        out.append(item)
    return out


class PredictRequest(TextsRequest):
    inputs: str | list[str] | list[list[str]]
    truncate: bool = True
    raw_scores: bool = False
    model: str | None = None


def _predict_items(inputs: str | list[str] | list[list[str]]) -> tuple[list[list[str]], bool]:
    """TEI's forms: "text" | ["text_a", "text_b"] (one pair) | [["a"], ["q", "doc"], ...] (a batch)."""
    if isinstance(inputs, str):
        return [[inputs]], True
    if len(inputs) == 2 and all(isinstance(x, str) for x in inputs):
        return [[str(x) for x in inputs]], True
    return [[x] if isinstance(x, str) else list(x) for x in inputs], False


@router.post("/predict", summary="Classify texts or text pairs (TEI)")
async def predict(
    body: PredictRequest, request: Request
) -> list[dict[str, object]] | list[list[dict[str, object]]]:
    items, single = _predict_items(body.inputs)
    if any(len(x) not in (1, 2) for x in items):
        raise InputError("each /predict input is one text or a [text_a, text_b] pair")
    pairs = all(len(x) == 2 for x in items)
    if not pairs and any(len(x) == 2 for x in items):
        raise InputError("a /predict batch must be all single texts or all pairs")

    options = ClassifyOptions(truncate=body.truncate, raw_scores=body.raw_scores)

    def prepare(t: TaskBuilder) -> Prepared[list[Classification]]:
        if pairs:
            return t.classify_pairs(items, options)
        return t.classify([x[0] for x in items], options)

    records, _ = await submit(
        request, body.model, "classify", prepare, [sum(len(s) for s in x) for x in items]
    )
    shaped = [vectors.label_scores(r.scores) for r in records]
    return shaped[0] if single else shaped


class TokenizeRequest(TextsRequest):
    inputs: Inputs
    add_special_tokens: bool = True
    prompt_name: None = None
    model: str | None = None


@router.post("/tokenize", summary="Tokens of each input (TEI)")
async def tokenize(body: TokenizeRequest, request: Request) -> list[list[dict[str, object]]]:
    state = server_state(request)
    texts = _texts(body.inputs)
    check_count(state, len(texts))
    served = state.resolve(body.model, "tokenize")
    tokenizer = served.engine.tokenizer

    def run() -> list[list[dict[str, object]]]:
        return [tokenize_detail(tokenizer, x, body.add_special_tokens) for x in texts]

    # The tokenizer pool is shared with the embedding path: admission bounds its queue here too.
    permit = state.admission.reserve(estimate_tokens([len(x) for x in texts], served.engine.spec.max_length))
    try:
        return await asyncio.get_running_loop().run_in_executor(state.tokenize_pool, run)
    finally:
        permit.release()


class DecodeRequest(BaseModel):
    ids: list[int] | list[list[int]]
    skip_special_tokens: bool = True
    model: str | None = None


@router.post("/decode", summary="Texts of token ids (TEI)")
async def decode(body: DecodeRequest, request: Request) -> list[str]:
    state = server_state(request)
    seqs = [body.ids] if body.ids and isinstance(body.ids[0], int) else body.ids
    check_count(state, len(seqs))
    served = state.resolve(body.model, "tokenize")
    return [decode_ids(served.engine.tokenizer, s, body.skip_special_tokens) for s in seqs]  # type: ignore[arg-type]
