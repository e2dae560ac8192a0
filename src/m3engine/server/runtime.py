"""The event loop and HTTP parser of the server processes: uvloop and httptools when importable.

Every request, refused or admitted, is parsed by uvicorn on the process's one event loop before the
app sees it; with the pure-Python defaults (asyncio's loop, h11) that parsing is a large share of a
small request's CPU. uvloop (libuv) and httptools (llhttp) do it in C. Both are dependencies
(uvloop not on Windows); a process without them runs uvicorn's pure-Python defaults.

    >>> uvicorn.Config(app, **http_options())      # the single-process server (uvicorn runs the loop)
    >>> run(serve_frontend(...))                   # a process that runs its own loop
    >>> after_startup(settings)                    # every server process, once started, on its loop
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from m3engine.process import gcfreeze
from m3engine.process.loopwatch import log_slow_callbacks

if TYPE_CHECKING:
    from m3engine.settings import ServerSettings

T = TypeVar("T")


class HttpOptions(TypedDict):
    http: str  # uvicorn's HTTP protocol: "httptools" or "h11"
    loop: str  # uvicorn's loop: "uvloop" or "asyncio"


def _importable(name: str) -> bool:
    # An import, not a look-up: a package that is there but cannot load (a wheel for another
    # platform) must fall back too. Both are imported by uvicorn anyway once chosen.
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def http_options() -> HttpOptions:
    """uvicorn.Config's `http` and `loop`: the C implementations when present, else the defaults'."""
    return {
        "http": "httptools" if _importable("httptools") else "h11",
        "loop": "uvloop" if _importable("uvloop") else "asyncio",
    }


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when present; None: asyncio's default."""
    if not _importable("uvloop"):
        return None
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop's loop when present (asyncio.Runner: Python 3.11+; 3.10 keeps asyncio's)."""
    factory = loop_factory()
    if factory is None or not hasattr(asyncio, "Runner"):
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def http_name(protocol_class: type) -> str:
    """The HTTP implementation that a loaded uvicorn.Config runs (its `http_protocol_class`), as
    /info shows it: "httptools", "h11", or the class's full name for any other."""
    for cls in protocol_class.__mro__:  # server/connections.py wraps uvicorn's classes
        if cls.__module__.startswith("uvicorn.protocols.http."):
            return cls.__module__.rsplit(".", 1)[1].removesuffix("_impl")
    return f"{protocol_class.__module__}.{protocol_class.__qualname__}"


def loop_name() -> str:
    """The running loop's class, as /info shows it (e.g. `uvloop.Loop`)."""
    loop = type(asyncio.get_running_loop())
    return f"{loop.__module__}.{loop.__qualname__}"


def after_startup(settings: ServerSettings) -> int:
    """What every server process (the single one, the engine process, each frontend) does once
    started, on its running loop: asyncio's slow-callback log when `slow_callback_ms` asks for it,
    and its start-up heap frozen with `gc_freeze` (gcfreeze.py). Returns the objects frozen (0: none)."""
    log_slow_callbacks(settings.slow_callback_ms)
    return gcfreeze.freeze_startup_heap() if settings.gc_freeze else 0
