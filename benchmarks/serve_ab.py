"""The HTTP server under load: `m3engine serve` variants, each driven by `m3engine bench serve`.

    PYTHONPATH=src python benchmarks/serve_ab.py --tokenizer TOKENIZER_DIR \
        --serve-args "--device cuda --frontends 12 --max-concurrent-requests 64" \
        [--variant "--no-gc-freeze" --variant "--gc-freeze"] [--repeat 2] [--duration 15] [--out DIR]

For every variant (extra `serve` flags; one variant of none by default) and round, it starts one
server on 127.0.0.1 (`python -m m3engine serve --model M --port P --serve-args... --variant...`),
waits for /ready, runs each --run against it (`m3engine bench serve`: closed-loop clients in
--processes processes), then stops it with SIGTERM. Rounds take the variants in order, then
reversed (A B B A), so drift on the machine weighs on all alike. Default runs, in this order:
queries with 64 clients (the unloaded latency), a 10x overload (640 clients; a refused client retries
at once), the same with clients that wait the 429's Retry-After, 64 clients again (the recovery),
and passages (8 per request) with 32 clients.

It prints one line per run: throughput, admitted p50/p99, errors by status, the 429s' p99, the
server's CPU per request (its process tree, from /proc: Linux only) and the worst event-loop lag p99
among the server's processes. With --out each run's `bench serve` report is kept there as
v<variant>-r<round>-<i>-<workload>-c<concurrency>.json, beside each server's log.

Without --model it builds a synthetic BGE-M3 (random weights; --tokenizer gives it XLM-R's
tokenizer). A dry run on the CPU: `--tiny --serve-args "--device cpu" --duration 1 --run queries:4`.
The server's own cost, without model compute: `--serve-args "--backend tests.fakes:FakeBackend"` (the
test double; PYTHONPATH=src:. so that `tests` imports).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from workloads import add_model_arguments, checkpoint

RUNS = ("queries:64", "queries:640", "queries:640:retry-after", "queries:64", "passages:32")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--serve-args", default="", help="flags every server gets (one string)")
    p.add_argument("--variant", action="append", help="extra flags of one variant (one string); repeatable")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the variants")
    p.add_argument(
        "--run",
        action="append",
        help="WORKLOAD:CONCURRENCY[:retry-after] (workloads of `m3engine bench serve`); repeatable; "
        f"default: {' '.join(RUNS)}",
    )
    p.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    p.add_argument("--processes", type=int, default=4, help="load-generator processes")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds a server may take to start")
    p.add_argument("--out", type=Path, help="keep each run's JSON report here")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants alive now (0 where /proc lacks it)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                total += cpu_s(int(child))
    except (OSError, IndexError):
        pass
    return total


def summary(report: dict[str, Any], cpu: float) -> str:
    lat = report["latency_ms"]
    refused = report["error_latency_ms"].get("429", {})
    loops = report["diagnostics"].get("server_loops") or {}
    lag = max((p["lag"]["p99_ms"] or 0 for p in loops.values()), default=None)
    per_request = 1000 * cpu / max(1, report["requests"])
    return (
        f"{report['throughput_rps']} ok/s, p50 {lat['p50']} p99 {lat['p99']} ms, "
        f"errors {report['errors_by_status']}, 429 p99 {refused.get('p99')} ms, "
        f"server CPU {per_request:.3f} ms/request, worst loop lag p99 {lag} ms"
    )


def serve_and_load(args: argparse.Namespace, model: str, flags: list[str], tag: str, out: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "m3engine", "serve", "--model", model, "--port", str(port)]
    cmd += ["--log-level", "warning", *flags]
    log = out / f"{tag}-serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + args.ready_timeout
        while not ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                print(f"{tag} ({shlex.join(flags)}): not ready; skipped\n  " + "\n  ".join(tail), flush=True)
                return
            time.sleep(0.5)
        print(f"{tag} ({shlex.join(flags)}): ready", flush=True)
        for i, spec in enumerate(args.run or RUNS):
            workload, concurrency, *rest = spec.split(":")
            report_path = out / f"{tag}-{i}-{workload}-c{concurrency}.json"
            bench = [sys.executable, "-m", "m3engine", "bench", "serve", "--url", url]
            bench += ["--workload", workload, "--concurrency", concurrency, "--duration", str(args.duration)]
            bench += ["--processes", str(args.processes), "--output", str(report_path)]
            bench += ["--honour-retry-after"] if rest == ["retry-after"] else []
            before = cpu_s(server.pid)
            subprocess.run(bench, stdout=subprocess.DEVNULL, check=True, timeout=args.duration + 120)
            report = json.loads(report_path.read_text())
            print(f"  {spec}: {summary(report, cpu_s(server.pid) - before)}", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    args = parser().parse_args()
    variants = [shlex.split(v) for v in (args.variant or [""])]
    common = shlex.split(args.serve_args)
    with tempfile.TemporaryDirectory() as scratch:
        model, _ = checkpoint(args, Path(scratch))
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        for round_ in range(1, args.repeat + 1):
            order = list(range(len(variants)))
            if round_ % 2 == 0:
                order.reverse()
            for v in order:
                serve_and_load(args, model, [*common, *variants[v]], f"v{v}-r{round_}", out)


if __name__ == "__main__":
    main()
