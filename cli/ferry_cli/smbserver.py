"""``ferry smbserver``: a standalone SMB 3 server without NATS (like ``smbd -F`` for a quick
share), and the user database it authenticates against."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import ipaddress
import logging
import os
import signal
import socket
from pathlib import Path

from ferry_hostnet import InterfaceOverride, parse_speed
from ferry_hostnet.collect import collect_inventory
from smbcore.aio_server import ServerSettings, SMBServer
from smbcore.auth import ServerAuthenticator, UserDatabase, UserDatabaseError
from smbcore.fileservice import FsFileService
from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo
from smbcore.messages import ShareType
from smbcore.pipes import PipeService, ShareRouter
from smbcore.server import ServerPolicy, Share

from . import smbviews
from .common import CliError

log = logging.getLogger(__name__)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_share(value: str) -> Share:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    if any(c in name for c in '\\/:*?"<>|') or len(name) > 80:
        raise argparse.ArgumentTypeError(f"invalid share name {name!r}")
    folder = Path(path)
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"share {name}: {path} is not a folder")
    # Listed by srvsvc whatever the name (as Samba lists NAME$ shares; Windows clients hide them).
    return Share(name, path=str(folder.resolve()))


def parse_interface(value: str) -> NetworkInterfaceInfo:
    """``ADDRESS[,speed=10G][,rss][,rdma][,ifindex=N]``"""
    address, *options = value.split(",")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {address!r}") from None
    speed, caps, index = 1_000_000_000, 0, 1
    for option in options:
        key, _, val = option.partition("=")
        try:
            if key == "speed":
                speed = parse_speed(val)
            elif key == "ifindex":
                index = int(val)
            elif key in ("rss", "rdma") and not val:
                caps |= InterfaceCapability.RSS if key == "rss" else InterfaceCapability.RDMA
            else:
                raise ValueError(f"unknown option {option!r}")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"--interface {value}: {exc}") from None
    return NetworkInterfaceInfo(index, caps, speed, address)


def host_interfaces(overrides: dict[str, InterfaceOverride] | None = None) -> list[NetworkInterfaceInfo]:
    """Every usable address of this host's up interfaces, as FSCTL_QUERY_NETWORK_INTERFACE_INFO lists them."""
    inventory = collect_inventory("localhost", {}, overrides or {})
    entries = []
    for iface in inventory.interfaces:
        if not iface.is_up:
            continue
        caps = (InterfaceCapability.RSS if iface.rss_capable else 0) | (
            InterfaceCapability.RDMA if iface.rdma_capable else 0
        )
        for address in iface.addresses:
            if address.scope in ("global", "site"):
                entries.append(
                    NetworkInterfaceInfo(iface.ifindex, caps, iface.speed_bps or 0, address.address)
                )
    return entries


def netbios_name() -> str:
    """This host's name as NetrServerGetInfo reports it (NetBIOS style: short, upper case)."""
    return socket.gethostname().split(".")[0].upper()[:15] or "FERRY"


async def serve(args: argparse.Namespace) -> int:
    try:
        users = UserDatabase(args.users)
    except UserDatabaseError as exc:
        raise CliError(str(exc), 2) from None
    shares = {s.name: s for s in args.share}
    guests = {name.lower() for name in args.guest}
    if unknown := guests - {name.lower() for name in shares}:
        raise CliError(f"--guest names no --share: {', '.join(sorted(unknown))}", 2)
    if guests and args.encrypt:
        raise CliError("--guest and --encrypt exclude each other: guest sessions have no key", 2)
    if not users.users() and not guests:
        raise CliError(f"{args.users} has no users; add one with `ferry smbserver user add`", 2)
    shares = {
        n: dataclasses.replace(s, guest_ok=n.lower() in guests, encrypt=args.encrypt)
        for n, s in shares.items()
    }
    # With a guest share, IPC$ takes null sessions too, so `smbclient -L -N` lists the shares.
    shares["IPC$"] = Share("IPC$", ShareType.PIPE, encrypt=args.encrypt, guest_ok=bool(guests))
    interfaces = list(args.interface)
    refresher: asyncio.Task[None] | None = None
    if not interfaces:
        # Read the kernel off the event loop (pyroute2's synchronous API runs its own loop),
        # now and every minute; the server answers from the latest reading.
        interfaces[:] = await asyncio.to_thread(host_interfaces)

        async def refresh() -> None:
            while True:
                await asyncio.sleep(60)
                try:
                    interfaces[:] = await asyncio.to_thread(host_interfaces)
                except OSError as exc:
                    log.warning("cannot read the host's interfaces", extra={"error": str(exc)})

        refresher = asyncio.create_task(refresh())
    settings = ServerSettings(
        shares=shares,
        authenticator_factory=lambda: ServerAuthenticator(users, allow_guests=bool(guests)),
        initial_token=ServerAuthenticator.initial_token(),
        policy=ServerPolicy(encrypt_all=args.encrypt),
        interfaces=lambda: list(interfaces),
        files=ShareRouter(
            disk=FsFileService(),
            pipes=PipeService(lambda: list(shares.values()), server_name=netbios_name()),
        ),
    )
    server = SMBServer(settings)
    host, port = args.listen
    try:
        addresses = await server.start(host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for address in addresses:
        print(
            f"serving SMB on {address[0]}:{address[1]}: "
            + ", ".join(
                f"{s.name}={s.path}{' (guests allowed)' if s.guest_ok else ''}"
                for s in shares.values()
                if s.path
            )
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if refresher is not None:
        refresher.cancel()
    await server.close()
    return 0


def user_command(args: argparse.Namespace) -> int:
    try:
        db = UserDatabase(args.users)
        if args.user_command == "list":
            for name in db.users():
                print(name)
            return 0
        if args.user_command == "remove":
            db.remove_user(args.name)
            return 0
        password = os.environ.get("FERRY_SMB_PASSWORD")
        if password is None:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                raise CliError("the passwords differ")
        if args.user_command == "add":
            db.add_user(args.name, password)
        else:
            db.set_password(args.name, password)
    except UserDatabaseError as exc:
        raise CliError(str(exc)) from None
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "smbserver",
        help="a standalone SMB 3 server, its users, and the smbserver service's sessions and shares",
    )
    actions = p.add_subparsers(dest="smbserver_command", metavar="ACTION", required=True)
    s = actions.add_parser("serve", help="serve folders over SMB 3 until Ctrl-C (no NATS needed)")
    s.add_argument(
        "--listen", type=parse_listen, default=("0.0.0.0", 445), help="HOST:PORT (default 0.0.0.0:445)"
    )
    s.add_argument(
        "--share", type=parse_share, action="append", default=[], metavar="NAME=PATH", required=True
    )
    s.add_argument("--users", type=Path, required=True, help="user database (see `ferry smbserver user`)")
    s.add_argument("--encrypt", action="store_true", help="require encryption for every share")
    s.add_argument(
        "--guest",
        action="append",
        default=[],
        metavar="NAME",
        help="let anonymous and guest sessions (no password, nothing signed) connect to share NAME",
    )
    s.add_argument(
        "--interface",
        type=parse_interface,
        action="append",
        default=[],
        metavar="ADDR[,speed=10G][,rss][,rdma][,ifindex=N]",
        help="what FSCTL_QUERY_NETWORK_INTERFACE_INFO answers (default: this host's interfaces)",
    )
    s.set_defaults(run=lambda args: asyncio.run(serve(args)))
    u = actions.add_parser("user", help="manage the user database (NT hashes, never passwords)")
    user_actions = u.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    for name, text in (
        ("add", "add a user"),
        ("passwd", "set a user's password"),
        ("remove", "remove a user"),
    ):
        a = user_actions.add_parser(name, help=f"{text} (password from $FERRY_SMB_PASSWORD or a prompt)")
        a.add_argument("name")
        a.add_argument("--users", type=Path, required=True)
        a.set_defaults(run=user_command)
    lst = user_actions.add_parser("list", help="list the users")
    lst.add_argument("--users", type=Path, required=True)
    lst.set_defaults(run=user_command)
    # The smbserver service's views (over its HTTP API).
    smbviews.register(actions)
