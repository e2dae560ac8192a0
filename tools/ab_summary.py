"""One line per variant and run of an A/B made by tools/device_frontends.sh (VARIANTS, REPEAT).

    python tools/ab_summary.py OUT_DIR

For each f<N>-v<i>-r<round>-<run>.json, grouped by (N, run, variant), the rounds side by side:
admitted p99, 429 p99, the worst frontend's lag p99 and its full-collection (gen2) time, and the
server's stalls (ticks late by >= 10 ms) put down to the GC and to anything else, summed over its
processes.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

NAME = re.compile(r"^f(\d+)-v(\d+)-r(\d+)-(.+)\.json$")


def row(report: dict[str, Any]) -> str:
    loops = report["diagnostics"].get("server_loops") or {}
    fronts = [p for name, p in loops.items() if name.startswith("frontend")]
    lag = max((p["lag"]["p99_ms"] or 0 for p in fronts), default=None)
    gen2 = max((p["gc"].get("2", {}).get("total_ms", 0) for p in fronts), default=None)
    stalls = {c: sum(p["stalls"][c] for p in loops.values()) for c in ("gc", "other")}
    refused = report["error_latency_ms"].get("429", {}).get("p99")
    return (
        f"p99 {report['latency_ms']['p99']} ms, 429 p99 {refused}, worst frontend lag p99 {lag} ms, "
        f"gen2 {gen2} ms, stalls gc/other {stalls['gc']}/{stalls['other']}"
    )


def main(out: str) -> None:
    runs: dict[tuple[int, str, int], list[tuple[int, str]]] = defaultdict(list)
    for path in sorted(Path(out).glob("f*-v*-r*-*.json")):
        match = NAME.match(path.name)
        if match is None:
            continue
        n, variant, round_, run = int(match[1]), int(match[2]), int(match[3]), match[4]
        runs[n, run, variant].append((round_, row(json.loads(path.read_text()))))
    for (n, run, variant), rounds in sorted(runs.items()):
        for round_, text in sorted(rounds):
            print(f"f{n} {run} v{variant} r{round_}: {text}")


if __name__ == "__main__":
    main(sys.argv[1])
