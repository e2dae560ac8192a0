"""The load generator's HTTP/1.1 client against a raw server: lengths, chunks, closes and drops."""

from __future__ import annotations

import asyncio

from m3engine.bench.http_client import Connection, host_port

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-total-time: 3.25\r\nx-m3engine-frontend: 2\r\n\r\nhello",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nretry-after-ms: 750\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    b"",  # the server drops the connection mid-request: a transport error (status 0)
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
]


async def _exercise() -> tuple[list[tuple[int, float | None, float | None, str | None]], int, list[bytes]]:
    queue = list(RESPONSES)
    connections = 0
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while queue:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            bodies.append(await reader.readexactly(length))
            response = queue.pop(0)
            if not response or b"Connection: close" in response:
                writer.write(response)
                await writer.drain()
                writer.close()
                return
            writer.write(response)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = Connection(*host_port(f"http://127.0.0.1:{port}"), {"Authorization": "Bearer k"}, timeout=5)
    statuses = []
    for i in range(len(RESPONSES)):
        status = await conn.post("/v1/embeddings", b'{"input": "%d"}' % i)
        statuses.append((status, conn.retry_after_s, conn.server_ms, conn.frontend))
    await conn.close()
    server.close()
    await server.wait_closed()
    return statuses, connections, bodies


def test_statuses_bodies_and_reconnects() -> None:
    statuses, connections, bodies = asyncio.run(_exercise())
    assert [status for status, *_ in statuses] == [200, 429, 503, 429, 201, 0, 200]
    # only the 429s'; retry-after-ms before Retry-After, as the OpenAI SDK reads them
    assert [retry for _, retry, *_ in statuses] == [None, 2.0, None, 0.75, None, None, None]
    # the server's own time and the frontend, from the response that sent them, reset after
    assert [(ms, frontend) for *_, ms, frontend in statuses[:2]] == [(3.25, "2"), (None, None)]
    assert connections == 3  # reconnected after the server's close and after the drop
    assert bodies == [b'{"input": "%d"}' % i for i in range(len(RESPONSES))]
