"""Progress of a corpus job on stderr: rows done, rows/s, tokens/s and the time left."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    """Fed once per finished shard; prints at most one line a second (and a last one)."""

    def __init__(self, total_rows: int, quiet: bool = False, out: IO[str] | None = None) -> None:
        self.total, self.quiet, self.out = total_rows, quiet, out or sys.stderr
        self.rows = self.tokens = 0
        self.start = self._shown = time.perf_counter()

    def __call__(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if time.perf_counter() - self._shown >= 1.0:
            self._show()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.rows / elapsed
        left = (self.total - self.rows) / rate if rate > 0 else float("inf")
        eta = "?" if left == float("inf") else f"{left:,.0f} s"
        return (
            f"{self.rows:,}/{self.total:,} rows  {rate:,.0f} rows/s  "
            f"{self.tokens / elapsed:,.0f} tokens/s  ETA {eta}"
        )

    def _show(self) -> None:
        self._shown = time.perf_counter()
        if not self.quiet:
            print(self.line(), file=self.out, flush=True)

    def close(self) -> None:
        self._show()
