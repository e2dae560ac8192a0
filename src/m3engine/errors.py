"""One exception tree for the whole package.

Each class carries the HTTP status and the metric label it maps to, once, here::

    M3EngineError
    ├── InputError                  422  bad input: say what was wrong and how to fix it
    │   ├── EmptyInputError              an empty list or an empty / blank text
    │   ├── InvalidInputTypeError        a non-string where text was expected
    │   ├── InputTooLongError            over the token limit with truncation off
    │   └── UnsupportedTaskError         e.g. rerank asked of an embedding model
    ├── ModelError                  500  the model cannot be found or loaded
    │   ├── ModelNotFoundError           no local path, not in the hub cache, not downloadable
    │   ├── UnknownModelKindError        the kind cannot be detected or is not one we know
    │   └── MissingHeadFileError         a BGE-M3 checkpoint without colbert_linear.pt / sparse_linear.pt
    └── BackendError                503  inference failed (the batch fails, the process carries on)
        └── BackendUnavailableError      an optional dependency of a backend is not installed

Messages never echo the user's input back: they name the input by its index.
"""

from __future__ import annotations


class M3EngineError(Exception):
    """Base of every error m3engine raises on purpose."""

    status: int = 500
    label: str = "internal"


class InputError(M3EngineError, ValueError):
    status = 422
    label = "validation"


class EmptyInputError(InputError):
    label = "empty"


class InvalidInputTypeError(InputError, TypeError):
    label = "validation"


class InputTooLongError(InputError):
    label = "input_too_long"


class UnsupportedTaskError(InputError):
    label = "unsupported_task"


class ModelError(M3EngineError):
    status = 500
    label = "model"


class ModelNotFoundError(ModelError, FileNotFoundError):
    label = "model_not_found"


class UnknownModelKindError(ModelError):
    label = "model_kind"


class MissingHeadFileError(ModelError, FileNotFoundError):
    label = "model_heads"


class BackendError(M3EngineError, RuntimeError):
    status = 503
    label = "backend"


class BackendUnavailableError(BackendError, ImportError):
    label = "backend_unavailable"
