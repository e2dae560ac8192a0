"""Keep the start-up heap out of the cyclic garbage collector's full collections.

A server process holds hundreds of thousands of long-lived objects once started (FastAPI, pydantic,
starlette, uvicorn, the tokenizers, and in the engine process torch and the models). Every full
(generation 2) collection traverses all of them, with every thread of the process stopped; under load
the objects that requests leave behind trigger one every few seconds. Measured on the 2-core VM with
`--frontends 2` under 160 clients: 50-200 ms per full collection in each frontend, during which no
request is read, admitted or answered.

`gc.freeze()` moves every object alive at that point into a permanent generation that collections
never traverse (CPython 3.7+, meant for exactly this); what requests allocate afterwards is collected
as before. Objects frozen and later dropped are still freed by reference counting; only cycles among
them stay until `unfreeze`.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what start-up left behind, then freeze the rest; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze() -> None:
    """Back to normal collection (a server that stops inside a longer-lived process, as in tests)."""
    gc.unfreeze()
