"""The long schema fuzz run of issue 21: at least 10,000 cases (tests/api/fuzzing.py). Marked slow:
`pytest -m slow tests/load/test_fuzz_long.py -s` prints the figures docs/performance.md records.

The server runs with --slow-callback-ms 50, so that a slow /live can be told apart: a callback of
the server's own that held its loop is logged; a machine too busy to schedule it is not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.api.fuzzing import fuzz
from tests.api.server_process import ServerProcess

pytestmark = pytest.mark.slow


def test_ten_thousand_cases_find_no_5xx(bge_m3_dir: Path, reranker_dir: Path, classifier_dir: Path) -> None:
    with ServerProcess([bge_m3_dir, reranker_dir, classifier_dir], slow_callback_ms=50) as server:
        started = [
            x for x in server.metrics().splitlines() if x.startswith("m3engine_gc_pause_seconds_count")
        ]
        print("at the start of the run\n" + "\n".join(started))
        report = fuzz(server, cases=13_500)
        slow = sorted(
            (float(m.group(1)), line[:400])
            for line in server.logs().splitlines()
            if (m := re.search(r"took (\d+\.\d+) seconds", line))
        )
        print("fuzz", json.dumps({**report.summary(), "slow_callbacks_s": [s for s, _ in slow[-10:]]}))
        print("\n".join(line for _, line in slow[-5:]))
        # the server's own view: collection pauses and ticks of its loop that ran 10 ms late or more
        metrics = server.metrics().splitlines()
        print(
            "\n".join(
                x
                for x in metrics
                if x.startswith(("m3engine_gc_pause_seconds_count", "m3engine_event_loop_stalls"))
            )
        )
        print(
            "\n".join(
                x
                for x in metrics
                if x.startswith("m3engine_gc_pause_seconds_bucket") and 'generation="2"' in x
            )
        )
        assert report.cases >= 10_000
        assert not report.problems(), report.problems()
        assert 'outcome="internal"' not in server.metrics()
