"""Dtype names as users write them: `auto`'s choices, and fp8 only where it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3engine.backends.choose import resolve_dtype
from m3engine.errors import InputError


def test_auto_picks_by_device_backend_and_model() -> None:
    assert resolve_dtype("auto", "cpu", "fast") == "fp32"
    assert resolve_dtype("auto", "cuda", "fast") == "bf16"
    assert resolve_dtype("auto", "cuda", "fast", cross_encoder=True) == "fp16"
    assert resolve_dtype("auto", "cuda", "reference") == "fp16"


def test_fp8_only_on_the_fast_backend_on_cuda() -> None:
    assert resolve_dtype("fp8", "cuda", "fast") == "fp8"
    assert resolve_dtype("fp8", "cuda:1", "fast") == "fp8"
    for device, backend in (("cpu", "fast"), ("cuda", "reference")):
        with pytest.raises(InputError, match="fp8 runs on the fast backend on CUDA only"):
            resolve_dtype("fp8", device, backend)
    with pytest.raises(InputError, match="unknown dtype 'int4'"):
        resolve_dtype("int4", "cuda", "fast")


def test_engine_refuses_fp8_on_the_cpu(bge_m3_dir: Path) -> None:
    from m3engine import Engine

    with pytest.raises(InputError, match="fp8"):
        Engine.load(str(bge_m3_dir), backend="fast", device="cpu", dtype="fp8")


def test_the_batch_budget_defaults_by_device_and_a_given_one_is_kept(bge_m3_dir: Path) -> None:
    from m3engine.backends.choose import default_batch_tokens
    from m3engine.engine import Engine

    assert default_batch_tokens("cpu") == 4096 and default_batch_tokens("cuda:1") == 16384
    engine = Engine.load(str(bge_m3_dir), device="cpu", warmup=False)
    assert engine.settings.max_batch_tokens == 4096 and engine.limits.max_tokens == 4096
    given = Engine.load(str(bge_m3_dir), device="cpu", max_batch_tokens=1000, warmup=False)
    assert given.settings.max_batch_tokens == 1000 and given.limits.max_tokens == 1000
