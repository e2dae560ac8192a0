"""Seconds per stage of one request (response headers and the stage histograms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Timings:
    tokenize: float = 0.0
    queue: float = 0.0
    forward: float = 0.0
    tokens: int = 0
