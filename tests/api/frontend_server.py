"""`m3engine serve --frontends N` as a real process on loopback, and probes that know which frontend
answered (the X-M3Engine-Frontend header)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.api.test_lifecycle import free_port
from tests.fakes import process_env

FRONTEND = "x-m3engine-frontend"


class FrontendServer:
    def __init__(
        self, model: Path, *args: str, env: dict[str, str] | None = None, frontends: int = 2
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.frontends = frontends
        cmd = [sys.executable, "-m", "m3engine", "serve", "--model", str(model), "--device", "cpu"]
        cmd += ["--port", str(self.port), "--frontends", str(frontends), "--log-level", "warning", *args]
        full_env = process_env(**(env or {}))
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_all_ready(self, timeout: float = 90) -> None:
        """Until every frontend has answered /ready 200 (each probe is a new connection)."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < self.frontends:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early: {self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"frontends ready: {sorted(seen)} of {self.frontends}")
            try:
                r = httpx.get(self.url + "/ready", timeout=2)
                if r.status_code == 200:
                    seen.add(r.headers[FRONTEND])
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode() if self.proc.poll() is not None else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def client_on(url: str, frontend: str, tries: int = 40) -> httpx.Client:
    """A client whose one keep-alive connection is held by the given frontend."""
    for _ in range(tries):
        http = httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
        if http.get("/live").headers[FRONTEND] == frontend:
            return http
        http.close()
    raise AssertionError(f"no connection landed on frontend {frontend} in {tries} tries")


def raw_socket_on(url: str, frontend: str, tries: int = 40) -> socket.socket:
    """A raw keep-alive connection held by the given frontend (after one GET /live on it)."""
    host, port = url.removeprefix("http://").split(":")
    for _ in range(tries):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        if f"{FRONTEND}: {frontend}\r\n".encode() in head.lower():
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += sock.recv(4096)
            return sock
        sock.close()
    raise AssertionError(f"no raw connection landed on frontend {frontend} in {tries} tries")
