"""LlamaIndex `BaseEmbedding` over an m3engine server: BGE-M3's dense vectors, queries with the
query policy and texts with the passage policy.

    from m3engine.client.llamaindex import M3Embedding
    index = VectorStoreIndex(nodes, embed_model=M3Embedding(base_url="http://127.0.0.1:8080"))

Needs llama-index-core: `pip install 'm3engine[llamaindex]'`.
"""

from __future__ import annotations

from typing import Any, Literal

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import Field, PrivateAttr
except ImportError as error:
    raise ImportError(
        "m3engine.client.llamaindex needs llama-index-core; install it with: "
        "pip install 'm3engine[llamaindex]'"
    ) from error

from m3engine.client.adapters import dense_lists
from m3engine.client.aio import AsyncClient
from m3engine.client.calls import DEFAULT_URL, ClientSettings
from m3engine.client.sync import Client


class M3Embedding(BaseEmbedding):
    base_url: str = Field(default=DEFAULT_URL, description="The m3engine server.")
    served_model: str | None = Field(
        default=None, description="A served model's name, sent as `model`; default: the server's."
    )
    api_key: str | None = Field(default=None, exclude=True)
    dimensions: int | None = Field(default=None, description="Keep the first N values, re-normalised.")
    timeout: float = 60.0
    _client: Client = PrivateAttr()
    _async: AsyncClient | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        data.setdefault("model_name", "m3engine")
        data.setdefault("embed_batch_size", 256)  # texts per request; the server batches across them
        super().__init__(**data)
        self._client = Client.from_settings(self._settings())

    @classmethod
    def class_name(cls) -> str:
        return "M3Embedding"

    def _settings(self) -> ClientSettings:
        # LlamaIndex's own names as pydantic fields, so not a ClientSettings subclass as LangChain's are
        return ClientSettings(
            self.base_url,
            model=self.served_model,
            api_key=self.api_key,
            timeout=self.timeout,
            batch_size=self.embed_batch_size,
        )

    def _dense(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[list[float]]:
        return dense_lists(
            self._client.embed(texts, sparse=False, input_type=input_type, dimensions=self.dimensions)
        )

    async def _adense(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[list[float]]:
        if self._async is None:  # made inside the caller's event loop
            self._async = AsyncClient.from_settings(self._settings())
        records = await self._async.embed(
            texts, sparse=False, input_type=input_type, dimensions=self.dimensions
        )
        return dense_lists(records)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._dense([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._adense([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._dense([text], "passage")[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._adense([text], "passage"))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._dense(texts, "passage")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._adense(texts, "passage")
