"""m3engine's own routes: BGE-M3's three outputs from one pass, hybrid scores, and classification."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from m3engine.server.respond import respond, values_of
from m3engine.server.routes import vectors
from m3engine.server.routes.inputs import TextsRequest
from m3engine.server.submit import submit
from m3engine.sparse_formats import SparseFormat, SparseStyle
from m3engine.tasks.options import ClassifyOptions, EmbedOptions, ScoreOptions

router = APIRouter(tags=["m3engine"])


class EmbedM3Request(TextsRequest):
    model: str | None = None
    inputs: str | list[str]
    return_dense: bool = True
    return_sparse: bool = True
    return_colbert: bool = False
    input_type: Literal["query", "passage"] = "passage"
    max_length: int | None = Field(None, ge=3)
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    sparse_format: SparseStyle = Field(
        "indices_values",
        description="indices_values (Qdrant, Milvus), tei, flag_dict, pgvector (sparsevec text, 1-based), "
        "elasticsearch (sparse_vector / rank_features object), vespa (mapped tensor short form).",
    )
    sparse_top_k: int | None = Field(None, ge=1, description="Keep only the k largest lexical weights.")
    return_tokens: bool = Field(
        False,
        description="Token strings: a `tokens` list beside indices_values; the keys of elasticsearch "
        "and vespa (instead of token ids).",
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: dense as float32, ColBERT as float16 (rows x dim, row-major)."
    )


@router.post("/v1/embed_m3", summary="BGE-M3 dense, sparse and ColBERT outputs from one forward pass")
async def embed_m3(body: EmbedM3Request, request: Request) -> Response:
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    options = EmbedOptions(
        dense=body.return_dense,
        sparse=body.return_sparse,
        colbert=body.return_colbert,
        input_type=body.input_type,
        max_length=body.max_length,
        truncate=body.truncate,
        dimensions=body.dimensions,
    )
    records, served = await submit(
        request, body.model, "m3", lambda t: t.embed(texts, options), [len(x) for x in texts]
    )
    tokenizer = served.engine.tokenizer
    sparse_format = SparseFormat(
        body.sparse_format,
        dim=served.engine.spec.vocab_size,
        token_of=tokenizer.id_to_token if body.return_tokens else None,
        top_k=body.sparse_top_k,
    )

    def build() -> dict[str, object]:
        data = []
        for r in records:
            item: dict[str, object] = {"index": r.index, "num_tokens": r.num_tokens, "truncated": r.truncated}
            if r.dense is not None:
                item["dense"] = vectors.vector(r.dense, body.encoding_format)
            if r.sparse is not None:
                item["sparse"] = sparse_format.render(r.sparse)
            if r.colbert is not None:
                item["colbert"] = vectors.multi_vector(r.colbert, body.encoding_format)
            data.append(item)
        used = sum(r.num_tokens for r in records)
        return {
            "object": "list",
            "data": data,
            "model": served.name,
            "usage": {"prompt_tokens": used, "total_tokens": used},
            "created": int(time.time()),
        }

    return await respond(build, values_of(records))


class ScoreRequest(BaseModel):
    model: str | None = None
    pairs: list[tuple[str, str]] = Field(description="(query, passage) pairs.")
    weights: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="Weights of dense, sparse, ColBERT."
    )


@router.post(
    "/v1/score", summary="BGE-M3 hybrid scores of (query, passage) pairs (FlagEmbedding compute_score)"
)
async def score(body: ScoreRequest, request: Request) -> dict[str, object]:
    pairs = [list(p) for p in body.pairs]
    options = ScoreOptions(weights=body.weights)
    results, served = await submit(
        request,
        body.model,
        "m3",
        lambda t: t.score(pairs, options),
        [len(q) + len(p) for q, p in body.pairs],
    )
    return {
        "object": "list",
        "data": [{"index": i, "object": "score", **s.to_json()} for i, s in enumerate(results)],
        "model": served.name,
    }


class ClassifyRequest(TextsRequest):
    model: str | None = None
    input: str | list[str]
    raw_scores: bool = False
    truncate: bool = True


@router.post("/classify", summary="Labels of texts (Infinity-style)")
async def classify(body: ClassifyRequest, request: Request) -> dict[str, object]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    options = ClassifyOptions(truncate=body.truncate, raw_scores=body.raw_scores)
    records, served = await submit(
        request, body.model, "classify", lambda t: t.classify(texts, options), [len(x) for x in texts]
    )
    tokens = sum(r.num_tokens for r in records)
    return {
        "object": "classify",
        "data": [vectors.label_scores(r.scores) for r in records],
        "model": served.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
