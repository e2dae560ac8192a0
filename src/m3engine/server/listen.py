"""The listening sockets of the HTTP processes, shared by the supervisor (multiproc/supervisor.py), which
reserves the port, and each frontend (multiproc/frontend.py), which listens on its own socket of it.
"""

from __future__ import annotations

import socket
import sys


def reuse_port_balances() -> bool:
    """Whether SO_REUSEPORT spreads connections over the listening sockets (Linux does, by a hash of
    each connection; a shared socket goes to whichever process wakes first: 32/16/15/1 connections
    over 4 frontends were seen, so one frontend's event loop set the latency of a third of them)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_listener(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket on (host, port). With `reuse_port`, more sockets may bind the same port; one that
    does not listen only reserves it (the kernel gives connections to listening sockets only)."""
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # they are TCP, and accepted sockets inherit it. Without it every response waited ~40 ms for the
    # client's delayed ACK (measured: 44 ms for /live, 48 ms per request at any concurrency).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock
