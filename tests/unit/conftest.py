"""Fixtures of the unit tests."""

from __future__ import annotations

import argparse

import pytest

from m3engine.cli.main import build_parser


@pytest.fixture
def serve_parser() -> argparse.ArgumentParser:
    """The `m3engine serve` subcommand's parser, as the CLI builds it."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["serve"]
