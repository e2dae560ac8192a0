"""A schema fuzz run against a real `m3engine serve` process, with its RSS and /live watched.

schemathesis generates requests from /openapi.json (valid and invalid ones) and runs every check it
has on each answer; a share of the valid requests is then sent again with invalid Unicode (lone
surrogates, control and invisible characters) put into their strings, and checked for no 5xx. While
it runs, one thread samples the server's RSS and another times /live.

    >>> with FuzzServer(models, max_answer_bytes=...) as server:
    ...     report = fuzz(server, cases=300)
    >>> report.problems()     # [] when no 5xx, no failed check, no death, /live fast, RSS in budget

tests/api/test_fuzz.py runs a short form in CI; tests/load/test_fuzz_long.py the 10,000-case one.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.api.server_process import ServerProcess

# Characters no text route may fail on with a 5xx: either half of a surrogate pair alone, C0
# controls, a byte-order mark, zero-width and non-characters.
BAD_CHARACTERS = [
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\x00",
    "\x07",
    "\x1b",
    "\u200b",
    "\ufeff",
    "\uffff",
]
# What a request that the schema allows may answer besides 2xx (docs/server.md, "promises"): bad
# text (422), a model that is not served (404), an answer or a request over a budget (413), a full
# server (429).
ACCEPTED = ["2xx", "401", "404", "413", "422", "429"]


@dataclass
class FuzzReport:
    cases: int = 0
    invalid_unicode_cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # check name -> cases it failed
    examples: list[str] = field(default_factory=list)
    live_s: list[float] = field(default_factory=list)  # every /live probe's time, in order
    baseline_rss: int = 0
    peak_rss: int = 0
    rss_budget: int = 0
    alive: bool = True

    @property
    def slowest_live_s(self) -> float:
        return max(self.live_s, default=0.0)

    def live_percentile(self, q: float) -> float:
        ordered = sorted(self.live_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def problems(self, live_limit_s: float = 0.1) -> list[str]:
        """Everything wrong with the run; `/live` must answer within `live_limit_s` every time."""
        out = [f"{name}: {count} cases" for name, count in self.failures.items()]
        out += [f"{status}: {count} answers" for status, count in self.statuses.items() if status >= 500]
        if not self.alive:
            out.append("the server process died")
        if self.slowest_live_s > live_limit_s:
            late = sum(t > live_limit_s for t in self.live_s)
            out.append(
                f"/live took up to {self.slowest_live_s * 1000:.0f} ms ({late} of {len(self.live_s)} probes)"
            )
        if self.peak_rss > self.rss_budget:
            out.append(f"peak RSS {self.peak_rss >> 20} MiB over the budget {self.rss_budget >> 20} MiB")
        return out + self.examples[:5]

    def summary(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "invalid_unicode_cases": self.invalid_unicode_cases,
            "statuses": dict(sorted(self.statuses.items())),
            "failures": dict(self.failures),
            "live_ms": {
                "probes": len(self.live_s),
                "p50": round(self.live_percentile(0.5) * 1000, 1),
                "p99": round(self.live_percentile(0.99) * 1000, 1),
                "max": round(self.slowest_live_s * 1000, 1),
                "over_100": sum(t > 0.1 for t in self.live_s),
            },
            "rss_mib": {
                "baseline": self.baseline_rss >> 20,
                "peak": self.peak_rss >> 20,
                "budget": self.rss_budget >> 20,
            },
        }


class Watch:
    """Samples the server's RSS (every 10 ms, a thread) and times /live (every 50 ms, in a process of
    its own: in this one, the GIL that schemathesis holds while it generates would add its waits)."""

    def __init__(self, server: ServerProcess, report: FuzzReport) -> None:
        self.server, self.report, self.stop = server, report, threading.Event()
        self.thread = threading.Thread(target=self._rss, daemon=True)
        self.times = tempfile.NamedTemporaryFile(suffix=".live")  # noqa: SIM115  # closed by __exit__
        context = multiprocessing.get_context("spawn")
        self.probe_stop = context.Event()
        self.probe = context.Process(target=probe_live, args=(server.url, self.probe_stop, self.times.name))

    def __enter__(self) -> Watch:
        self.thread.start()
        self.probe.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.probe_stop.set()
        self.thread.join()
        self.probe.join()
        lines = Path(self.times.name).read_text().split()
        self.times.close()
        self.report.live_s = [float(x) for x in lines if x != "dead"]
        self.report.alive = self.report.alive and "dead" not in lines

    def _rss(self) -> None:
        process = psutil.Process(self.server.pid)
        while not self.stop.wait(0.01):
            try:
                self.report.peak_rss = max(self.report.peak_rss, process.memory_info().rss)
            except psutil.NoSuchProcess:
                self.report.alive = False
                return


def probe_live(url: str, stop: Any, path: str) -> None:
    """Runs in its own process: GET /live every 50 ms, each one's seconds a line of `path`."""
    with httpx.Client(base_url=url, timeout=30) as client, open(path, "w") as out:
        while not stop.wait(0.05):
            start = time.monotonic()
            try:
                client.get("/live")
            except httpx.TransportError:
                out.write("dead\n")
                return
            out.write(f"{time.monotonic() - start:.6f}\n")


def spoil(value: Any, rng: random.Random) -> Any:
    """`value` with a bad character put into each of its strings."""
    if isinstance(value, str):
        at = rng.randint(0, len(value))
        return value[:at] + rng.choice(BAD_CHARACTERS) + value[at:]
    if isinstance(value, list):
        return [spoil(v, rng) for v in value]
    if isinstance(value, dict):
        return {k: spoil(v, rng) for k, v in value.items()}
    return value


def fuzz(server: ServerProcess, cases: int, seed: int = 21, unicode_share: float = 0.3) -> FuzzReport:
    """About `cases` requests over every operation, half valid and half invalid per the schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    checks = CHECKS.get_all()
    # The key through schemathesis's auth (not a plain header), so that its ignored_auth check can
    # send a request without it and see the 401.
    config = schemathesis.Config.from_dict(
        {
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
            "auth": {"openapi": {"bearer": {"bearer": server.key}}},
            # every generated request carries the valid key (ignored_auth still sends each without it)
            "generation": {"with-security-parameters": False},
        }
    )
    headers = {"authorization": f"Bearer {server.key}"}
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=config, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    per_run = max(1, cases // (2 * len(operations)))
    report = FuzzReport(baseline_rss=server.rss(), rss_budget=server.rss_budget())
    rng = random.Random(seed)
    with Watch(server, report), httpx.Client(base_url=server.url, timeout=60) as raw:

        def runner(operation: Any, mode: GenerationMode) -> Any:
            positive = mode is GenerationMode.POSITIVE

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=per_run,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                _one(case, server, checks, report)
                spoilable = isinstance(case.body, (dict, list, str))
                if positive and spoilable and rng.random() < unicode_share:
                    _spoiled(case, raw, headers, rng, report)

            return run

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    runner(operation, mode)()
                except Unsatisfiable:  # e.g. no invalid request exists for a GET without parameters
                    continue
    report.alive = report.alive and server.alive()
    return report


def _one(case: Any, server: ServerProcess, checks: list[Any], report: FuzzReport) -> None:
    from schemathesis.core.failures import FailureGroup

    report.cases += 1
    try:
        response = case.call_and_validate(base_url=server.url, checks=checks, timeout=60)
        report.statuses[response.status_code] += 1
    except FailureGroup as group:
        for failure in group.exceptions:
            name = type(failure).__name__
            report.failures[name] += 1
            if len(report.examples) < 20:
                report.examples.append(f"{case.method} {case.path} {name}: {str(failure)[:300]}")


def _spoiled(
    case: Any, raw: httpx.Client, headers: dict[str, str], rng: random.Random, report: FuzzReport
) -> None:
    body = json.dumps(spoil(case.body, rng))  # ensure_ascii: a lone surrogate travels as \ud800
    response = raw.request(
        case.method,
        case.formatted_path,
        content=body,
        headers={**headers, "content-type": "application/json"},
    )
    report.cases += 1
    report.invalid_unicode_cases += 1
    report.statuses[response.status_code] += 1
    if response.status_code >= 500 and len(report.examples) < 20:
        report.examples.append(f"{case.method} {case.path} with invalid Unicode -> {response.status_code}")
