"""Backends by name, imported only when chosen (a missing optional dependency says what to install).

Besides the names in BACKENDS, a backend may be given as an import path, "package.module:Factory":
the extension point for a backend of your own (`m3engine serve --backend mypkg.mod:MyBackend`,
`Engine.load(..., backend="mypkg.mod:MyBackend")`). The factory is called as the built-in ones are,
`Factory(spec=ModelSpec, tokens=TokenIds, device=str, dtype=str)`, and returns a `Backend`
(backends/base.py).
"""

from __future__ import annotations

import importlib
from typing import Any

from m3engine.backends.base import Backend
from m3engine.errors import BackendUnavailableError, InputError

# name -> "module:factory"; add a backend by adding a line.
BACKENDS: dict[str, str] = {
    "reference": "m3engine.backends.reference:ReferenceBackend",
    "fast": "m3engine.backends.fast:FastBackend",
    "onnx": "m3engine.backends.onnx:OnnxBackend",
}

# the extra that installs a missing module of a built-in backend (pyproject.toml)
EXTRAS = {
    "torch": "'m3engine[torch]'",
    "transformers": "'m3engine[torch]'",
    "safetensors": "'m3engine[torch]'",
    "onnxruntime": "'m3engine[onnx]'",
}


def create_backend(name: str, **kwargs: Any) -> Backend:
    """The backend `name` (a key of BACKENDS, or "package.module:Factory") built with `kwargs`."""
    if name in BACKENDS:
        target = BACKENDS[name]
    elif ":" in name:
        target = name
    else:
        raise InputError(
            f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}, "
            "or give a factory's import path as package.module:Factory"
        )
    factory = _factory(name, target)
    backend: Backend = factory(**kwargs)
    return backend


def _factory(name: str, target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not attr.isidentifier() or not all(part.isidentifier() for part in module_name.split(".")):
        raise InputError(f"backend {name!r} is not an import path of the form package.module:Factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = error.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise InputError(f"backend {name!r}: no module named {missing!r} on the Python path") from error
        package = EXTRAS.get(missing.split(".")[0], missing)
        raise BackendUnavailableError(
            f"backend {name!r} needs {missing!r}, which is not installed; `pip install {package}`"
        ) from error
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"backend {name!r}: module {module_name!r} has no callable {attr!r}")
    return factory
