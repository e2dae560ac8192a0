"""The HTTP server: OpenAI, TEI, Cohere/Jina and m3engine's own routes over one scheduler path.

`create_app` is imported on first use, so that `m3engine --help` does not load FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from m3engine.server.app import create_app

        return create_app
    raise AttributeError(name)
