"""`m3engine serve`: every flag is a field of EngineSettings (the models) or ServerSettings (the server),
and so also an M3ENGINE_* environment variable, and shown in /info."""

from __future__ import annotations

import argparse
from typing import Any

from m3engine.settings import EngineSettings, ServerSettings, add_arguments, from_sources


def add_serve_parser(sub: Any) -> None:
    """Add `serve` to the CLI's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="Serve models over HTTP (OpenAI, TEI, Cohere, Jina and m3engine routes).",
        description=__doc__,
    )
    add_arguments(serve, EngineSettings)
    add_arguments(serve, ServerSettings)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from m3engine.server.serving import serve

    values = vars(args)
    server: ServerSettings = from_sources(ServerSettings, values)
    server.check()  # a flag that cannot be served fails here, before any model loads
    return serve(from_sources(EngineSettings, values), server)
