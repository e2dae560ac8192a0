"""One exception tree for the whole package.

Each class carries the HTTP status and the metric label it maps to, once, here::

    M3EngineError
    ├── InputError                  422  bad input: say what was wrong and how to fix it
    │   ├── EmptyInputError              an empty list or an empty / blank text
    │   ├── InvalidInputTypeError        a non-string where text was expected
    │   ├── InvalidTextError             a lone surrogate or a control character in a text
    │   ├── InputTooLongError            over the token limit with truncation off
    │   └── UnsupportedTaskError         e.g. rerank asked of an embedding model
    ├── ModelError                  500  the model cannot be found or loaded
    │   ├── ModelNotFoundError           no local path, not in the hub cache, not downloadable
    │   ├── UnknownModelKindError        the kind cannot be detected or is not one we know
    │   └── MissingHeadFileError         a BGE-M3 checkpoint without colbert_linear.pt / sparse_linear.pt
    ├── BackendError                503  inference failed (the batch fails, the process carries on)
    │   ├── BackendUnavailableError      an optional dependency of a backend is not installed
    │   ├── OutOfMemoryError             the device ran out of memory (the batch was split once first)
    │   └── DeviceError                  the device failed: taken out, its batch retried once on another
    └── ServiceError                     refusals of the server, decided before any model work
        ├── UnauthorizedError       401  no or a wrong API key
        ├── ModelNotServedError     404  the request names a model this server does not serve
        ├── RequestTimeoutError     408  the client sent its headers or body too slowly
        ├── RequestTooLargeError    413  the body is over --max-request-bytes
        ├── AnswerTooLargeError     413  the answer would be over --max-answer-bytes
        ├── TooManyTokensError      413  one request's tokens are over the whole --max-queued-tokens
        ├── TooManyInputsError      422  more inputs than --max-inputs-per-request
        ├── OverloadedError         429  admission is full (token or request budget); retry after a while
        ├── DeadlineExceededError   503  the request's deadline passed before its batch ran
        ├── NotReadyError           503  warming up, the worker died, or the server is draining
        ├── ClientDisconnectedError 499  the client went away; its work was dropped
        └── InternalError           500  a bug: the message says so and carries no input

Messages never echo the user's input back: they name the input by its index.
"""

from __future__ import annotations

import random


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


class InvalidTextError(InputError):
    label = "invalid_text"


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


class OutOfMemoryError(BackendError):
    label = "oom"


class DeviceError(BackendError):
    """The device failed, not the batch (a lost GPU, an ECC or launch error): with several devices
    (`--devices`) it is taken out and its batch retried once on another."""

    label = "device"


class ServiceError(M3EngineError):
    status = 503
    label = "service"


class UnauthorizedError(ServiceError):
    status = 401
    label = "unauthorized"


class ModelNotServedError(ServiceError):
    status = 404
    label = "model_not_served"


class RequestTooLargeError(ServiceError):
    status = 413
    label = "request_too_large"


class RequestTimeoutError(ServiceError):
    status = 408
    label = "request_timeout"


class AnswerTooLargeError(ServiceError):
    status = 413
    label = "answer_too_large"


class TooManyTokensError(ServiceError):
    status = 413
    label = "too_many_tokens"


class TooManyInputsError(ServiceError):
    status = 422
    label = "too_many_inputs"


class OverloadedError(ServiceError):
    status = 429
    label = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        # The same delay spread over +-50 %, in ms: refused clients that honour it (the OpenAI SDK
        # reads retry-after-ms first) come back spread out, not together a whole second later.
        self.retry_after_ms = round(1000 * retry_after_s * random.uniform(0.5, 1.5))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s), "retry-after-ms": str(self.retry_after_ms)}


class DeadlineExceededError(ServiceError):
    status = 503
    label = "deadline_exceeded"


class NotReadyError(ServiceError):
    status = 503
    label = "not_ready"


class InternalError(M3EngineError):
    status = 500
    label = "internal"


def error_labels() -> frozenset[str]:
    """The closed set of error labels (metrics never see a label outside it)."""
    labels: set[str] = set()
    pending: list[type[M3EngineError]] = [M3EngineError]
    while pending:
        cls = pending.pop()
        labels.add(cls.label)
        pending.extend(cls.__subclasses__())
    return frozenset(labels)


class ClientDisconnectedError(ServiceError):
    """The client went away before its answer was ready; nobody reads this response."""

    status = 499
    label = "cancelled"
