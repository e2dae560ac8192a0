"""text-embeddings-inference's routes (shapes: reference/api.md b.2).

/embed_sparse returns BGE-M3's sparse head in TEI's [{index, value}] shape; /embed_all returns
BGE-M3's per-token ColBERT vectors (the model's multi-vector output), not raw hidden states.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from tokenizers import Encoding

from m3engine.errors import InputError
from m3engine.results import Classification, Embedding
from m3engine.scheduling.admission import estimate_tokens
from m3engine.server.fields import Count, Flag, Text, TextOrTexts, Texts, TokenIdLists, TokenIds
from m3engine.server.respond import respond, values_of
from m3engine.server.routes import vectors
from m3engine.server.routes.inputs import TextsRequest
from m3engine.server.routes.tokens import decode_ids, tokenize_detail
from m3engine.server.submit import check_count, server_state, submit
from m3engine.tasks.answer_size import token_details_bytes
from m3engine.tasks.builder import Prepared, TaskBuilder
from m3engine.tasks.options import ClassifyOptions, EmbedOptions, RerankOptions
from m3engine.tokenization.tokenizer import check_texts

router = APIRouter(tags=["TEI"])
Inputs = str | list[str]


class EmbedRequest(TextsRequest):
    inputs: TextOrTexts
    truncate: Flag = True
    truncation_direction: Literal["right", "Right"] = Field(
        "right", description="Only right truncation is supported."
    )
    prompt_name: None = Field(None, description="Prompts are not supported; use input_type on /v1/embed_m3.")
    normalize: Flag = True
    dimensions: Count | None = Field(None, ge=1)
    model: Text | None = None


def _texts(inputs: Inputs) -> list[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


async def _embedded(
    request: Request, body: EmbedRequest, task: str, options: EmbedOptions
) -> list[Embedding]:
    """The records of one TEI embedding request: the routes differ only in the outputs they ask for."""
    texts = _texts(body.inputs)
    records, _ = await submit(
        request, body.model, task, lambda t: t.embed(texts, options), [len(x) for x in texts]
    )
    return records


@router.post("/embed", summary="Dense embeddings (TEI)")
async def embed(body: EmbedRequest, request: Request) -> Response:
    records = await _embedded(
        request,
        body,
        "embed",
        EmbedOptions(truncate=body.truncate, normalize=body.normalize, dimensions=body.dimensions),
    )
    return await respond(lambda: [r.dense for r in records if r.dense is not None], values_of(records))


@router.post("/embed_sparse", summary="BGE-M3 sparse weights as [{index, value}] (TEI)")
async def embed_sparse(body: EmbedRequest, request: Request) -> Response:
    records = await _embedded(
        request, body, "m3", EmbedOptions(dense=False, sparse=True, truncate=body.truncate)
    )
    return await respond(
        lambda: [vectors.sparse(r.sparse, "tei") for r in records if r.sparse is not None],
        values_of(records),
    )


@router.post("/embed_all", summary="BGE-M3 ColBERT vectors per token (TEI's embed_all shape)")
async def embed_all(body: EmbedRequest, request: Request) -> Response:
    records = await _embedded(
        request, body, "m3", EmbedOptions(dense=False, colbert=True, truncate=body.truncate)
    )
    return await respond(lambda: [r.colbert for r in records if r.colbert is not None], values_of(records))


class RerankRequest(BaseModel):
    query: Text
    texts: Texts
    truncate: Flag = True
    truncation_direction: Literal["right", "Right"] = "right"
    raw_scores: Flag = False
    return_text: Flag = False
    model: Text | None = None


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
    inputs: Annotated[
        Text | Texts | Annotated[list[Texts], Field(fail_fast=True)], Field(union_mode="left_to_right")
    ]
    truncate: Flag = True
    raw_scores: Flag = False
    model: Text | None = None


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
    inputs: TextOrTexts
    add_special_tokens: Flag = True
    prompt_name: None = None
    model: Text | None = None


@router.post("/tokenize", summary="Tokens of each input (TEI), cut to the model's token limit")
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    state = server_state(request)
    texts = _texts(body.inputs)
    check_count(state, len(texts))
    served = state.resolve(body.model, "tokenize")
    tokenizer, limit = served.engine.tokenizer, served.engine.max_length

    def encode() -> list[Encoding]:
        check_texts(texts)
        return [tokenizer.encoding(x, body.add_special_tokens, limit) for x in texts]

    # The tokenizer pool is shared with the embedding path: admission bounds its queue here too,
    # and the answer's memory (an object per token) is admitted before it is built.
    permit = state.admission.reserve(estimate_tokens([len(x) for x in texts], limit))
    try:
        encodings = await asyncio.get_running_loop().run_in_executor(state.tokenize_pool, encode)
    finally:
        permit.release()
    tokens = sum(len(e) for e in encodings)
    hold = state.admission.reserve_answer(token_details_bytes(tokens, len(texts)))
    request.scope["state"].setdefault("answer_holds", []).append(hold)  # released once sent
    return await respond(lambda: [tokenize_detail(e) for e in encodings], 5 * tokens)


class DecodeRequest(BaseModel):
    ids: Annotated[TokenIds | TokenIdLists, Field(union_mode="left_to_right")]
    skip_special_tokens: Flag = True
    model: Text | None = None


@router.post("/decode", summary="Texts of token ids (TEI)")
async def decode(body: DecodeRequest, request: Request) -> list[str]:
    state = server_state(request)
    seqs = [body.ids] if body.ids and isinstance(body.ids[0], int) else body.ids
    check_count(state, len(seqs))
    served = state.resolve(body.model, "tokenize")
    return [decode_ids(served.engine.tokenizer, s, body.skip_special_tokens) for s in seqs]  # type: ignore[arg-type]
