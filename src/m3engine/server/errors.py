"""Errors to responses, in one place: status and label from errors.py, the body shaped per API family.

- TEI routes: {"error": "...", "error_type": "..."} (what TEI clients parse);
- /v1 and /v2 routes: OpenAI's {"error": {"message", "type", "code"}}, plus a top-level "message"
  that Cohere and Jina clients read.
Validation messages name the field and the problem, never the value that was sent.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from m3engine.errors import InternalError, M3EngineError, OverloadedError

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

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=error)
        internal = InternalError("internal error; the server log has the details under this request id")
        return error_response(request, internal)

    app.add_exception_handler(M3EngineError, on_engine_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
