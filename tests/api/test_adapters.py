"""The LangChain and LlamaIndex adapters, used through each framework's own interfaces, against a
real server on loopback (the fake backend behind it: equal texts get equal vectors)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.conftest import fake_engine
from tests.api.live import LiveServer

TEXTS = ["the cat sat on the mat", "stocks rose on monday", "a recipe for bread", "rain is expected"]


@pytest.fixture(scope="module")
def live(bge_m3_dir: Path) -> Iterator[tuple[str, Engine]]:
    engine = fake_engine(bge_m3_dir)
    with LiveServer([engine], ServerSettings()) as server:
        yield server.url, engine


def test_langchain_embeddings_and_a_vector_store(live: tuple[str, Engine]) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.vectorstores import InMemoryVectorStore

    from m3engine.client.langchain import M3Embeddings

    url, engine = live
    embeddings = M3Embeddings(url, batch_size=3)
    docs = embeddings.embed_documents(TEXTS)
    direct = engine.embed(TEXTS)
    assert len(docs) == 4 and all(len(v) == engine.spec.hidden_size for v in docs)
    np.testing.assert_allclose(docs[2], direct[2].dense, atol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(
        embeddings.embed_query(TEXTS[0]),
        engine.embed([TEXTS[0]], input_type="query")[0].dense,  # type: ignore[arg-type]
        atol=1e-6,
    )
    store = InMemoryVectorStore.from_texts(TEXTS, embeddings)
    assert store.similarity_search(TEXTS[1], k=1)[0].page_content == TEXTS[1]


@pytest.mark.anyio
async def test_langchain_async_embeddings(live: tuple[str, Engine]) -> None:
    pytest.importorskip("langchain_core")
    from m3engine.client.langchain import M3Embeddings

    url, _ = live
    embeddings = M3Embeddings(url)
    docs = await embeddings.aembed_documents(TEXTS)
    assert np.allclose(docs, embeddings.embed_documents(TEXTS), atol=1e-6)
    assert np.allclose(await embeddings.aembed_query("q"), embeddings.embed_query("q"), atol=1e-6)


def test_langchain_qdrant_hybrid_retrieval(live: tuple[str, Engine]) -> None:
    pytest.importorskip("langchain_qdrant")
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    from m3engine.client.langchain import M3Embeddings
    from m3engine.client.langchain_qdrant import M3SparseEmbeddings

    url, engine = live
    sparse = M3SparseEmbeddings(url)
    vectors = sparse.embed_documents(TEXTS)
    want = engine.embed(TEXTS, dense=False, sparse=True)
    assert vectors[3].indices == want[3].sparse.indices.tolist()  # type: ignore[union-attr]
    store = QdrantVectorStore.from_texts(
        TEXTS,
        M3Embeddings(url),
        sparse_embedding=sparse,
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="hybrid",
    )
    assert store.similarity_search(TEXTS[2], k=1)[0].page_content == TEXTS[2]
    sparse_only = QdrantVectorStore.from_texts(
        TEXTS, sparse_embedding=sparse, retrieval_mode=RetrievalMode.SPARSE, location=":memory:"
    )
    assert sparse_only.similarity_search("stocks rose", k=1)[0].page_content == TEXTS[1]


@pytest.mark.anyio
async def test_llamaindex_embedding_and_a_retriever(live: tuple[str, Engine]) -> None:
    pytest.importorskip("llama_index.core")  # llama-index-core is heavy (~400 MB): not in the test extra
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from m3engine.client.llamaindex import M3Embedding

    url, engine = live
    model = M3Embedding(base_url=url, embed_batch_size=3)
    batch = model.get_text_embedding_batch(TEXTS)
    np.testing.assert_allclose(batch[3], engine.embed(TEXTS)[3].dense, atol=1e-6)  # type: ignore[arg-type]
    query = model.get_query_embedding(TEXTS[0])
    np.testing.assert_allclose(query, engine.embed([TEXTS[0]], input_type="query")[0].dense, atol=1e-6)  # type: ignore[arg-type]
    assert np.allclose(await model.aget_query_embedding(TEXTS[0]), query, atol=1e-6)
    assert np.allclose(await model.aget_text_embedding_batch(TEXTS), batch, atol=1e-6)
    index = VectorStoreIndex([TextNode(text=t) for t in TEXTS], embed_model=model)
    hits = index.as_retriever(similarity_top_k=1).retrieve(TEXTS[3])
    assert hits[0].node.get_content() == TEXTS[3]


def test_a_missing_framework_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import importlib
    import sys

    real_import = builtins.__import__

    def no_frameworks(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith(("langchain_core", "langchain_qdrant", "llama_index")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_frameworks)
    for module, extra in [
        ("m3engine.client.langchain", "m3engine[langchain]"),
        ("m3engine.client.langchain_qdrant", "m3engine[langchain-qdrant]"),
        ("m3engine.client.llamaindex", "m3engine[llamaindex]"),
    ]:
        monkeypatch.delitem(sys.modules, module, raising=False)
        with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
            importlib.import_module(module)
