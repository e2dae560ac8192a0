"""Ray Serve replicas of `m3engine serve`: the same app (routes, auth, limits, errors) in each replica.

    serve run deploy/ray-serve.yaml                       # the documented config: autoscaling, GPUs
    serve run m3engine.distributed.serve:build_app model=BAAI/bge-m3 reranker=BAAI/bge-reranker-v2-m3

Two deployments: `M3Engine`, the replicas (one GPU each, each the models and the FastAPI app of
`m3engine serve`, replica.py), and `M3EngineIngress`, a thin HTTP ingress on the CPU that forwards
every request whole to a replica through a Ray Serve handle. The handle spreads requests over the
replicas; a request whose replica dies under it is sent again, to another replica, so a killed
replica costs its callers time, not an error (embedding, reranking and scoring are idempotent).

`build_app(args)` is Ray Serve's application builder. Its arguments are the fields of EngineSettings
and ServerSettings by name (`max_batch_tokens=8192`, `api_keys=k1,k2`), read as the CLI reads them
(a setting left out falls back to its M3ENGINE_* variable on the replica, then its default), plus the
replicas' shape: `num_replicas` (an integer or "auto"), `gpus_per_replica` (default 1 when the
cluster has GPUs, else 0), `cpus_per_replica` (1) and `max_ongoing_requests` (256: a replica batches
across the requests it holds, and its own admission answers 429 when full). A config file's
`deployments:` section overrides these, and is where Ray Serve's autoscaling settings go.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from m3engine.distributed.replica import M3EngineReplica, WireResponse
from m3engine.errors import BackendUnavailableError
from m3engine.settings import EngineSettings, ServerSettings, from_sources

try:
    from ray import serve
    from ray.exceptions import RayActorError
except ImportError:  # pragma: no cover - the ray extra is a test dependency
    raise BackendUnavailableError(
        "m3engine.distributed.serve needs Ray Serve: pip install 'm3engine[ray]'"
    ) from None

DEPLOYMENT, INGRESS = "M3Engine", "M3EngineIngress"
SHAPE_ARGS = ("num_replicas", "gpus_per_replica", "cpus_per_replica", "max_ongoing_requests")
log = logging.getLogger("m3engine.serve")
# Before each retry: the handle learns that a replica died from Ray Serve's controller, so a retry
# sent at once could be routed to the same dead replica.
RETRY_DELAYS_S = (0.2, 0.5)


class M3EngineIngress:
    """Forwards HTTP requests whole to the replicas; retries a request whose replica died."""

    def __init__(self, replicas: Any, max_request_bytes: int) -> None:
        self.replicas, self.max_request_bytes = replicas, max_request_bytes

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        body = await self._body(request)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        wire = (request.method, _app_path(request.scope), request.url.query.encode(), headers, body)
        for attempt in range(len(RETRY_DELAYS_S) + 1):
            try:
                status, out_headers, content = await self._call(wire)
            except RayActorError as error:
                if attempt < len(RETRY_DELAYS_S):
                    log.warning(
                        "replica died under a request; sending it to another",
                        extra={"error": str(error)[:200]},
                    )
                    await asyncio.sleep(RETRY_DELAYS_S[attempt])
                    continue
                message = "the replicas this request was sent to stopped under it; retry later"
                detail = {"message": message, "type": "replica_unavailable", "code": "replica_unavailable"}
                # the shape of the app's /v1 errors (server/errors.py), so every client reads it
                return JSONResponse({"error": detail, "message": message}, 503, headers={"Retry-After": "1"})
            response = Response(content, status_code=status)
            response.raw_headers = out_headers  # the app's own, content-length included
            return response
        raise AssertionError("unreachable")

    async def _call(self, wire: Any) -> WireResponse:
        result: WireResponse = await self.replicas.http.remote(wire)
        return result

    async def _body(self, request: Any) -> bytes:
        """The body, read up to one byte past the limit: the replica's app answers 413 for it, and
        the ingress never holds more than the limit of one request."""
        chunks, size = [], 0
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_request_bytes:
                break
        return b"".join(chunks)[: self.max_request_bytes + 1]


def _app_path(scope: Mapping[str, Any]) -> str:
    """The path as the app routes it: without the application's route_prefix (ASGI's root_path)."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def settings_from_args(args: Mapping[str, Any]) -> tuple[EngineSettings, ServerSettings]:
    """The settings named in `args` (unknown names are refused, with the known ones listed)."""
    engine_names = {f.name for f in dataclasses.fields(EngineSettings)}
    server_names = {f.name for f in dataclasses.fields(ServerSettings)}
    unknown = set(args) - engine_names - server_names - set(SHAPE_ARGS)
    if unknown:
        raise ValueError(
            f"unknown m3engine argument(s) {sorted(unknown)}: use settings fields "
            "(m3engine serve --help, with - as _) or " + ", ".join(SHAPE_ARGS)
        )
    as_text = {k: v if isinstance(v, str) else _text(v) for k, v in args.items()}
    engine: EngineSettings = from_sources(EngineSettings, {k: as_text.get(k) for k in engine_names}, {})
    server: ServerSettings = from_sources(ServerSettings, {k: as_text.get(k) for k in server_names}, {})
    return engine, server


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_app(args: Mapping[str, Any] | None = None) -> Any:
    """Ray Serve's application builder (see the module docstring)."""
    import ray

    args = dict(args or {})
    engine, server = settings_from_args(args)
    gpus = args.get("gpus_per_replica")
    if gpus is None:
        resources = ray.cluster_resources() if ray.is_initialized() else {}  # type: ignore[no-untyped-call]
        gpus = 1 if resources.get("GPU", 0) and engine.device != "cpu" else 0
    replicas = args.get("num_replicas", 1)
    replica = serve.deployment(
        name=DEPLOYMENT,
        num_replicas=replicas if replicas == "auto" else int(replicas),
        max_ongoing_requests=int(args.get("max_ongoing_requests", 256)),
        ray_actor_options={"num_gpus": float(gpus), "num_cpus": float(args.get("cpus_per_replica", 1))},
        health_check_period_s=5,
        graceful_shutdown_timeout_s=server.shutdown_timeout,
    )(M3EngineReplica)
    ingress = serve.deployment(name=INGRESS, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0.1})(
        M3EngineIngress
    )
    return ingress.bind(replica.bind(engine, server), server.max_request_bytes)
