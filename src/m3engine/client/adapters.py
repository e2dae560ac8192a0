"""What the framework adapters (langchain.py, langchain_qdrant.py, llamaindex.py) share; needs no
framework itself, so that each adapter's own import is the one that names its missing extra."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from m3engine.client.aio import AsyncClient
from m3engine.client.calls import ClientSettings
from m3engine.client.sync import Client
from m3engine.results import Embedding


# a dataclass over ClientSettings: an adapter takes the clients' own constructor arguments
@dataclass(eq=False, kw_only=True)
class ClientAdapter(ClientSettings):
    """An adapter's clients: `client` made at once, `async_client` on first use."""

    def __post_init__(self) -> None:
        self.client = Client.from_settings(self)

    @cached_property  # made inside the caller's event loop: an httpx.AsyncClient stays in its first
    def async_client(self) -> AsyncClient:
        return AsyncClient.from_settings(self)


def dense_lists(records: list[Embedding]) -> list[list[float]]:
    """The dense vectors as lists of floats, as LangChain and LlamaIndex want them."""
    return [r.dense.tolist() for r in records if r.dense is not None]
