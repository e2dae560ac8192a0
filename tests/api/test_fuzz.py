"""schemathesis over the OpenAPI schema, against a real server: valid and invalid requests, no 5xx."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.live import LiveServer

EXAMPLES = {"positive": 12, "negative": 8}  # per operation and mode: a few hundred requests in all


@pytest.fixture
def live(m3_fake: Engine, reranker_fake: Engine, classifier_fake: Engine) -> Iterator[LiveServer]:
    settings = dataclasses.replace(ServerSettings(warmup=False), max_inputs_per_request=64)
    with LiveServer([m3_fake, reranker_fake, classifier_fake], settings) as server:
        yield server


def test_schema_fuzz_finds_no_5xx(live: LiveServer) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures: list[str] = []
    calls = 0
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode_name, count in EXAMPLES.items():
            mode = GenerationMode.POSITIVE if mode_name == "positive" else GenerationMode.NEGATIVE

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=count,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=live.url, timeout=10)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.path} -> {response.status_code}: {response.text[:200]}"
                    )

            try:
                check()
            except Unsatisfiable:  # e.g. no invalid request exists for a GET without parameters
                continue
    print("schemathesis statuses", sorted(statuses.items()))
    assert calls >= 200
    assert not failures, failures[:5]
    assert httpx.get(live.url + "/ready").status_code == 200  # still serving afterwards
