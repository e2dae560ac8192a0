"""The loop lag and GC lines of a `bench serve` report (its diagnostics' server_loops and client_loops).

    python tools/loop_summary.py run.json     # one line per server process, then one per client process

Per process, during the run: lag p99 and the maximum's bucket (`<=`), ticks late by 10 ms or more
(`stalls gc/other`: put down to the GC when collections took at least half of the lateness), and full
(generation 2) and generation 1 collections: count, total, p99 and maximum.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _gc(gc: dict[str, Any], generation: str) -> str:
    g = gc.get(generation)
    if not g:
        return f"gen{generation} 0"
    top = g.get("max_ms", g.get("max_le_ms"))
    p99 = f" p99 {g['p99_ms']}" if "p99_ms" in g else ""
    return f"gen{generation} {g['count']}x total {g['total_ms']} ms{p99} max {top}"


def line(name: str, p: dict[str, Any]) -> str:
    lag = p["lag"]
    top = lag.get("max_ms", lag.get("max_le_ms"))
    stalls = p["stalls"]
    return (
        f"  {name}: lag p99 {lag['p99_ms']} ms max <= {top} ms ({p['lag_ticks']} ticks); "
        f"stalls gc {stalls['gc']} other {stalls['other']}; {_gc(p['gc'], '2')}; {_gc(p['gc'], '1')}"
    )


def main(path: str) -> None:
    with open(path) as f:
        d = json.load(f)["diagnostics"]
    for name, p in (d.get("server_loops") or {}).items():
        print(line(name, p))
    for i, p in enumerate(d.get("client_loops") or []):
        print(line(f"client-{i}", p))


if __name__ == "__main__":
    main(sys.argv[1])
