"""``ferry smb ls|get|put|rm``: Ferry's SMB 3 client on the command line, with Multichannel.

Addresses are ``//host[:port]/share/path`` (``[v6addr]`` for an IPv6 address, ``\\\\`` works
too). The password comes from ``FERRY_SMB_PASSWORD`` or, on a terminal, a prompt. ``get`` and
``put`` use Multichannel unless ``--no-multichannel``: the server's interfaces are queried and
the local ones read from the kernel (this network namespace's, so the command works under
``ip netns exec``); an interface reaches a server address when it is in the interface's subnet
or the kernel routes the address through it. ``ls`` and ``rm`` use one connection.

Every command ends with one summary line on stdout, a stable format that scripts parse::

    COMMAND BYTES bytes in SECONDS s, MBPS MB/s, N channel[s]: LOCAL->REMOTE LOCAL->REMOTE ...

``BYTES`` is the file's size (0 for ``ls`` and ``rm``); ``SECONDS`` the time from opening the
remote file to closing it (connecting, logging on and binding channels excluded), two
decimals; ``MBPS`` is BYTES / SECONDS / 10**6, one decimal; then the channels that carried the
data, each as its local and remote address (an IPv6 address in brackets), in the order they
were opened. With ``--json`` the same is one JSON object instead (see :func:`report`), the
line's figures unrounded. A progress bar goes to stderr when it is a terminal.

Exit codes: 0 done; 1 an SMB or I/O failure (one line on stderr: wrong password, unknown host,
missing share or file, ...); 2 a usage error (bad address, no password).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from smbcore.aio_client import SMBTree
from smbcore.aio_multichannel import ChannelInfo, MultichannelClient, MultichannelOptions
from smbcore.client import ClientConfig
from smbcore.client_errors import (
    BadNetworkName,
    LogonFailure,
    SecurityRequirementError,
    SMBConnectionError,
    SMBDirectoryNotEmptyError,
    SMBFileNotFoundError,
    SMBIsADirectoryError,
    SMBPermissionError,
    SMBStatusError,
    SMBTimeoutError,
)
from smbcore.errors import SMBProtocolError
from smbcore.multichannel import MAX_CHANNELS, ChannelKey
from smbcore.negotiate import Dialect
from smbcore.selection import Nic, Reachability, nic_from_inventory, same_subnet
from smbcore.transfer import copy_from_share, copy_to_share

from .common import CliError

PASSWORD_ENV = "FERRY_SMB_PASSWORD"
DIALECTS = {Dialect.SMB_3_0: "3.0", Dialect.SMB_3_0_2: "3.0.2", Dialect.SMB_3_1_1: "3.1.1"}


# -- addresses ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmbAddress:
    """``//host[:port]/share/path``; ``path`` is share-relative with ``/`` ("" for the root)."""

    host: str
    port: int
    share: str
    path: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 445 else f":{self.port}"
        return f"//{host}{port}/{self.share}" + (f"/{self.path}" if self.path else "")


def parse_address(text: str) -> SmbAddress:
    """Parse ``//host[:port]/share[/path]`` (or with backslashes); ValueError says what is wrong."""
    value = text.replace("\\", "/")
    if not value.startswith("//"):
        raise ValueError(f"{text!r}: an SMB address starts with // (//host/share/path)")
    rest = value[2:]
    authority, _, remainder = rest.partition("/")
    if authority.startswith("["):
        host, sep, port_text = authority[1:].partition("]")
        if not sep or (port_text and not port_text.startswith(":")):
            raise ValueError(f"{text!r}: bad [IPv6] host")
        has_port, port_text = bool(port_text), port_text[1:]
    elif authority.count(":") == 1:
        host, _, port_text = authority.partition(":")
        has_port = True
    else:
        host, port_text, has_port = authority, "", False
    if not host:
        raise ValueError(f"{text!r}: no host")
    port = 445
    if has_port:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: bad port {port_text!r}")
        port = int(port_text)
    parts = [p for p in remainder.split("/") if p]
    if not parts:
        raise ValueError(f"{text!r}: no share (//host/share/path)")
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{text!r}: '.' and '..' are not allowed in a path")
    path = "/".join(parts[1:])
    if path and remainder.endswith("/"):
        path += "/"  # a folder: ``put`` keeps the local name
    return SmbAddress(host, port, parts[0], path)


# -- the summary line ----------------------------------------------------------------------------


def summary_line(command: str, nbytes: int, seconds: float, channels: Sequence[ChannelInfo]) -> str:
    """The last line of every command (the module docstring defines it)."""
    rate = nbytes / seconds / 1e6 if seconds > 0 else 0.0
    ends = " ".join(str(ChannelKey(c.local, c.remote)) for c in channels)
    noun = "channel" if len(channels) == 1 else "channels"
    return f"{command} {nbytes} bytes in {seconds:.2f} s, {rate:.1f} MB/s, {len(channels)} {noun}: {ends}"


def report(
    command: str,
    nbytes: int,
    seconds: float,
    channels: Sequence[ChannelInfo],
    **extra: object,
) -> dict[str, object]:
    """The summary as one JSON object: ``command``, ``bytes``, ``seconds``, ``mb_per_s``,
    ``channels`` (how many) and ``channel_list`` (each channel's ``local``, ``remote``,
    ``local_port``, ``remote_port``, ``interface``, ``speed_bps``, ``bytes``), then ``extra``."""
    return {
        "command": command,
        "bytes": nbytes,
        "seconds": seconds,
        "mb_per_s": nbytes / seconds / 1e6 if seconds > 0 else 0.0,
        "channels": len(channels),
        "channel_list": [c.to_dict() for c in channels],
        **extra,
    }


# -- the kernel's view: local interfaces and routes --------------------------------------------


def local_interfaces() -> list[Nic]:
    """This network namespace's interfaces (loopback included: the selection skips it unless
    the server is on loopback too)."""
    from ferry_hostnet.kernel import read_interfaces

    return [nic_from_inventory(i.model_dump(mode="json")) for i in read_interfaces(include_loopback=True)]


def kernel_reachability() -> Reachability:
    """An interface reaches an address in its subnet, or one the kernel routes through it."""
    routes: dict[str, int | None] = {}

    def reachable(nic: Nic, address: str) -> bool:
        if same_subnet(nic, address):
            return True
        if address not in routes:
            routes[address] = _route_interface(address)
        return routes[address] == nic.index

    return reachable


def _route_interface(address: str) -> int | None:
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            for message in ipr.route("get", dst=address):
                oif = message.get_attr("RTA_OIF")
                if oif is not None:
                    return int(oif)
    except Exception:  # no route (ENETUNREACH), or netlink unavailable
        return None
    return None


# -- the commands ---------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "smb",
        help="list, copy and remove files on an SMB 3 server (Multichannel)",
        description="Ferry's SMB 3 client. Addresses are //host[:port]/share/path; the password "
        f"comes from ${PASSWORD_ENV} or a prompt. Ends with one summary line: "
        "'COMMAND BYTES bytes in SECONDS s, MBPS MB/s, N channels: LOCAL->REMOTE ...'.",
    )
    commands = p.add_subparsers(dest="smb_command", metavar="COMMAND", required=True)
    ls = commands.add_parser("ls", help="list a directory (or show one file)")
    ls.add_argument("address", metavar="//HOST/SHARE[/PATH]")
    get = commands.add_parser("get", help="copy a file from the share")
    get.add_argument("address", metavar="//HOST/SHARE/PATH")
    get.add_argument("local", nargs="?", help="local file or folder (default: the remote name, here)")
    put = commands.add_parser("put", help="copy a file to the share (replacing it)")
    put.add_argument("local", help="local file")
    put.add_argument("address", metavar="//HOST/SHARE[/PATH]", help="a folder (or none) keeps the name")
    rm = commands.add_parser("rm", help="remove a file (or an empty directory)")
    rm.add_argument("address", metavar="//HOST/SHARE/PATH")
    for command in (ls, get, put, rm):
        command.add_argument("--user", "-U", default=os.environ.get("FERRY_SMB_USER") or _login_name())
        command.add_argument("--domain", default="", help="the user's domain (default: none)")
        command.add_argument(
            "--max-channels", type=_channels, default=MAX_CHANNELS, metavar="N",
            help=f"at most N channels (1-{MAX_CHANNELS}; default {MAX_CHANNELS})",
        )  # fmt: skip
        command.add_argument("--no-multichannel", action="store_true", help="one connection only")
        command.add_argument("--encrypt", action="store_true", help="encrypt everything (SMB 3 encryption)")
        command.add_argument("--json", action="store_true", help="print the summary as one JSON object")
        command.add_argument("--verbose", "-v", action="store_true", help="log what the client does")
        command.set_defaults(run=run)


def _channels(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_CHANNELS:
        raise argparse.ArgumentTypeError(f"expected 1..{MAX_CHANNELS}, got {value!r}")
    return int(value)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def password_from(env: dict[str, str], prompt: Callable[[str], str] | None) -> str:
    """``FERRY_SMB_PASSWORD``, else the prompt (on a terminal); neither is a usage error."""
    password = env.get(PASSWORD_ENV)
    if password is not None:
        return password
    if prompt is None:
        raise CliError(f"no password: set {PASSWORD_ENV} (stdin is not a terminal to ask on)", 2)
    return prompt("SMB password: ")


def run(args: argparse.Namespace) -> int:
    try:
        address = parse_address(args.address)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    if args.smb_command in ("get", "rm") and not address.path.strip("/"):
        raise CliError(f"{address}: name a file in the share (//host/share/path)", 2)
    if args.smb_command == "put" and not Path(args.local).is_file():
        raise CliError(f"{args.local}: no such file", 1)
    if not args.user:
        raise CliError("no user: give --user", 2)
    password = password_from(dict(os.environ), getpass.getpass if sys.stdin.isatty() else None)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        for name in ("smbcore.aio_multichannel", "smbcore.aio_client"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    try:
        result = asyncio.run(_command(args, address, password))
    except CliError:
        raise
    except BaseException as exc:
        message = describe(exc, address, args.user)
        if message is None:
            raise
        raise CliError(message, 1) from None
    print(json.dumps(result.json) if args.json else result.line, flush=True)
    return 0


@dataclass
class _Result:
    line: str
    json: dict[str, object]


def describe(exc: BaseException, address: SmbAddress, user: str) -> str | None:
    """The one-line message for a failure, or None for what is not an SMB or I/O failure."""
    where = f"{address.host}:{address.port}"
    if isinstance(exc, LogonFailure):
        return f"logon failed for {user!r} on {address.host}: wrong password or unknown user ({exc})"
    if isinstance(exc, BadNetworkName):
        return f"{address.host} has no share {address.share!r}"
    if isinstance(exc, SMBFileNotFoundError):
        return f"no such file or directory: {address}"
    if isinstance(exc, SMBIsADirectoryError):
        return f"{address} is a directory"
    if isinstance(exc, SMBDirectoryNotEmptyError):
        return f"{address}: directory not empty"
    if isinstance(exc, SMBPermissionError):
        return f"access denied: {address} ({exc})"
    if isinstance(exc, SMBStatusError):
        return f"{address}: {exc}"
    if isinstance(exc, SMBTimeoutError):
        return f"{where}: timed out: {exc}"
    if isinstance(exc, SMBConnectionError):
        return f"connection to {where} failed: {exc}"
    if isinstance(exc, SecurityRequirementError | SMBProtocolError):
        return f"{where}: {exc}"
    if isinstance(exc, OSError):
        name = f"{exc.filename}: " if exc.filename else ""
        return f"{name}{exc.strerror or exc}"
    return None


async def _command(args: argparse.Namespace, address: SmbAddress, password: str) -> _Result:
    command = args.smb_command
    data = command in ("get", "put")
    options = MultichannelOptions(
        enabled=data and not args.no_multichannel and args.max_channels > 1, max_channels=args.max_channels
    )
    start = time.perf_counter()
    async with await MultichannelClient.connect(
        address.host, address.port, user=args.user, password=password, domain=args.domain,
        config=ClientConfig(), options=options, local_interfaces=local_interfaces,
        reachable=kernel_reachability(), require_encryption=args.encrypt,
    ) as mc:  # fmt: skip
        tree = await mc.connect_tree(address.share, require_encryption=args.encrypt)
        extra: dict[str, object] = {
            "address": str(address),
            "dialect": DIALECTS.get(Dialect(mc.session.client.dialect), hex(mc.session.client.dialect)),
            "encrypted": tree.encrypted,
        }
        began = time.perf_counter()
        if command == "ls":
            extra["entries"] = await _ls(tree, address, args.json)
            nbytes = 0
        elif command == "rm":
            await _rm(tree, address)
            nbytes = 0
        elif command == "get":
            local = _local_target(args.local, address)
            extra["local"] = str(local)
            with _progress(f"get {PurePosixPath(address.path).name}") as progress:
                nbytes = await copy_from_share(tree, address.path, local, progress=progress)
        else:
            source = Path(args.local)
            remote = await _remote_name(tree, address, source)
            extra["local"] = str(source)
            extra["address"] = str(remote)
            with _progress(f"put {source.name}") as progress:
                nbytes = await copy_to_share(source, tree, remote.path, progress=progress)
        seconds = time.perf_counter() - began
        channels = mc.channels_used() if data else mc.channels
        extra.update(
            wall_seconds=time.perf_counter() - start,
            failures=mc.failures,
            replayed=mc.session.replayed,
            rebinds=mc.rebinds,
        )
        line = summary_line(command, nbytes, seconds, channels)
        return _Result(line, report(command, nbytes, seconds, channels, **extra))


def _local_target(local: str | None, address: SmbAddress) -> Path:
    name = PurePosixPath(address.path).name
    if local is None:
        return Path(name)
    target = Path(local)
    return target / name if target.is_dir() else target


async def _remote_name(tree: SMBTree, address: SmbAddress, source: Path) -> SmbAddress:
    """``put f //h/s``, ``put f //h/s/dir/`` and ``put f //h/s/dir`` (a folder) keep the local name."""
    folder = not address.path or address.path.endswith("/")
    if not folder:
        with contextlib.suppress(SMBFileNotFoundError):
            folder = (await tree.stat(address.path)).is_dir
    if not folder:
        return address
    path = f"{address.path.rstrip('/')}/{source.name}".lstrip("/")
    return SmbAddress(address.host, address.port, address.share, path)


async def _ls(tree: SMBTree, address: SmbAddress, quiet: bool) -> list[dict[str, object]]:
    info = await tree.stat(address.path)
    if info.is_dir:
        entries = sorted(await tree.scandir(address.path), key=lambda e: e.name)
        listing = [(e.name, e.info) for e in entries]
    else:
        listing = [(PurePosixPath(address.path).name, info)]
    out = []
    for name, entry in listing:
        when = datetime.fromtimestamp(entry.mtime, UTC)
        out.append({"name": name, "dir": entry.is_dir, "size": entry.size, "mtime": when.isoformat()})
        if not quiet:
            kind = "d" if entry.is_dir else "-"
            shown = f"{name}/" if entry.is_dir else name
            print(f"{kind} {entry.size:>15} {when:%Y-%m-%d %H:%M} {shown}")
    return out


async def _rm(tree: SMBTree, address: SmbAddress) -> None:
    if (await tree.stat(address.path)).is_dir:
        await tree.rmdir(address.path)
    else:
        await tree.remove(address.path)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal (cleared at the end), else nothing."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
