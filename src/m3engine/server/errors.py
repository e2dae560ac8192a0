"""Errors to responses, in one place: status and label from errors.py, the body shaped per API family.

- TEI routes: {"error": "...", "error_type": "..."} (what TEI clients parse);
- /v1 and /v2 routes: OpenAI's {"error": {"message", "type", "code"}}, plus a top-level "message"
  that Cohere and Jina clients read.
Validation messages name the field and the problem, never the value that was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from m3engine.errors import M3EngineError, OverloadedError

log = logging.getLogger("m3engine.server")
MAX_VALIDATION_ERRORS = 20


def error_body(path: str, status: int, label: str, message: str) -> dict[str, Any]:
    if path.startswith(("/v1/", "/v2/")):
        return {"error": {"message": message, "type": label, "code": status}, "message": message}
    return {"error": message, "error_type": label}


def error_response(request: Request, error: M3EngineError) -> JSONResponse:
    request.state.outcome = error.label
    headers = {}
    if isinstance(error, OverloadedError):
        headers.update(error.headers())
    elif error.status == 503:
        headers["Retry-After"] = "1"
    elif error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(request.url.path, error.status, error.label, str(error))
    return JSONResponse(body, status_code=error.status, headers=headers)


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for e in errors[:MAX_VALIDATION_ERRORS]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = len(errors) - MAX_VALIDATION_ERRORS
    return "invalid request: " + "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def install(app: FastAPI) -> None:
    async def on_engine_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, M3EngineError)
        return error_response(request, error)

    async def on_validation(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        request.state.outcome = "validation"
        body = error_body(request.url.path, 422, "validation", _validation_message(list(error.errors())))
        return JSONResponse(body, status_code=422)

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        label = {404: "not_found", 405: "not_found"}.get(error.status_code, "validation")
        request.state.outcome = label
        body = error_body(request.url.path, error.status_code, label, str(error.detail))
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    app.add_exception_handler(M3EngineError, on_engine_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # Anything else is a bug: RequestContext (middleware.py) answers its 500, with the request id.


_ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "TEI routes: {error, error_type}; "
            "/v1 and /v2: {error: {message, type, code}, message}",
        }
    }
}
# What any route but the public ones may answer, and what a POST route may answer besides.
_ANY_ROUTE = {
    401: "no or a wrong API key (with --api-keys)",
    404: "the model named is not served",
    422: "the request is invalid; the message says which field and why",
}
_POST_ROUTE = {
    400: "the body could not be read as JSON",
    408: "the body did not arrive within --body-timeout-s",
    413: "the body is over --max-request-bytes, or its answer over --max-answer-bytes",
    429: "admission is full; retry after Retry-After",
    503: "not ready, draining, the deadline passed in the queue, or the batch failed",
}


def document(routes: Iterable[Any], public: Iterable[str], unadmitted: Iterable[str]) -> None:
    """List in the OpenAPI schema every status each route can answer, with the error body's shape
    (idempotent: the routers are module-level, shared by every app built)."""
    public, unadmitted = frozenset(public), frozenset(unadmitted)
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        statuses: dict[int, str] = {} if route.path in public else dict(_ANY_ROUTE)
        if "POST" in (route.methods or ()):
            statuses.update(_POST_ROUTE)
            if route.path in unadmitted:
                statuses.pop(429)
        if route.path in ("/ready", "/health"):
            statuses[503] = "not ready: warming up, draining, or a worker died"
        for status, description in statuses.items():
            route.responses.setdefault(status, {"description": description, "content": _ERROR_BODY})
