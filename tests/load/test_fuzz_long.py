"""The long schema fuzz run of issue 21: at least 10,000 cases (tests/api/fuzzing.py). Marked slow:
`pytest -m slow tests/load/test_fuzz_long.py -s` prints the figures docs/performance.md records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api.fuzzing import fuzz
from tests.api.server_process import ServerProcess

pytestmark = pytest.mark.slow


def test_ten_thousand_cases_find_no_5xx(bge_m3_dir: Path, reranker_dir: Path, classifier_dir: Path) -> None:
    with ServerProcess([bge_m3_dir, reranker_dir, classifier_dir]) as server:
        report = fuzz(server, cases=12_000)
        print("fuzz", json.dumps(report.summary()))
        assert report.cases >= 10_000
        assert not report.problems(), report.problems()
        assert 'outcome="internal"' not in server.metrics()
