"""Issue 21's load: 200 concurrent clients for 60 s, 30 % hanging up mid-upload (tests/load/hangups.py).
Marked slow: `pytest -m slow tests/load/test_hangups_long.py -s` prints the counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.load.check_hangups import run_and_check

pytestmark = pytest.mark.slow


def test_two_hundred_clients_thirty_percent_hanging_up(bge_m3_dir: Path) -> None:
    run_and_check([bge_m3_dir], clients=200, seconds=60)
