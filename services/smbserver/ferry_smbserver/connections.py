"""The service's view of smbcore's connections: :class:`~smbcore.aio_server.SMBConnection`
(one per TCP connection) has both ends' addresses (``peer_address``, ``local_address``), the
core (``conn``, with its byte counters) and ``close()``; this module only indexes them."""

from __future__ import annotations

from smbcore.aio_server import SMBConnection, SMBServer
from smbcore.server import ServerConnection


def shells(server: SMBServer) -> dict[ServerConnection, SMBConnection]:
    """Each live connection's core, with its asyncio connection."""
    return {shell.conn: shell for shell in list(server.connections)}
