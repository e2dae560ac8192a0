"""/live (the process answers), /ready and TEI's /health (it can serve), /metrics, /info."""

from __future__ import annotations

import asyncio
import gc
import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from m3engine.errors import NotReadyError
from m3engine.server.runtime import loop_name
from m3engine.server.state import ServedModel
from m3engine.server.submit import server_state
from m3engine.version import __version__

router = APIRouter(tags=["Operations"])


@router.get("/live", summary="Liveness: the event loop answers (no model call)")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/ready", summary="Readiness: warmed up, a worker alive per model, not draining")
async def ready(request: Request) -> JSONResponse:
    """200 `ready`; 200 `degraded` while a model's --fallback takes batches (the reason says why)."""
    state = server_state(request)
    state.metrics.ready.set(1 if state.ready else 0)
    if state.ready:
        degraded = state.degraded()
        if degraded is not None:
            return JSONResponse({"status": "degraded", "reason": degraded})
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not ready", "reason": state.not_ready_reason()}, status_code=503)


@router.get("/health", summary="Health (TEI): 200 when ready, else 503")
async def health(request: Request) -> dict[str, str]:
    state = server_state(request)
    if not state.ready:
        raise NotReadyError(f"not ready: {state.not_ready_reason()}")
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = server_state(request)
    state.metrics.ready.set(1 if state.ready else 0)
    # In a thread: with --frontends N it reads and merges every process's files (~20 ms for 9
    # processes on the 2-core VM), which on the loop would stall this frontend's requests per scrape.
    body = await asyncio.to_thread(state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4")


@router.get("/info", summary="Served models and every setting (secrets redacted)")
async def info(request: Request) -> dict[str, object]:
    state = server_state(request)
    first = state.models[0].engine if state.models else None
    return {
        "version": __version__,
        "model_id": state.models[0].name if first else None,  # TEI's field, for TEI clients
        "max_input_length": first.max_length if first else None,
        "max_client_batch_size": state.settings.max_inputs_per_request,
        "max_concurrent_requests": state.settings.max_concurrent_requests,
        "auto_truncate": True,
        "server": state.settings.public(),
        # What this process runs on (server/runtime.py): uvloop and httptools, or the pure-Python ones.
        "runtime": {"loop": loop_name(), "http": state.http, "gc_frozen_objects": gc.get_freeze_count()},
        "frontend": None
        if state.frontend is None
        else {"index": state.frontend, "of": state.settings.frontends, "pid": os.getpid()},
        "degraded": state.degraded(),  # why a --fallback serves; None while no model needs one
        "models": [_model_info(m) for m in state.models],
    }


def _model_info(model: ServedModel) -> dict[str, object]:
    serving = model.scheduler.serving
    return {
        **model.engine.info(),
        "serving": serving.by,  # primary, fallback, or primary+fallback
        "degraded": serving.degraded,
        "served_name": model.name,
        "served_names": list(model.names),
        "engine_settings": model.engine.settings.public(),
    }
