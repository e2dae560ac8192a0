"""A small HTTP client for an m3engine server: BGE-M3's dense, sparse and ColBERT outputs from one
call, hybrid scores and reranking, which OpenAI's SDK cannot ask for. Needs only httpx and numpy
(never torch): `pip install 'm3engine[client]'` on a machine that only calls a server.

    from m3engine.client import Client
    with Client("http://127.0.0.1:8080") as client:
        e = client.embed(["BGE-M3 gives three outputs"], sparse=True)[0]
        e.dense, e.sparse.to_pgvector(250002), e.sparse.to_qdrant()

Framework adapters beside it, each an extra: `m3engine.client.langchain` (LangChain `Embeddings`),
`m3engine.client.langchain_qdrant` (sparse embeddings for Qdrant hybrid retrieval),
`m3engine.client.llamaindex` (LlamaIndex `BaseEmbedding`).
"""

from m3engine.client.aio import AsyncClient
from m3engine.client.calls import ClientSettings
from m3engine.client.protocol import RankedDocument, ServerError
from m3engine.client.sync import Client

__all__ = ["AsyncClient", "Client", "ClientSettings", "RankedDocument", "ServerError"]
