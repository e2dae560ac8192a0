"""An httpx client over the ASGI app in-process, with the app's lifespan run around it."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from fastapi import FastAPI

from m3engine.engine import Engine
from m3engine.server import create_app
from m3engine.settings import ServerSettings


class LifespanClient:
    def __init__(self, engines: list[Engine], settings: ServerSettings) -> None:
        self.app: FastAPI = create_app(settings, engines)
        self._context: contextlib.AbstractAsyncContextManager[None] | None = None
        self.http: httpx.AsyncClient | None = None

    async def start(self) -> httpx.AsyncClient:
        self._context = self.app.router.lifespan_context(self.app)
        await self._context.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=10)
        return self.http

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self._context is not None:
            await asyncio.wait_for(self._context.__aexit__(None, None, None), 10)
