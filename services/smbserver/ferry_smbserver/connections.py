"""What the service needs of smbcore's asyncio server beyond its public API, in one place.

``SMBServer.connections`` holds one protocol object per TCP connection, with ``peer`` and
``conn`` (the core's :class:`~smbcore.server.ServerConnection`). Its local address and a way
to close it are not public yet: they are read here through the transport, and nowhere else,
so that switching to the public attributes is a change to this module only.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from smbcore.aio_server import SMBServer
from smbcore.server import ServerConnection


class ConnectionShell(Protocol):
    """One connection of an :class:`SMBServer` (its asyncio protocol), as the service sees it."""

    peer: str
    conn: ServerConnection


def split_address(text: str) -> tuple[str, int] | None:
    """``"10.0.0.1:445"`` or ``"::1:445"`` (as ``peer`` is written) -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _transport(shell: ConnectionShell) -> asyncio.BaseTransport | None:
    transport = getattr(shell, "_transport", None)
    return transport if isinstance(transport, asyncio.BaseTransport) else None


def local_address(shell: ConnectionShell) -> tuple[str, int] | None:
    """The server-side address and port of the connection (which local interface it came in on)."""
    transport = _transport(shell)
    if transport is None:
        return None
    sockname = transport.get_extra_info("sockname")
    if not sockname:
        return None
    return str(sockname[0]), int(sockname[1])


def peer_address(shell: ConnectionShell) -> tuple[str, int] | None:
    return split_address(shell.peer)


def close_connection(shell: ConnectionShell) -> None:
    transport = _transport(shell)
    if transport is not None and not transport.is_closing():
        transport.close()


def shells(server: SMBServer) -> dict[ServerConnection, ConnectionShell]:
    """Each live connection's core, with its shell."""
    return {shell.conn: shell for shell in list(server.connections)}
