"""`sparse_format` on /v1/embed_m3: each store's form, the same weights as indices_values."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from m3engine.engine import Engine
from m3engine.types import SparseVector

pytestmark = pytest.mark.anyio
TEXTS = ["hello world.", "a second, longer text about the U.S. economy"]


async def _sparse(client: httpx.AsyncClient, fmt: str, **extra: object) -> list[object]:
    body = {"inputs": TEXTS, "return_dense": False, "sparse_format": fmt, **extra}
    r = await client.post("/v1/embed_m3", json=body)
    assert r.status_code == 200, r.text
    return [item["sparse"] for item in r.json()["data"]]


async def test_each_store_format_carries_the_same_weights(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    base = [
        SparseVector.from_lists(s["indices"], s["values"]) for s in await _sparse(client, "indices_values")
    ]  # type: ignore[index]
    dim = m3_fake.spec.vocab_size
    assert await _sparse(client, "pgvector") == [w.to_pgvector(dim) for w in base]
    assert await _sparse(client, "elasticsearch") == [w.to_elasticsearch() for w in base]
    assert await _sparse(client, "vespa") == [w.to_vespa() for w in base]
    assert await _sparse(client, "flag_dict") == [w.to_dict() for w in base]
    pg = (await _sparse(client, "pgvector"))[0]
    assert isinstance(pg, str) and pg.endswith(f"}}/{dim}")
    assert pg.startswith(f"{{{int(base[0].indices[0]) + 1}:")  # 1-based


async def test_token_keys_and_top_k(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    tokens = await _sparse(client, "elasticsearch", return_tokens=True, sparse_top_k=3)
    ids = await _sparse(client, "indices_values", return_tokens=True, sparse_top_k=3)
    for keyed, plain in zip(tokens, ids, strict=True):
        assert isinstance(keyed, dict) and isinstance(plain, dict)
        assert list(keyed) == plain["tokens"] == [m3_fake.tokenizer.id_to_token(i) for i in plain["indices"]]
        np.testing.assert_allclose(list(keyed.values()), plain["values"])
    assert all(len(k) == 3 for k in await _sparse(client, "vespa", sparse_top_k=3))  # type: ignore[arg-type]


async def test_an_unknown_format_is_a_422_naming_the_choices(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embed_m3", json={"inputs": "x", "sparse_format": "solr"})
    assert r.status_code == 422 and "pgvector" in r.json()["error"]["message"]
