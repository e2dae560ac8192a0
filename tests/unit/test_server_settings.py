"""ServerSettings: every field is a flag and an M3ENGINE_* variable; secrets never print."""

from __future__ import annotations

import argparse
import dataclasses

from m3engine.settings import ServerSettings, add_arguments, from_sources


def parse(argv: list[str], env: dict[str, str]) -> ServerSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser, ServerSettings)
    settings: ServerSettings = from_sources(ServerSettings, vars(parser.parse_args(argv)), env)
    return settings


def test_every_field_is_a_flag_and_an_env_var() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, ServerSettings)
    flags = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(ServerSettings)} <= flags
    env = {"M3ENGINE_PORT": "9000", "M3ENGINE_API_KEYS": "a,b", "M3ENGINE_PUBLIC_METRICS": "true"}
    settings = parse(["--port", "9100", "--cors-origins", "https://x.example"], env)
    assert settings.port == 9100  # the flag beats the variable
    assert settings.api_keys == ("a", "b") and settings.public_metrics
    assert settings.cors_origins == ("https://x.example",)


def test_safe_defaults() -> None:
    s = ServerSettings()
    assert s.host == "127.0.0.1" and s.cors_origins == () and not s.public_metrics
    assert s.max_request_bytes > 0 and s.max_inputs_per_request > 0


def test_secrets_redacted_in_public_view_and_repr() -> None:
    settings = parse(["--api-keys", "super-secret-key"], {})
    assert settings.public()["api_keys"] == "***"
    assert "super-secret-key" not in repr(settings)


def test_piecewise_json_equals_whole() -> None:
    import json

    from m3engine.server.respond import encode

    payloads = [
        {"object": "list", "data": [{"a": [1.5, 2.0]}, {"b": None}], "usage": {"n": 1}},
        {"data": []},
        [[0.25, 1.0], [3.0]],
        [],
        {"plain": "dict", "nested": {"data": [1]}},
    ]
    for payload in payloads:
        assert json.loads(encode(payload)) == payload


def test_small_answers_are_built_on_the_loop_big_ones_in_a_thread() -> None:
    import asyncio
    import threading

    import numpy as np

    from m3engine.results import Embedding
    from m3engine.server.respond import INLINE_VALUES, respond, values_of

    query = Embedding(index=0, num_tokens=5, truncated=False, dense=np.zeros(1024, np.float32))
    passages = [
        Embedding(index=i, num_tokens=9, truncated=False, colbert=np.zeros((8, 1024))) for i in range(8)
    ]
    assert values_of([query]) == 1024 and values_of(passages) == 8 * 8 * 1024

    async def built_on(values: int) -> str:
        names: list[str] = []

        def build() -> dict[str, int]:
            names.append(threading.current_thread().name)
            return {"n": 1}

        response = await respond(build, values)
        assert response.body == b'{"n":1}'
        return names[0]

    main = threading.current_thread().name
    assert asyncio.run(built_on(values_of([query]))) == main
    assert asyncio.run(built_on(INLINE_VALUES + 1)) != main


def test_frontends_default_to_auto_sized_by_the_cpus_and_the_device() -> None:
    from m3engine.server.serving import auto_frontends

    assert parse([], {}).frontends is None  # auto
    assert parse(["--frontends", "auto"], {"M3ENGINE_FRONTENDS": "3"}).frontends is None
    assert parse([], {"M3ENGINE_FRONTENDS": "3"}).frontends == 3
    assert auto_frontends("cuda", 16) == 12  # the engine process keeps four
    assert auto_frontends("cuda:1", 4) == 1 and auto_frontends("cuda", 2) == 1
    assert auto_frontends("cpu", 64) == 1  # the model's forward passes want the cores


def test_auto_means_none_only_for_optional_numbers() -> None:
    settings = parse(["--reranker", "auto"], {})
    assert settings.reranker == "auto"  # a model (directory) named auto, not "no reranker"
    assert parse(["--frontends", "auto"], {}).frontends is None
