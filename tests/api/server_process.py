"""`m3engine serve` as a child process over the fake backend and the tiny checkpoints, for tests
that watch the server from outside: its RSS, its exit, its answers under load.

    >>> with ServerProcess([bge_m3_dir, reranker_dir], max_answer_bytes=64 << 20) as server:
    ...     httpx.get(server.url + "/live")
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.fakes import BACKEND, process_env

KEY = "fuzz-key"
# Memory a server may use past its start-up size besides its answer budget: request bodies being
# read and parsed, tokenizer and allocator caches, metrics. Measured on the fuzz run; docs/server.md.
RSS_MARGIN = 256 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, models: list[Path], key: str = KEY, **flags: object) -> None:
        self.key, self.flags = key, {"max_answer_bytes": 256 << 20, "log_level": "warning", **flags}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "m3engine", "serve", "--backend", BACKEND, "--port", str(self.port)]
        cmd += ["--model", str(models[0]), "--api-keys", key, "--no-warmup"]
        if len(models) > 1:
            cmd += ["--extra-models", ",".join(str(m) for m in models[1:])]
        for name, value in self.flags.items():
            cmd += ["--" + name.replace("_", "-"), str(value)]
        self.cmd = cmd
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  # closed by __exit__
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, env=process_env(), stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited at start: {self.logs()[-2000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server was not ready in time")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def rss_budget(self) -> int:
        """Its RSS now (started) plus its answer budget plus the fixed margin."""
        return self.rss() + int(self.flags["max_answer_bytes"]) + RSS_MARGIN  # type: ignore[call-overload]

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", headers={"authorization": f"Bearer {self.key}"}).text
