"""langchain-qdrant's `SparseEmbeddings` over an m3engine server: BGE-M3's lexical weights, for
`QdrantVectorStore(..., retrieval_mode=RetrievalMode.HYBRID)` beside `M3Embeddings`.

    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from m3engine.client.langchain import M3Embeddings
    from m3engine.client.langchain_qdrant import M3SparseEmbeddings
    store = QdrantVectorStore.from_texts(texts, M3Embeddings(url), sparse_embedding=M3SparseEmbeddings(url),
                                         retrieval_mode=RetrievalMode.HYBRID, location=":memory:")

Needs langchain-qdrant: `pip install 'm3engine[langchain-qdrant]'`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

try:
    from langchain_qdrant import SparseEmbeddings, SparseVector
except ImportError as error:
    raise ImportError(
        "m3engine.client.langchain_qdrant needs langchain-qdrant; install it with: "
        "pip install 'm3engine[langchain-qdrant]'"
    ) from error

from m3engine.client.adapters import ClientAdapter
from m3engine.results import Embedding


def _vectors(records: list[Embedding]) -> list[SparseVector]:
    return [SparseVector(**r.sparse.to_qdrant()) for r in records if r.sparse is not None]


# a dataclass, as ClientAdapter: the clients' constructor arguments are its own
@dataclass(eq=False, kw_only=True)
class M3SparseEmbeddings(ClientAdapter, SparseEmbeddings):
    """`top_k`: keep only the k largest weights of each text (smaller index, slightly lower recall)."""

    top_k: int | None = None

    def _sparse(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[SparseVector]:
        return _vectors(
            self.client.embed(texts, dense=False, sparse=True, input_type=input_type, sparse_top_k=self.top_k)
        )

    async def _asparse(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[SparseVector]:
        records = await self.async_client.embed(
            texts, dense=False, sparse=True, input_type=input_type, sparse_top_k=self.top_k
        )
        return _vectors(records)

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        return self._sparse(texts, "passage")

    def embed_query(self, text: str) -> SparseVector:
        return self._sparse([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        return await self._asparse(texts, "passage")

    async def aembed_query(self, text: str) -> SparseVector:
        return (await self._asparse([text], "query"))[0]
