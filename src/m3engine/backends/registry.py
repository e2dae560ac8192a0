"""Backends by name, imported only when chosen (a missing optional dependency says what to install)."""

from __future__ import annotations

import importlib
from typing import Any

from m3engine.backends.base import Backend
from m3engine.errors import BackendUnavailableError, InputError

# name -> "module:factory"; add a backend by adding a line.
BACKENDS: dict[str, str] = {
    "reference": "m3engine.backends.reference:ReferenceBackend",
    "fast": "m3engine.backends.fast:FastBackend",
    "fake": "m3engine.backends.fake:FakeBackend",
    "onnx": "m3engine.backends.onnx:OnnxBackend",
}


def create_backend(name: str, **kwargs: Any) -> Backend:
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    module_name, _, attr = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {name!r} needs {error.name!r}, which is not installed; `pip install {error.name}`"
        ) from error
    backend: Backend = getattr(module, attr)(**kwargs)
    return backend
