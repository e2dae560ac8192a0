"""Each bad input is a clear exception type whose message says what was wrong and how to fix it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m3engine import (
    EmptyInputError,
    Engine,
    InputError,
    InputTooLongError,
    InvalidInputTypeError,
    MissingHeadFileError,
    ModelNotFoundError,
    UnknownModelKindError,
    UnsupportedTaskError,
)
from tests.texts import LONG


def test_empty_list(bge_m3: Engine) -> None:
    with pytest.raises(EmptyInputError, match="empty"):
        bge_m3.embed([])


@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_string_is_named_by_index(bge_m3: Engine, bad: str) -> None:
    with pytest.raises(EmptyInputError, match="input 1"):
        bge_m3.embed(["fine", bad])


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["nested"]])
def test_non_string(bge_m3: Engine, bad: object) -> None:
    with pytest.raises(InvalidInputTypeError, match="input 1 is a"):
        bge_m3.embed(["fine", bad])  # type: ignore[list-item]


def test_over_the_limit_with_truncation_off(bge_m3: Engine, reranker: Engine) -> None:
    with pytest.raises(InputTooLongError, match="over the limit of 128"):
        bge_m3.embed([LONG], truncate=False)
    with pytest.raises(InputTooLongError, match="pair 0"):
        reranker.rerank("query", [LONG], truncate=False)
    assert bge_m3.embed([LONG])[0].truncated  # with truncation on, the same text is fine


def test_unknown_kind(bge_m3_dir: Path) -> None:
    with pytest.raises(UnknownModelKindError, match="choose one of"):
        Engine.load(str(bge_m3_dir), kind="splade")


def test_undetectable_kind(tmp_path: Path, bge_m3_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bge_m3_dir / name, tmp_path / name)
    with pytest.raises(UnknownModelKindError, match="--kind"):
        Engine.load(str(tmp_path))


def test_missing_head_file(tmp_path: Path, bge_m3_dir: Path) -> None:
    shutil.copytree(bge_m3_dir, tmp_path / "m3")
    (tmp_path / "m3" / "sparse_linear.pt").unlink()
    with pytest.raises(MissingHeadFileError, match=r"sparse_linear\.pt"):
        Engine.load(str(tmp_path / "m3"))
    (tmp_path / "m3" / "colbert_linear.pt").unlink()
    with pytest.raises(MissingHeadFileError, match=r"colbert_linear\.pt, sparse_linear\.pt"):
        Engine.load(str(tmp_path / "m3"), kind="bge-m3")


def test_model_not_found_offline_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        Engine.load("BAAI/no-such-model")
    assert str(tmp_path) in str(info.value) and "local directory" in str(info.value)


def test_wrong_task_for_the_model(bge_m3: Engine, reranker: Engine) -> None:
    with pytest.raises(UnsupportedTaskError, match="rerank needs a reranker"):
        bge_m3.rerank("q", ["d"])
    with pytest.raises(UnsupportedTaskError, match="embed needs"):
        reranker.embed(["text"])


def test_bad_options(bge_m3: Engine, reranker: Engine) -> None:
    with pytest.raises(InputError, match="at least one output"):
        bge_m3.embed(["x"], dense=False)
    with pytest.raises(InputError, match="dimensions"):
        bge_m3.embed(["x"], dimensions=10_000)
    with pytest.raises(InputError, match="max_length"):
        bge_m3.embed(["x"], max_length=100_000)
    with pytest.raises(InputError, match="top_n"):
        reranker.rerank("q", ["d"], top_n=0)
    with pytest.raises(InvalidInputTypeError, match="pair 0"):
        bge_m3.score([("only one",)])
    with pytest.raises(InputError, match="unknown backend"):
        Engine.load(str(bge_m3.spec.path), backend="tensorrt-llm")
