"""The frontends' listening sockets: Nagle off on accepted connections, SO_REUSEPORT spreading."""

from __future__ import annotations

import asyncio
import socket

import pytest

from m3engine.server.listen import bind_listener, reuse_port_balances


async def _nodelay_of_accepted(listener: socket.socket) -> int:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
    value = await asyncio.wait_for(seen, 5)
    writer.close()
    server.close()
    await server.wait_closed()
    return value


@pytest.mark.parametrize("reuse_port", [False, True])
def test_accepted_connections_have_nagle_off(reuse_port: bool) -> None:
    """asyncio sets TCP_NODELAY only on sockets created as IPPROTO_TCP: without it each response
    waited ~40 ms for the client's delayed ACK."""
    if reuse_port and not reuse_port_balances():
        pytest.skip("SO_REUSEPORT balancing is Linux-only")
    listener = bind_listener("127.0.0.1", 0, reuse_port=reuse_port)
    assert asyncio.run(_nodelay_of_accepted(listener)) != 0


@pytest.mark.skipif(not reuse_port_balances(), reason="SO_REUSEPORT balancing is Linux-only")
def test_reserved_port_spreads_connections_over_listeners() -> None:
    """The engine process's socket only reserves the port; the frontends' sockets share its connections."""
    reserved = bind_listener("127.0.0.1", 0, reuse_port=True, listen=False)
    port = reserved.getsockname()[1]
    listeners = [bind_listener("127.0.0.1", port, reuse_port=True) for _ in range(4)]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    counts = []
    for listener in listeners:
        listener.setblocking(False)
        accepted = 0
        while True:
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                break
            accepted += 1
        counts.append(accepted)
    for sock in [*clients, *listeners, reserved]:
        sock.close()
    assert sum(counts) == 64 and min(counts) >= 4, counts  # each takes a share; none takes all
