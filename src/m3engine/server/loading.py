"""The models a server serves, loaded from its settings."""

from __future__ import annotations

import dataclasses
from typing import Any

from m3engine.settings import EngineSettings, ServerSettings


def model_names(engine: EngineSettings, server: ServerSettings) -> list[str]:
    """The models to serve, in serving order, as their settings name them."""
    return [engine.model, *(name for name in [server.reranker, *server.extra_models] if name)]


def load_engines(engine: EngineSettings, server: ServerSettings) -> list[Any]:
    """--model first (the default for its task), then --reranker, then --extra-models."""
    from m3engine.engine import Engine

    engines = [Engine.from_settings(engine)]
    for name in model_names(engine, server)[1:]:
        # Per-model limits of --model may not fit another model: the others use their own.
        other = dataclasses.replace(engine, model=name, kind=None, max_length=None, query_max_length=None)
        engines.append(Engine.from_settings(other))
    return engines
