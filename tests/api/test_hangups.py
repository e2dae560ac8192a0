"""Clients that hang up mid-upload are 499s, never 5xx, and leave nothing admitted (issue 21).

The short form of tests/load/test_hangups_long.py: 40 clients for 4 s, 30 % hanging up."""

from __future__ import annotations

from pathlib import Path

from tests.load.check_hangups import run_and_check


def test_hangups_mid_upload_leave_no_5xx_and_nothing_admitted(bge_m3_dir: Path) -> None:
    run_and_check([bge_m3_dir], clients=40, seconds=4)
