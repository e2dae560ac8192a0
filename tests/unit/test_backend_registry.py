"""backends/registry.py: built-in names, and a backend of one's own given as package.module:Factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3engine import Engine
from m3engine.backends.registry import BACKENDS
from m3engine.errors import BackendUnavailableError, InputError
from tests.fakes import BACKEND, FakeBackend


def test_the_test_double_is_not_a_product_backend() -> None:
    assert "fake" not in BACKENDS


def test_an_import_path_loads_that_factory(bge_m3_dir: Path) -> None:
    engine = Engine.load(str(bge_m3_dir), backend=BACKEND, device="cpu")
    assert isinstance(engine.backend, FakeBackend)
    assert engine.info()["backend"] == "fake"
    out = engine.embed(["hello world"])
    assert out[0].dense is not None and out[0].dense.shape == (engine.spec.hidden_size,)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fake", "unknown backend 'fake'; choose one of: fast, onnx, reference, or give"),
        ("tests.fakes:", "not an import path"),
        (":FakeBackend", "not an import path"),
        ("tests..fakes:FakeBackend", "not an import path"),
        ("tests.fakes:Fake-Backend", "not an import path"),
        ("tests.no_such_module:FakeBackend", "no module named 'tests.no_such_module'"),
        ("no_such_package.mod:Backend", "no module named 'no_such_package'"),
        ("tests.fakes:NoSuchBackend", "has no callable 'NoSuchBackend'"),
        ("tests.fakes:BACKEND", "has no callable 'BACKEND'"),  # a string, not a factory
    ],
)
def test_a_bad_name_or_path_is_an_input_error(bge_m3_dir: Path, name: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        Engine.load(str(bge_m3_dir), backend=name, device="cpu")


def test_a_missing_dependency_of_the_module_says_what_to_install(
    bge_m3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_backend_mod.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendUnavailableError, match="pip install not_installed_dependency_xyz"):
        Engine.load(str(bge_m3_dir), backend="my_backend_mod:Backend", device="cpu")
