"""The messages between HTTP frontend processes and the engine process, and how they are framed.

A frame is an 8-byte length, then one pickle (protocol 5) of a list of messages: each side sends
everything it has for the other once per event-loop tick, so one forward pass answers all of a
frontend's jobs in it with one write. Every frame from the engine also carries its `EngineStatus`
(throughput for Retry-After, which workers are alive), so readiness needs no polling.

Pickle runs code on load: the socket lives in a directory only this user can open (mkdtemp, 0700),
and only processes the server started connect to it.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any, NamedTuple

from m3engine.models.spec import ModelSpec
from m3engine.settings import EngineSettings
from m3engine.tokenization import TextTokenizer
from m3engine.types import BatchOutputs, Encoded, HeadRequest

_LENGTH = struct.Struct("!Q")


# ---- frontend -> engine -----------------------------------------------------------------------
class Hello(NamedTuple):
    frontend: int
    pid: int


class Submit(NamedTuple):
    job: int  # unique within the sending frontend
    model: int  # index into Welcome.models
    encoded: list[Encoded]
    heads: HeadRequest
    deadline: float  # time.monotonic(), one clock for every process of the host


class Cancel(NamedTuple):
    job: int


# ---- engine -> frontend -----------------------------------------------------------------------
class ModelDescription(NamedTuple):
    """What a frontend needs to validate, tokenize and shape results for a model, without weights."""

    name: str
    spec: ModelSpec
    settings: EngineSettings
    info: dict[str, Any]  # Engine.info(), for /info
    tokenizer: TextTokenizer  # pickled whole: loading it anew would import transformers and torch


class Welcome(NamedTuple):
    models: list[ModelDescription]


class Result(NamedTuple):
    job: int
    outputs: BatchOutputs
    queue_s: float
    forward_s: float


class Failure(NamedTuple):
    job: int
    error: Exception  # an M3EngineError: the frontend raises it as is


class EngineStatus(NamedTuple):
    tokens_per_s: float  # recent throughput of all models, for Retry-After
    alive: tuple[bool, ...]  # per model: its worker runs
    stopping: bool  # the engine is shutting down


# ---- framing ----------------------------------------------------------------------------------
def write_frame(writer: asyncio.StreamWriter, payload: object) -> None:
    data = pickle.dumps(payload, protocol=5)
    writer.writelines((_LENGTH.pack(len(data)), data))


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's payload; asyncio.IncompleteReadError when the other side has gone."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))
