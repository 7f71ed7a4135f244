"""``ferry smbserver sessions|shares|channels|close-session``: the smbserver service's views over
its HTTP API, like PowerShell's ``Get-SmbSession``, ``Get-SmbShare``,
``Get-SmbMultichannelConnection`` and ``Close-SmbSession``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import aiohttp
from ferry_hostnet import format_speed
from rich.console import Console
from rich.table import Table

from .common import CliError

#: The local stack's smbserver (deploy/local/stack.toml).
DEFAULT_URL = "http://127.0.0.1:8083"


def add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("FERRY_SMBSERVER_URL", DEFAULT_URL),
        help="the smbserver's HTTP API (default: $FERRY_SMBSERVER_URL or %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: %(default)s)")


async def call(method: str, url: str, timeout: float) -> Any:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, url) as response,
        ):
            try:
                body = await response.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                raise CliError(f"{url}: {response.status}, not a JSON answer") from None
            if response.status >= 400:
                message = body.get("message") if isinstance(body, dict) else None
                raise CliError(f"{message or response.reason} ({response.status})")
            return body
    except aiohttp.ClientError as exc:
        raise CliError(f"cannot reach the smbserver at {url}: {exc}") from None
    except TimeoutError:
        raise CliError(f"no answer from the smbserver at {url} within {timeout}s") from None


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _yes(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def render_sessions(body: dict[str, Any], console: Console) -> None:
    table = Table(title="SMB sessions", title_justify="left")
    for column in (
        "Session",
        "Client",
        "User",
        "Dialect",
        "Signing",
        "Encryption",
        "Channels",
        "Opens",
        "Shares",
    ):
        table.add_column(column, overflow="fold")
    for s in body["sessions"]:
        user = f"{s['domain']}\\{s['user']}" if s.get("domain") else (s.get("user") or "-")
        if s.get("kind") in ("anonymous", "guest"):
            user = f"({s['kind']})"
        signing = f"{s['signing_algorithm']}{' (required)' if s['signing_required'] else ''}"
        encryption = (
            s["cipher"] if s["encrypt_data"] and s["cipher"] else "per share" if s["cipher"] else "no"
        )
        table.add_row(
            str(s["session_id"]),
            s.get("client_address") or "-",
            user,
            s["dialect"],
            signing,
            encryption,
            str(s["channels"]),
            str(s["opens"]),
            ", ".join(s["shares"]) or "-",
        )
    console.print(table)


def render_shares(body: dict[str, Any], console: Console) -> None:
    table = Table(title="SMB shares", title_justify="left")
    for column in ("Name", "Type", "Path", "Hidden", "Encrypt", "Users", "Trees", "Opens", "Lease"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for s in body["shares"]:
        lease = s.get("lease")
        table.add_row(
            s["name"],
            s["type"] + (" (migration)" if s["migration"] else ""),
            s.get("path") or "-",
            _yes(s["hidden"]),
            _yes(s["encrypt"]),
            (", ".join(s["users"]) if s.get("users") is not None else "everyone")
            + (", guests" if s.get("guest_ok") else ""),
            str(s["trees"]),
            str(s["opens"]),
            f"{lease['source']} {lease['migration_id']}, {max(0.0, lease['expires_at'] - now):.0f} s left"
            if lease
            else "-",
        )
    console.print(table)


def render_channels(body: dict[str, Any], console: Console) -> None:
    table = Table(title="SMB Multichannel connections", title_justify="left")
    columns = ("Session", "User", "Client", "Server", "Interface", "Index", "RSS", "RDMA", "Speed")
    for column in (*columns, "Sent", "Received"):
        table.add_column(column, overflow="fold")
    for c in body["channels"]:
        client = f"{c['client_address']}:{c['client_port']}" if c.get("client_address") else "-"
        server = f"{c['server_address']}:{c['server_port']}" if c.get("server_address") else "-"
        index = c.get("server_interface_index")
        table.add_row(
            str(c["session_id"]),
            c.get("user") or "-",
            client,
            server,
            c.get("server_interface") or "-",
            "-" if index is None else str(index),
            _yes(c.get("server_rss_capable")),
            _yes(c.get("server_rdma_capable")),
            format_speed(c.get("server_link_speed_bps")),
            str(c["bytes_sent"]),
            str(c["bytes_received"]),
        )
    console.print(table)


def _view(path: str, render: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        query = []
        if getattr(args, "hidden", False):
            query.append("hidden=1")
        if getattr(args, "session", None):
            query.append(f"session={args.session}")
        url = args.url.rstrip("/") + path + (("?" + "&".join(query)) if query else "")
        body = asyncio.run(call("GET", url, args.timeout))
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            render(body, _console())
        return 0

    return run


def close_session(args: argparse.Namespace) -> int:
    url = f"{args.url.rstrip('/')}/v1/sessions/{args.session_id}"
    body = asyncio.run(call("DELETE", url, args.timeout))
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        closed = body["closed_connections"]
        print(f"session {body['session_id']} closed ({closed} connection{'s' if closed != 1 else ''} closed)")
    return 0


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the views to ``ferry smbserver``'s actions."""
    p = actions.add_parser("sessions", help="the smbserver's sessions (like Get-SmbSession)")
    add_url_option(p)
    p.set_defaults(run=_view("/v1/sessions", render_sessions))
    p = actions.add_parser("shares", help="the smbserver's shares (like Get-SmbShare)")
    p.add_argument("--hidden", action="store_true", help="include hidden shares (names ending in $)")
    add_url_option(p)
    p.set_defaults(run=_view("/v1/shares", render_shares))
    p = actions.add_parser("channels", help="the smbserver's channels (like Get-SmbMultichannelConnection)")
    p.add_argument("--session", metavar="ID", help="only this session's channels")
    add_url_option(p)
    p.set_defaults(run=_view("/v1/channels", render_channels))
    p = actions.add_parser("close-session", help="close a session (like Close-SmbSession)")
    p.add_argument("session_id", metavar="ID", help="the session's id (decimal, or hex with 0x)")
    add_url_option(p)
    p.set_defaults(run=close_session)
