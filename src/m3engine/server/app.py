"""`create_app(settings, engines)`: the FastAPI app; the routes live in one module per API family.

    >>> app = create_app(ServerSettings(), [Engine.load("BAAI/bge-m3")])
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)

`build_app(state)` is the same app over a prepared state: an HTTP frontend process builds one whose
schedulers are remote (server/multiproc/frontend.py).

Startup warms every model up at its largest batch shape and starts its worker; /ready answers 200
only after that. Shutdown (`drain`) refuses new requests with 503 and lets admitted ones finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware

from m3engine.process import gcfreeze
from m3engine.process.loopwatch import LoopWatch
from m3engine.server import errors, runtime
from m3engine.server.gate import OverloadGate
from m3engine.server.middleware import Auth, BodyLimit, RequestContext
from m3engine.server.routes import health, native, openai, rerank, tei
from m3engine.server.state import ServerState
from m3engine.settings import ServerSettings
from m3engine.version import __version__

if TYPE_CHECKING:  # a frontend process builds the app without loading torch
    from m3engine.engine import Engine

log = logging.getLogger("m3engine.server")
PUBLIC_ROUTES = ("/live", "/ready")
ROUTERS = (health, openai, tei, rerank, native)
# POST routes that take no admission permit (the gate never refuses them); every other POST route does.
UNADMITTED_ROUTES = ("/decode",)


def create_app(settings: ServerSettings, engines: list[Engine]) -> FastAPI:
    if not engines:
        raise ValueError("create_app needs at least one engine")
    return build_app(ServerState(settings, engines))


def build_app(state: ServerState) -> FastAPI:
    settings = state.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for model in state.models:
            await model.scheduler.start()
        app.openapi()  # built now, before /ready: the first /openapi.json would hold the loop ~0.1 s
        process = "main" if state.frontend is None else f"frontend-{state.frontend}"
        watch = LoopWatch(state.metrics.loop_sink(process))
        watch.start()
        frozen = runtime.after_startup(settings)
        state.started = True
        if state.on_started is not None:
            state.on_started()
        log.info("ready", extra={"models": [m.name for m in state.models], "gc_frozen": frozen})
        try:
            yield
        finally:
            await drain(state, settings.shutdown_timeout)
            for model in state.models:
                await model.scheduler.stop()
            state.tokenize_pool.shutdown(wait=False, cancel_futures=True)
            await watch.stop()
            if settings.gc_freeze:
                gcfreeze.unfreeze()

    app = FastAPI(
        title="m3engine",
        version=__version__,
        description="BGE-M3 (dense, sparse, ColBERT) and reranking behind OpenAI, TEI, Cohere, Jina APIs.",
        lifespan=lifespan,
    )
    app.state.server = state
    for module in ROUTERS:
        app.include_router(module.router)
    errors.install(app)

    public = set(PUBLIC_ROUTES) | ({"/metrics"} if settings.public_metrics else set())
    api_routes = [r for m in ROUTERS for r in m.router.routes if isinstance(r, APIRoute)]
    errors.document(api_routes, public=PUBLIC_ROUTES, unadmitted=UNADMITTED_ROUTES)
    admitted = [r.path for r in api_routes if "POST" in (r.methods or ()) and r.path not in UNADMITTED_ROUTES]
    # Added innermost first: a request meets Auth, then OverloadGate, then BodyLimit, then the route.
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(OverloadGate, state=state, routes=admitted, body_limit=settings.max_request_bytes)
    app.add_middleware(Auth, keys=settings.api_keys, public=public)
    settings.check()  # settings that cannot be served (settings.py says which)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "X-Request-Timeout"],
            allow_credentials=False,
        )
    if settings.api_keys:
        _document_auth(app, public)
    routes = [r.path for r in api_routes]
    app.add_middleware(RequestContext, metrics=state.metrics, routes=routes, frontend=state.frontend)
    return app


def _document_auth(app: FastAPI, public: set[str]) -> None:
    """Say in the OpenAPI schema that every route but the public ones needs a bearer key (Auth in
    middleware.py enforces it), so that clients and schema tools send it and can check it is needed."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer"}
            for path, item in schema["paths"].items():
                for operation in item.values() if path not in public else ():
                    operation["security"] = [{"bearer": []}]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


async def drain(state: ServerState, timeout_s: float) -> None:
    """Refuse new work (503) and wait, up to `timeout_s`, for admitted requests to finish."""
    state.draining = True
    deadline = time.monotonic() + timeout_s
    while state.admission.requests > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if state.admission.requests:
        log.warning(
            "shutdown timeout: requests still in flight", extra={"requests": state.admission.requests}
        )
