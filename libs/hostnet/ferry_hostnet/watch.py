"""Wake up when the kernel's links or addresses change (rtnetlink multicast groups).

The messages themselves are not parsed: any link or address event means "read the
interfaces again", and :class:`NetlinkWatcher` coalesces a burst of them into one wake-up.
The socket belongs to the network namespace the process runs in.
"""

from __future__ import annotations

import asyncio
import socket

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
NETLINK_ROUTE = 0


class NetlinkWatcher:
    """``await watcher.changed()`` returns after the next link/address event."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._event = asyncio.Event()

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                if not self._sock.recv(65536):
                    break
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: events were lost, which still means "changed"
                break
        self._event.set()

    async def changed(self) -> None:
        await self._event.wait()
        self._event.clear()

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
