"""The client's settings and its calls as data, with no I/O.

`ClientSettings`: how to reach a server, the constructor arguments of `Client`, `AsyncClient` and
the LangChain adapters (each a subclass), written down once.

The calls: each public method's signature, the requests it sends (path and JSON body, one a batch)
and how each answer is read. `Client` sends them one after another and `AsyncClient` all at once;
that, and sleeping between retries (protocol.Retry decides), is all they add.

A builder takes the client's settings first; `Client.embed` is `calls.embed` with the client's own
settings bound in (sync.py's `blocking`, aio.py's `awaitable`), so the signatures, defaults and
docstrings below are the ones users see.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Generic, Literal, Self, TypeVar

from m3engine.client import protocol
from m3engine.client.protocol import RankedDocument, Texts
from m3engine.results import Embedding, HybridScore

T = TypeVar("T")
M = TypeVar("M", bound=Callable[..., Any])
Json = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8080"


# eq=False: clients and adapters compare (and hash) by identity, as plain objects do
@dataclass(eq=False)
class ClientSettings:
    """`model` (embed, score) and `reranker` (rerank) pick served models (default: the server's for
    each task); 429 and 503 answers are retried `retries` times; `batch_size` texts go in one request."""

    base_url: str = DEFAULT_URL
    _: KW_ONLY
    api_key: str | None = field(default=None, repr=False)  # a secret: kept out of repr and logs
    model: str | None = None
    reranker: str | None = None
    timeout: float = 60.0
    retries: int = 2
    batch_size: int = 256

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> Self:
        """A `cls` (a client) with the settings of `settings`, which may be an adapter; only the
        fields declared here are copied, so a subclass's own fields never leak across."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(ClientSettings)})

    def http_options(self) -> dict[str, Any]:
        """httpx.Client / httpx.AsyncClient arguments: both take the same."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"base_url": self.base_url, "timeout": self.timeout, "headers": headers}


@dataclass(frozen=True)
class Call(Generic[T]):
    """POST `path` once per body; `read(answer, offset)` makes each answer's records (`offset`: the
    position of the body's first input in the call), and the call's result is them all, in order."""

    path: str
    bodies: list[tuple[int, Json]]
    read: Callable[[Json, int], list[T]]


def as_method(build: Callable[..., Call[Any]], method: M) -> M:
    """`method` (a client's sending of `build`'s call) as help() and inspect should see it: `build`'s
    name, docstring and parameters, `self` in place of the settings, the records' list as result."""
    functools.update_wrapper(method, build)
    signature = inspect.signature(build)  # annotations are strings: `from __future__ import annotations`
    returns = str(signature.return_annotation).replace("Call[", "list[", 1)
    first, *rest = signature.parameters.values()
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[first.replace(name="self", annotation=inspect.Parameter.empty), *rest],
        return_annotation=returns,
    )
    method.__annotations__ = {**build.__annotations__, "return": returns}
    del method.__annotations__[first.name]
    return method


def embed(
    settings: ClientSettings,
    texts: Texts,
    *,
    dense: bool = True,
    sparse: bool = True,
    colbert: bool = False,
    input_type: Literal["query", "passage"] = "passage",
    truncate: bool = True,
    dimensions: int | None = None,
    sparse_top_k: int | None = None,
    model: str | None = None,
) -> Call[Embedding]:
    """One `Embedding` per text, in order (sent `batch_size` texts per request)."""

    def body(batch: Sequence[str]) -> Json:
        # base64: dense as float32 (exact), ColBERT as float16 rows: a quarter of the JSON float text
        return {
            "model": model or settings.model,
            "inputs": list(batch),
            "return_dense": dense,
            "return_sparse": sparse,
            "return_colbert": colbert,
            "input_type": input_type,
            "truncate": truncate,
            "dimensions": dimensions,
            "sparse_top_k": sparse_top_k,
            "sparse_format": "indices_values",
            "encoding_format": "base64",
        }

    batches = protocol.batches(protocol.as_list(texts), settings.batch_size)
    bodies = [(offset, body(batch)) for offset, batch in batches]
    return Call("/v1/embed_m3", bodies, protocol.parse_embeddings)


def score(
    settings: ClientSettings,
    pairs: Sequence[tuple[str, str]],
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    model: str | None = None,
) -> Call[HybridScore]:
    """FlagEmbedding's compute_score for each (query, passage) pair, computed by the server."""
    body = {"model": model or settings.model, "pairs": [list(p) for p in pairs], "weights": list(weights)}
    return Call("/v1/score", [(0, body)], lambda answer, _: protocol.parse_scores(answer))


def rerank(
    settings: ClientSettings,
    query: str,
    documents: Sequence[str],
    *,
    top_n: int | None = None,
    raw_scores: bool = False,
    return_documents: bool = False,
    max_chunks_per_doc: int | None = None,
    model: str | None = None,
) -> Call[RankedDocument]:
    """Documents best first, scored by the cross-encoder (sigmoid unless `raw_scores`)."""
    body = {
        "model": model or settings.reranker,
        "query": query,
        "documents": list(documents),
        "top_n": top_n,
        "raw_scores": raw_scores,
        "return_documents": return_documents,
        "max_chunks_per_doc": max_chunks_per_doc,
    }
    return Call("/v1/rerank", [(0, body)], lambda answer, _: protocol.parse_ranking(answer))
