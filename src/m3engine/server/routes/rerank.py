"""Cohere (v1, v2) and Jina rerank: POST /v1/rerank and /v2/rerank (shapes: reference/api.md b.6, b.7).

Scores are sigmoid(logit) in [0, 1], as Cohere and Jina return them; `raw_scores` gives the logit.
Both versions answer with the union of the Cohere and Jina fields (id, results, meta, model, usage),
which each client's parser accepts.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from m3engine.results import RerankResult
from m3engine.scheduling.admission import estimate_window_tokens
from m3engine.server.fields import Count, Flag, Text, Texts
from m3engine.server.respond import respond, values_of
from m3engine.server.submit import server_state, submit
from m3engine.tasks.builder import Prepared, TaskBuilder
from m3engine.tasks.options import MIN_LENGTH, RerankOptions

router = APIRouter(tags=["Cohere / Jina"])


# The smallest pair cap that leaves room for the shortest query share (MIN_LENGTH), a document token
# and the special tokens of a pair (4 for XLM-R: <s> q </s></s> d </s>).
MIN_TOKENS_PER_DOC = 8


class TextDocument(BaseModel):
    text: Text


class RerankRequest(BaseModel):
    model: Text | None = Field(None, description="A served reranker; the default one when omitted.")
    query: Text
    documents: Annotated[list[Text | TextDocument], Field(fail_fast=True)]
    top_n: Count | None = Field(None, ge=1)
    return_documents: Flag = False
    max_tokens_per_doc: Count | None = Field(
        None,
        ge=MIN_TOKENS_PER_DOC,
        description="Cap on the tokens of (query, document); default: the model's limit.",
    )
    max_chunks_per_doc: Count | None = Field(
        None,
        ge=1,
        description="Above 1, a long document is scored as up to this many windows (each beside the "
        "query) and its best window wins; a document has no more windows than its length gives.",
    )
    rank_fields: Texts | None = None
    raw_scores: Flag = False


async def _rerank(body: RerankRequest, request: Request, version: Literal["1", "2"]) -> Response:
    docs = [d if isinstance(d, str) else d.text for d in body.documents]
    options = RerankOptions(
        top_n=body.top_n, normalize=not body.raw_scores, max_chunks_per_doc=body.max_chunks_per_doc
    )

    def prepare(t: TaskBuilder) -> Prepared[list[RerankResult]]:
        # Cohere's max_tokens_per_doc bounds the pair, within the model's limit (so it needs the
        # model); FlagReranker's policy keeps the query's share, but never all of a small cap: the
        # client set no query limit, so none may be the reason for a refusal.
        if body.max_tokens_per_doc is None:
            return t.rerank(body.query, docs, options)
        limit = min(t.max_length, body.max_tokens_per_doc)
        share = t.settings.query_max_length or limit * 3 // 4
        query_max = max(MIN_LENGTH, min(share, limit - t.tokenizer.pair_specials - 1))
        return t.rerank(body.query, docs, replace(options, max_length=limit, query_max_length=query_max))

    sizes = [len(body.query) + len(d) for d in docs]
    tokens = None
    if options.chunked:
        # A document runs as up to max_chunks_per_doc windows, but never more than it has tokens:
        # the bound is computed from its length, whatever number was asked for.
        assert options.max_chunks_per_doc is not None
        cap = server_state(request).resolve(body.model, "rerank").engine.max_length
        cap = min(cap, body.max_tokens_per_doc or cap)
        tokens = estimate_window_tokens(len(body.query), map(len, docs), options.max_chunks_per_doc, cap)
    results, served = await submit(
        request, body.model, "rerank", prepare, sizes, inputs=len(docs), tokens=tokens
    )
    tokens = sum(r.num_tokens for r in results)
    shaped = []
    for r in results:
        item: dict[str, object] = {"index": r.index, "relevance_score": r.score}
        if body.return_documents:
            item["document"] = {"text": docs[r.index]}
        shaped.append(item)
    api_version: dict[str, object] = {"version": version}
    if version == "2":
        api_version["is_experimental"] = False
    payload = {
        "id": str(uuid.uuid4()),
        "results": shaped,
        "meta": {"api_version": api_version, "billed_units": {"search_units": 1}},
        "model": served.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return await respond(lambda: payload, values_of(results))


@router.post("/v1/rerank", summary="Rerank documents (Cohere v1, Jina)")
async def rerank_v1(body: RerankRequest, request: Request) -> Response:
    return await _rerank(body, request, "1")


@router.post("/v2/rerank", summary="Rerank documents (Cohere v2)")
async def rerank_v2(body: RerankRequest, request: Request) -> Response:
    return await _rerank(body, request, "2")
