"""A lean HTTP/1.1 keep-alive client for load generation: one connection per simulated client.

A general client (httpx) spends ~3-4 ms of CPU per request on its pool, models and JSON; one Python
process of it tops out at a few hundred requests a second, so the load generator, not the server,
set the numbers at high concurrency. This one writes prepared request bytes and reads the status line,
the headers and a Content-Length (or chunked) body, nothing else: ~10x less CPU per request.

    >>> conn = Connection("127.0.0.1", 8080, {"Authorization": "Bearer KEY"})
    >>> status = await conn.post("/v1/embeddings", b'{"input": "hi"}')
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"bench serve needs an http:// URL with a host, got {url!r}")
    return parts.hostname, parts.port or 80


class Connection:
    """One persistent connection; reconnects after the server closes it or a transport error."""

    def __init__(self, host: str, port: int, headers: dict[str, str], timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.retry_after_s: float | None = None  # the last response's Retry-After, in seconds
        self.server_ms: float | None = None  # its x-total-time: the server's own time in the app
        self.frontend: str | None = None  # its x-m3engine-frontend: which HTTP process answered

    async def post(self, path: str, body: bytes) -> int:
        """The response status, or 0 for a transport error or timeout (the connection is then reset)."""
        self.retry_after_s = self.server_ms = self.frontend = None
        try:
            return await asyncio.wait_for(self._post(path, body), self.timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            await self.close()
            return 0

    async def _post(self, path: str, body: bytes) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        request = f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
        self._writer.write(request.encode("latin-1") + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        # retry-after-ms first, as the OpenAI SDK reads them
        ms = _number(fields.get("retry-after-ms", ""))
        self.retry_after_s = ms / 1000 if ms is not None else _number(fields.get("retry-after", ""))
        self.server_ms = _number(fields.get("x-total-time", ""))
        self.frontend = fields.get("x-m3engine-frontend")
        if "content-length" in fields:
            await self._reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            await self._read_chunks()
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def _read_chunks(self) -> None:
        assert self._reader is not None
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await self._reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                return

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _number(value: str) -> float | None:
    """A header's non-negative number (delta-seconds, milliseconds); None when absent or not a number
    (an HTTP date in Retry-After, which no server here sends)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 else None
