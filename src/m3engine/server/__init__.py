"""The HTTP server: OpenAI, TEI, Cohere/Jina and m3engine's own routes over one scheduler path."""

from m3engine.server.app import create_app

__all__ = ["create_app"]
