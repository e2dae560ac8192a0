"""Fixtures for the API tests: engines over the fake backend, an app, and an in-process client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3engine.engine import Engine
from m3engine.models.spec import inspect_model
from m3engine.settings import EngineSettings, ServerSettings
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import TokenIds
from tests.api.asgi import LifespanClient
from tests.fakes import BACKEND, FakeBackend


def fake_engine(path: Path, **settings: Any) -> Engine:
    """A real spec and tokenizer from a tiny checkpoint, with the fake backend in place of the model."""
    spec = inspect_model(path, name=path.name)
    tokenizer = TextTokenizer.load(path)
    backend = FakeBackend(spec, TokenIds(tokenizer.pad_id, tokenizer.special_ids))
    return Engine(spec, tokenizer, backend, EngineSettings(model=str(path), backend=BACKEND, **settings))


@pytest.fixture
def m3_fake(bge_m3_dir: Path) -> Engine:
    return fake_engine(bge_m3_dir, max_batch_tokens=512, max_batch_size=16)


@pytest.fixture
def reranker_fake(reranker_dir: Path) -> Engine:
    return fake_engine(reranker_dir, max_batch_tokens=512, max_batch_size=16)


@pytest.fixture
def classifier_fake(classifier_dir: Path) -> Engine:
    return fake_engine(classifier_dir, max_batch_tokens=512, max_batch_size=16)


def backend_of(engine: Engine) -> FakeBackend:
    assert isinstance(engine.backend, FakeBackend)
    return engine.backend


MakeClient = Callable[..., LifespanClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """make_client(engines, **server_settings) -> a started in-process client (stopped at teardown)."""
    clients: list[LifespanClient] = []

    def make(engines: list[Engine], **overrides: Any) -> LifespanClient:
        settings = dataclasses.replace(ServerSettings(), **overrides)
        client = LifespanClient(engines, settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient, m3_fake: Engine, reranker_fake: Engine) -> httpx.AsyncClient:
    return await make_client([m3_fake, reranker_fake]).start()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
