"""The messages between HTTP frontend processes and the engine process, and how they are framed.

A frame is an 8-byte length, then one pickle (protocol 5): each side sends everything it has for the
other once per event-loop tick, so one forward pass answers all of a frontend's jobs in it with one
write. Every frame from the engine is `(status, messages)`: its `EngineStatus` (throughput for
Retry-After, which workers are alive, which devices of --devices are taken out) rides along, so
readiness and every frontend's /info need no polling. The engine sends a frame with its results and
at least every half second.

The messages of every request are plain tuples tagged by an int, and arrays travel as bytes:
pickling a NamedTuple, a dataclass or an ndarray runs Python code (or a reduce protocol) per object
on both sides, which was most of the engine process's CPU per query.

    frontend -> engine   (HELLO, frontend, pid)
                         (SERVING, frontend): its HTTP server accepts connections
                         (SUBMIT, job, model, BatchWire, heads_bits(HeadRequest), deadline)
                         (CANCEL, job)
    engine -> frontend   (WELCOME, [ModelDescription, ...])
                         (RESULT, job, encode_outputs(BatchOutputs), queue_s, forward_s)
                         (FAILURE, job, M3EngineError)

`job` is unique within the sending frontend; `model` indexes the welcome's models; `deadline` is a
time.monotonic() value (one clock for every process of the host).

Pickle runs code on load: the socket lives in a directory only this user can open (mkdtemp, 0700),
and only processes the server started connect to it.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from m3engine.models.spec import ModelSpec
from m3engine.settings import EngineSettings
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, SparseVector

_LENGTH = struct.Struct("!Q")
HELLO, SUBMIT, CANCEL, WELCOME, RESULT, FAILURE, SERVING = range(7)
Message = tuple[Any, ...]  # (TAG, ...): see the table above


class ModelDescription(NamedTuple):
    """What a frontend needs to validate, tokenize and shape results for a model, without weights."""

    name: str
    spec: ModelSpec
    settings: EngineSettings
    info: dict[str, Any]  # Engine.info(), for /info
    tokenizer: TextTokenizer  # pickled whole: loading it anew would import transformers and torch


class EngineStatus(NamedTuple):
    tokens_per_s: float  # recent throughput of all models, for Retry-After
    alive: tuple[bool, ...]  # per model: its worker runs
    stopping: bool  # the engine is shutting down
    # per model, per device of --devices: None while healthy, else why it was taken out (the
    # `reason` of DeviceHealth); a tuple of Nones costs a frame a few bytes
    devices: tuple[tuple[str | None, ...], ...] = ()
    serving: tuple[tuple[str, str | None], ...] = ()  # per model: its `Serving` as a plain tuple
    # frontends that have served HTTP: counts up at start, then stays at --frontends (a restarted
    # frontend does not take the others out of rotation)
    frontends_serving: int = 0


# ---- heads and outputs ------------------------------------------------------------------------
# Every HeadRequest there can be, by bit pattern: the engine hands out these very objects, so the
# batch former compares heads by identity.
BatchWire = tuple[bytes, bytes, bytes | None]  # a PackedBatch's (ids, cu_seqlens, type ids) as bytes


def batch_to_wire(batch: PackedBatch) -> BatchWire:
    types = None if batch.token_type_ids is None else batch.token_type_ids.tobytes()
    return batch.input_ids.tobytes(), batch.cu_seqlens.tobytes(), types


def batch_from_wire(wire: BatchWire) -> PackedBatch:
    """Read-only arrays over the received bytes: they are only read (concatenated into batches)."""
    ids, cu, types = wire
    return PackedBatch(
        input_ids=np.frombuffer(ids, dtype=np.int64),
        cu_seqlens=np.frombuffer(cu, dtype=np.int64),
        token_type_ids=None if types is None else np.frombuffer(types, dtype=np.int64),
    )


_HEADS = [HeadRequest(bool(b & 1), bool(b & 2), bool(b & 4), bool(b & 8)) for b in range(16)]


def heads_bits(heads: HeadRequest) -> int:
    return heads.dense | heads.sparse << 1 | heads.colbert << 2 | heads.logits << 3


def heads_of(bits: int) -> HeadRequest:
    return _HEADS[bits]


Array = tuple[str, tuple[int, ...], bytes]  # dtype, shape, data


def _pack_array(a: np.ndarray[Any, Any]) -> Array:
    return a.dtype.str, a.shape, a.tobytes()


def _unpack_array(a: Array) -> np.ndarray[Any, Any]:
    """Read-only over the received bytes: the frontend's `finish` only reads its outputs."""
    dtype, shape, data = a
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def encode_outputs(out: BatchOutputs) -> tuple[Any, ...]:
    return (
        None if out.dense is None else _pack_array(out.dense),
        None if out.sparse is None else [(_pack_array(v.indices), _pack_array(v.values)) for v in out.sparse],
        None if out.colbert is None else [_pack_array(c) for c in out.colbert],
        None if out.logits is None else _pack_array(out.logits),
    )


def decode_outputs(wire: tuple[Any, ...]) -> BatchOutputs:
    dense, sparse, colbert, logits = wire
    return BatchOutputs(
        dense=None if dense is None else _unpack_array(dense),
        sparse=None
        if sparse is None
        else [SparseVector(_unpack_array(i), _unpack_array(v)) for i, v in sparse],
        colbert=None if colbert is None else [_unpack_array(c) for c in colbert],
        logits=None if logits is None else _unpack_array(logits),
    )


# ---- framing ----------------------------------------------------------------------------------
def write_frame(transport: asyncio.WriteTransport, payload: object) -> None:
    data = pickle.dumps(payload, protocol=5)
    transport.write(_LENGTH.pack(len(data)) + data)


class FrameReader:
    """Cuts the byte stream of a connection into frames and hands each payload on, unpickled.

    Fed from a Protocol's data_received: no coroutine, future or StreamReader buffer per read."""

    def __init__(self, on_frame: Callable[[Any], None]) -> None:
        self._on_frame = on_frame
        self._chunks: list[bytes] = []  # an incomplete frame, as received
        self._have = 0
        self._need = 0  # bytes of that frame (or its length prefix) to wait for before parsing

    def feed(self, data: bytes) -> None:
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return  # a large frame arriving in pieces: join it once, when it is whole
            data = b"".join(self._chunks)
            self._chunks.clear()
        view, offset, end = memoryview(data), 0, len(data)
        while end - offset >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(data, offset)
            stop = offset + _LENGTH.size + size
            if stop > end:
                self._need = stop - offset
                break
            self._on_frame(pickle.loads(view[offset + _LENGTH.size : stop]))
            offset = stop
        else:
            self._need = _LENGTH.size
        if offset < end:
            rest = data[offset:]
            self._chunks.append(rest)
            self._have = len(rest)
