"""The blocking client: `Client("http://127.0.0.1:8080").embed(["text"], sparse=True)`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from m3engine.client import calls, protocol
from m3engine.client.calls import ClientSettings

P = ParamSpec("P")
T = TypeVar("T")


def blocking(
    build: Callable[Concatenate[ClientSettings, P], calls.Call[T]],
) -> Callable[Concatenate[Client, P], list[T]]:
    """The method that builds the call with the client's settings and sends its requests in turn,
    reading each answer before the next request goes (an error stops the rest)."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> list[T]:
        call = build(self, *args, **kwargs)
        return [
            item for offset, body in call.bodies for item in call.read(self._post(call.path, body), offset)
        ]

    return calls.as_method(build, method)


@dataclass(eq=False, kw_only=True)  # as ClientSettings: only base_url may be positional
class Client(ClientSettings):
    """m3engine's routes that OpenAI's SDK cannot express: BGE-M3's three outputs from one pass,
    hybrid scores, reranking. `http`: a ready httpx client instead, with its own base_url, headers
    and transport."""

    # None only until __post_init__ opens one, so typed as the client every method may rely on
    http: httpx.Client = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.http = self.http or httpx.Client(**self.http_options())

    embed = blocking(calls.embed)
    score = blocking(calls.score)
    rerank = blocking(calls.rerank)

    def models(self) -> list[str]:
        """The names the server answers to (each can be sent as `model`)."""
        return [m["id"] for m in protocol.check(self.http.get("/v1/models"))["data"]]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        json, retry = protocol.without_nones(body), protocol.Retry(self.retries)
        while (delay := retry.after(response := self.http.post(path, json=json))) is not None:
            time.sleep(delay)
        return protocol.check(response)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
