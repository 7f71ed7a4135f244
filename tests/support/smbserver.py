"""Ferry's SMB server running in a background thread, for tests whose peers are synchronous
(smbprotocol) or separate processes (smbclient, smbtorture)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from smbcore.aio_server import ServerSettings, SMBServer
from smbcore.auth import ServerAuthenticator, UserDatabase
from smbcore.fileservice import FsFileService
from smbcore.ioctl import NetworkInterfaceInfo
from smbcore.messages import ShareType
from smbcore.pipes import PipeService, ShareRouter
from smbcore.server import ServerPolicy, Share

USER = "alice"
PASSWORD = "Corr3ct-Horse"
OTHER_USER = "bob"
OTHER_PASSWORD = "Batt3ry-Staple"


@dataclass
class RunningServer:
    host: str
    port: int
    server: SMBServer
    loop: asyncio.AbstractEventLoop
    users: UserDatabase


@contextmanager
def smb_server(
    tmp: Path,
    *,
    policy: ServerPolicy | None = None,
    shares: dict[str, Share] | None = None,
    interfaces: list[NetworkInterfaceInfo] | None = None,
    host: str = "127.0.0.1",
    guests: bool = False,
) -> Iterator[RunningServer]:
    """The default shares are ``data``, ``secret`` (encrypted), ``alice_only`` and IPC$; with
    ``guests``, also ``pub``, which anonymous and guest sessions may use (as may IPC$)."""
    users = UserDatabase(tmp / "users.db")
    users.add_user(USER, PASSWORD)
    users.add_user(OTHER_USER, OTHER_PASSWORD)
    if shares is None:
        for name in ("data", "secret", "alice_only", "pub"):
            (tmp / name).mkdir(exist_ok=True)
        shares = {
            "data": Share("data", path=str(tmp / "data")),
            "IPC$": Share("IPC$", ShareType.PIPE, guest_ok=guests),
            "secret": Share("secret", encrypt=True, path=str(tmp / "secret")),
            "alice_only": Share("alice_only", users=frozenset({USER}), path=str(tmp / "alice_only")),
        }
        if guests:
            shares["pub"] = Share("pub", path=str(tmp / "pub"), guest_ok=True)
    table = shares  # the live share list: srvsvc lists what is in it at each call
    pipes = PipeService(lambda: list(table.values()), server_name="FERRYTEST")
    settings = ServerSettings(
        shares=table,
        # Anonymous and guest logons only while some share allows them, as `ferry smbserver serve` does.
        authenticator_factory=lambda: ServerAuthenticator(
            users, allow_guests=any(s.guest_ok for s in table.values())
        ),
        initial_token=ServerAuthenticator.initial_token(),
        policy=policy or ServerPolicy(),
        interfaces=lambda: list(interfaces or []),
        files=ShareRouter(disk=FsFileService(), pipes=pipes),
    )
    loop = asyncio.new_event_loop()
    server = SMBServer(settings)
    (address,) = loop.run_until_complete(server.start(host, 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield RunningServer(host, address[1], server, loop, users)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
