"""One hang-up load run and its checks, shared by the CI form and the long one."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from tests.api.server_process import ServerProcess
from tests.load.hangups import gauges, load, server_5xx


def run_and_check(
    models: list[Path], clients: int, seconds: float, hangup_share: float = 0.3
) -> Counter[str]:
    with ServerProcess(models, log_level="info") as server:
        counts = asyncio.run(load(server, clients, seconds, hangup_share))
        deadline = time.monotonic() + 10
        while any(gauges(server).values()) and time.monotonic() < deadline:
            time.sleep(0.1)  # answers whose clients left are still being dropped
        print("hangups", json.dumps({"clients": clients, "seconds": seconds, **counts, **gauges(server)}))
        answered = sum(n for status, n in counts.items() if status.isdigit())
        assert answered > 0 and counts["hung_up"] > 0, counts
        assert not [s for s in counts if s.isdigit() and int(s) >= 500], counts
        assert not server_5xx(server), server_5xx(server)[:5]
        assert gauges(server) == dict.fromkeys(gauges(server), 0.0)
        assert server.alive()
    return counts
