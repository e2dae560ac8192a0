from __future__ import annotations

import asyncio

import numpy as np

import m3engine
from m3engine import Engine
from tests.texts import LONG, MULTILINGUAL


def test_a_text_embeds_the_same_alone_and_in_a_mixed_batch(bge_m3: Engine) -> None:
    mixed = ["a", LONG, *MULTILINGUAL[:4], LONG[:300], "hello hello"]
    together = bge_m3.embed(mixed, sparse=True, colbert=True)
    for i, text in enumerate(mixed):
        (alone,) = bge_m3.embed([text], sparse=True, colbert=True)
        np.testing.assert_allclose(together[i].dense, alone.dense, atol=1e-6)
        np.testing.assert_allclose(together[i].colbert, alone.colbert, atol=1e-5)
        assert together[i].sparse.indices.tolist() == alone.sparse.indices.tolist()
        np.testing.assert_allclose(together[i].sparse.values, alone.sparse.values, atol=1e-5)


def test_one_record_per_input_in_input_order_across_many_batches(bge_m3_dir: str) -> None:
    small = Engine.load(str(bge_m3_dir), max_batch_tokens=64, max_batch_size=3)
    texts = [MULTILINGUAL[i % len(MULTILINGUAL)] + f" {i}" for i in range(40)]
    batched = small.embed(texts)
    assert [r.index for r in batched] == list(range(40))
    single = [small.embed([t])[0].dense for t in texts[:5]]
    np.testing.assert_allclose(np.stack([r.dense for r in batched[:5]]), np.stack(single), atol=1e-6)


def test_query_instruction_and_query_length(bge_m3_dir: str) -> None:
    engine = Engine.load(str(bge_m3_dir), query_instruction="query: ", query_max_length=16)
    (as_query,) = engine.embed([LONG], input_type="query")
    (prefixed,) = engine.embed(["query: " + LONG], max_length=16)
    assert as_query.num_tokens == 16 and as_query.truncated
    np.testing.assert_allclose(as_query.dense, prefixed.dense, atol=1e-6)


def test_async_forms_give_the_sync_results(bge_m3: Engine, reranker: Engine) -> None:
    async def run() -> tuple[list[m3engine.Embedding], list[m3engine.RerankResult]]:
        return await asyncio.gather(bge_m3.aembed(["x", "y"]), reranker.arerank("q", ["a", "b", "c"]))

    embedded, ranked = asyncio.run(run())
    np.testing.assert_allclose(embedded[1].dense, bge_m3.embed(["y"])[0].dense, atol=1e-6)
    assert [r.index for r in ranked] == [r.index for r in reranker.rerank("q", ["a", "b", "c"])]


def test_json_forms(bge_m3: Engine) -> None:
    (record,) = bge_m3.embed(["hello world"], sparse=True, colbert=True)
    data = record.to_json()
    assert set(data) == {"index", "num_tokens", "truncated", "dense", "sparse", "colbert"}
    assert len(data["colbert"]) == record.num_tokens - 1 and isinstance(data["dense"][0], float)
    (score,) = bge_m3.score([("hello", "hello world")])
    assert score.to_json()["colbert+sparse+dense"] == score.colbert_sparse_dense


def test_public_surface_is_all() -> None:
    import inspect

    names = [n for n in dir(m3engine) if not n.startswith("_")]  # dir: Engine is imported on first use
    public = {n for n in names if not inspect.ismodule(getattr(m3engine, n))}
    assert sorted(m3engine.__all__) == sorted(public)
