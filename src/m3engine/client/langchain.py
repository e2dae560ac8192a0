"""LangChain `Embeddings` over an m3engine server: BGE-M3's dense vectors, queries embedded with the
query policy (instruction and length) and documents with the passage policy.

    from m3engine.client.langchain import M3Embeddings
    embeddings = M3Embeddings("http://127.0.0.1:8080")
    vectors = embeddings.embed_documents(["a passage"]); query = embeddings.embed_query("a question")

Needs langchain-core: `pip install 'm3engine[langchain]'`. Sparse weights for Qdrant's hybrid
retrieval: `m3engine.client.langchain_qdrant.M3SparseEmbeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # the adapter is optional; the rest of m3engine.client is not
    raise ImportError(
        "m3engine.client.langchain needs langchain-core; install it with: pip install 'm3engine[langchain]'"
    ) from error

from m3engine.client.adapters import ClientAdapter, dense_lists


# a dataclass, as ClientAdapter: the clients' constructor arguments are its own
@dataclass(eq=False, kw_only=True)
class M3Embeddings(ClientAdapter, Embeddings):
    """`model`: a served model's name (default: the server's embedding model); `dimensions`: keep
    the first N values of each vector (then re-normalised)."""

    dimensions: int | None = None

    def _dense(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[list[float]]:
        return dense_lists(
            self.client.embed(texts, sparse=False, input_type=input_type, dimensions=self.dimensions)
        )

    async def _adense(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[list[float]]:
        records = await self.async_client.embed(
            texts, sparse=False, input_type=input_type, dimensions=self.dimensions
        )
        return dense_lists(records)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._dense(texts, "passage")

    def embed_query(self, text: str) -> list[float]:
        return self._dense([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._adense(texts, "passage")

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._adense([text], "query"))[0]
