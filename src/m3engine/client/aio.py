"""The asyncio client: `await AsyncClient("http://127.0.0.1:8080").embed(["text"], sparse=True)`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from m3engine.client import calls, protocol
from m3engine.client.calls import ClientSettings

P = ParamSpec("P")
T = TypeVar("T")


def awaitable(
    build: Callable[Concatenate[ClientSettings, P], calls.Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, list[T]]]:
    """The coroutine method that builds the call with the client's settings and sends its requests
    at once (up to `concurrency` in flight), since the server batches across requests anyway."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> list[T]:
        call = build(self, *args, **kwargs)

        async def one(offset: int, body: dict[str, Any]) -> list[T]:
            return call.read(await self._post(call.path, body), offset)

        parts = await asyncio.gather(*(one(offset, body) for offset, body in call.bodies))
        return [item for part in parts for item in part]

    return calls.as_method(build, method)


@dataclass(eq=False, kw_only=True)  # as ClientSettings: only base_url may be positional
class AsyncClient(ClientSettings):
    """The same calls as `Client`, awaitable; the batches of one `embed` call are sent at once (up
    to `concurrency`). `http`: a ready httpx client instead, with its own base_url, headers and
    transport."""

    concurrency: int = 4
    # None only until __post_init__ opens one, so typed as the client every method may rely on
    http: httpx.AsyncClient = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.http = self.http or httpx.AsyncClient(**self.http_options())
        self._slots = asyncio.Semaphore(self.concurrency)

    embed = awaitable(calls.embed)
    score = awaitable(calls.score)
    rerank = awaitable(calls.rerank)

    async def models(self) -> list[str]:
        """The names the server answers to (each can be sent as `model`)."""
        return [m["id"] for m in protocol.check(await self.http.get("/v1/models"))["data"]]

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        json, retry = protocol.without_nones(body), protocol.Retry(self.retries)
        async with self._slots:  # held while waiting to retry too: a retry is no new request
            while (delay := retry.after(response := await self.http.post(path, json=json))) is not None:
                await asyncio.sleep(delay)
            return protocol.check(response)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
