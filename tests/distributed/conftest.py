"""A small local Ray cluster for the tests of this folder, shut down after each module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import process_env


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    env = process_env(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        M3ENGINE_FAKE_DELAY_S="0.03",  # only the fake backend reads it: the killed-worker test's shards
    )
    keep = ("PYTHONPATH", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "M3ENGINE_FAKE_DELAY_S")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,  # the machine is shared; the job moves only summaries
        runtime_env={"env_vars": {k: env[k] for k in keep}},
        log_to_driver=bool(os.environ.get("M3ENGINE_RAY_LOGS")),  # quiet unless asked
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request: pytest.FixtureRequest) -> None:
    """CI runs `pytest` without -m: the long forms here run only with `-m slow`."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("a long form: run it with -m slow")
