"""`Engine.load(..., devices=...)`: bulk calls over several engines, and failover, on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3engine.backends.choose import resolve_devices
from m3engine.engine import Engine
from m3engine.errors import DeviceError, InputError
from m3engine.models.spec import inspect_model
from m3engine.scheduling.devices import is_device_error
from m3engine.settings import EngineSettings
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, TokenIds
from tests.fakes import BACKEND, FakeBackend

TEXTS = [f"passage {i} " + "word " * (i % 17) for i in range(60)]


def test_device_names() -> None:
    assert resolve_devices(None, "cpu") == ["cpu"]
    assert resolve_devices("cpu,cpu", "auto") == ["cpu", "cpu"]
    with pytest.raises(InputError, match="cuda"):
        resolve_devices("0,1", "auto")  # this machine has no GPU: the error says so


def test_the_onnx_backend_asks_onnx_runtime_for_cuda_devices() -> None:
    """Not torch (an install for ONNX artifacts has none): this onnxruntime is the CPU build."""
    assert resolve_devices(None, "auto", "onnx") == ["cpu"]
    assert resolve_devices("all", "auto", "onnx") == ["cpu"]
    with pytest.raises(InputError, match="ONNX Runtime"):
        resolve_devices(None, "cuda", "onnx")


def test_device_errors_are_told_from_batch_errors() -> None:
    assert is_device_error(DeviceError("lost"))
    assert is_device_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_device_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_device_error(ValueError("bad shape"))


def test_two_cpu_engines_give_the_single_engine_outputs(bge_m3_dir: Path, bge_m3: Engine) -> None:
    double = Engine.load(str(bge_m3_dir), devices="cpu,cpu", dtype="fp32", max_batch_tokens=256)
    assert [d["device"] for d in double.info()["devices"]] == ["cpu#0", "cpu#1"]
    ours = double.embed(TEXTS, dense=True, sparse=True, colbert=True)
    ref = bge_m3.embed(TEXTS, dense=True, sparse=True, colbert=True)
    for a, b in zip(ours, ref, strict=True):
        assert a.index == b.index
        np.testing.assert_allclose(a.dense, b.dense, rtol=1e-5, atol=1e-6)
        assert a.sparse is not None and b.sparse is not None
        np.testing.assert_array_equal(a.sparse.indices, b.sparse.indices)
        np.testing.assert_allclose(a.colbert, b.colbert, rtol=1e-5, atol=1e-6)


def _fake_pair(path: Path, padded: bool) -> tuple[Engine, list[FakeBackend]]:
    spec = inspect_model(path, name=path.name)
    tokenizer = TextTokenizer.load(path)
    tokens = TokenIds(tokenizer.pad_id, tokenizer.special_ids)
    fakes = [FakeBackend(spec, tokens, padded=padded) for _ in range(2)]
    settings = EngineSettings(model=str(path), backend=BACKEND, devices="cpu,cpu", max_batch_tokens=128)
    return Engine(spec, tokenizer, fakes[0], settings, backends=fakes), fakes


@pytest.mark.parametrize("padded", [True, False])  # the planned path and the tokenizing pipeline
def test_bulk_work_survives_a_failed_device(bge_m3_dir: Path, padded: bool) -> None:
    engine, fakes = _fake_pair(bge_m3_dir, padded)
    expected = [r.dense for r in engine.embed(TEXTS)]
    assert all(f.batches for f in fakes), "both devices took batches"
    fakes[0].device_lost = True
    again = engine.embed(TEXTS)
    for a, b in zip(again, expected, strict=True):
        np.testing.assert_array_equal(a.dense, b)
    assert engine.health.healthy == [False, True]
    assert engine.info()["devices"][0]["healthy"] is False
    fakes[1].device_lost = True
    with pytest.raises(DeviceError):
        engine.embed(TEXTS)


def test_a_batch_error_is_not_a_device_error(bge_m3_dir: Path) -> None:
    engine, fakes = _fake_pair(bge_m3_dir, padded=True)
    fakes[0].fail_if = lambda batch: True
    fakes[1].fail_if = lambda batch: True
    with pytest.raises(Exception, match="fake backend failure"):
        engine.embed(TEXTS)
    assert engine.health.healthy == [True, True]


class _FailsAtCollection:
    """A launched batch whose error shows only when collected, as CUDA's do at a sync."""

    def done(self) -> bool:
        return True

    def result(self) -> BatchOutputs:
        raise RuntimeError("CUDA error: unspecified launch failure")


def test_a_device_error_at_collection_is_recovered(bge_m3_dir: Path) -> None:
    engine, fakes = _fake_pair(bge_m3_dir, padded=True)
    expected = [r.dense for r in engine.embed(TEXTS)]
    fakes[1].launch = lambda batch, heads: _FailsAtCollection()  # type: ignore[method-assign,assignment,return-value]
    for a, b in zip(engine.embed(TEXTS), expected, strict=True):
        np.testing.assert_array_equal(a.dense, b)
    assert engine.health.healthy == [True, False]
    assert "unspecified launch failure" in str(engine.health.reasons[1])
