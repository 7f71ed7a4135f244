"""``ferry interfaces``: this host's NICs (read from the kernel), or another host's (from NATS)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import nats.js.errors
from ferry_hostnet import INVENTORY, Inventory, format_speed
from ferry_hostnet.collect import collect_inventory
from ferry_runtime import subjects
from ferry_runtime.codec import PayloadError
from ferry_runtime.config import HostSettings
from rich.console import Console
from rich.table import Table

from .common import CliError, add_nats_option, bus_connection


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "interfaces",
        help="list network interfaces (this host's, or another's from the bus)",
        description="Without --host, read this host's interfaces from the kernel (no NATS needed). "
        "With --host, read that host's inventory as its discovery service published it.",
    )
    p.add_argument("--host", help="read this host's inventory from the NATS KV bucket")
    p.add_argument(
        "--all", action="store_true", help="with --host: include loopback; without: include loopback too"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(p)
    p.set_defaults(run=run)


async def fetch_inventory(url: str, host: str, timeout: float) -> Inventory:
    async with bus_connection(url, timeout) as bus:
        try:
            kv = await bus.key_value(subjects.INVENTORY_BUCKET, create=False)
        except nats.js.errors.BucketNotFoundError:
            raise CliError("no inventories on the bus yet (is a discovery service running?)") from None
        try:
            entry = await kv.get(host)
        except nats.js.errors.KeyDeletedError:
            raise CliError(
                f"host {host!r}: its inventory expired (its discovery service stopped refreshing it)"
            ) from None
        except nats.js.errors.KeyNotFoundError:
            known: list[str] = []
            with contextlib.suppress(nats.js.errors.NoKeysError):
                known = sorted(await kv.keys())
            raise CliError(
                f"unknown host {host!r}; hosts with an inventory: {', '.join(known) if known else 'none'}"
            ) from None
        if not entry.value:  # a delete marker left by the bucket's TTL
            raise CliError(
                f"host {host!r}: its inventory expired (its discovery service stopped refreshing it)"
            )
        try:
            return INVENTORY.decode(entry.value)
        except PayloadError as exc:
            raise CliError(f"host {host!r}: unreadable inventory: {exc}") from None


def render(inventory: Inventory, console: Console) -> None:
    labels = ", ".join(f"{k}={v}" for k, v in inventory.labels.items())
    table = Table(title=f"{inventory.host}" + (f" ({labels})" if labels else ""), title_justify="left")
    for column in ("Name", "Index", "State", "Speed", "MTU", "RSS", "RDMA", "PFC", "MAC", "Addresses"):
        table.add_column(column, overflow="fold")
    for i in inventory.interfaces:
        rdma = i.rdma_kind.value if i.rdma_kind else "-"
        pfc = (
            "-"
            if i.rdma_kind is None
            else ("unknown" if i.pfc_enabled is None else "on" if i.pfc_enabled else "off")
        )
        rss = f"yes ({i.rx_queues}q)" if i.rss_capable else f"no ({i.rx_queues}q)"
        addresses = "\n".join(f"{a.address}/{a.prefix_len}" for a in i.addresses) or "-"
        speed = format_speed(i.speed_bps) + ("*" if "speed_bps" in i.overridden else "")
        table.add_row(
            i.name, str(i.ifindex), i.oper_state, speed, str(i.mtu), rss, rdma, pfc, i.mac or "-", addresses
        )
    console.print(table)
    if any(i.overridden for i in inventory.interfaces):
        console.print("* set by an operator override")


def run(args: argparse.Namespace) -> int:
    if args.host:
        inventory = asyncio.run(fetch_inventory(args.nats, args.host, args.timeout))
        if not args.all:
            inventory = inventory.model_copy(
                update={"interfaces": [i for i in inventory.interfaces if not i.loopback]}
            )
    else:
        try:
            host = HostSettings().name
        except ValueError:
            host = "localhost"
        try:
            inventory = collect_inventory(host, {}, {}, include_loopback=args.all)
        except OSError as exc:
            raise CliError(f"cannot read the interfaces from the kernel: {exc}") from None
    if args.json:
        print(json.dumps(inventory.model_dump(mode="json"), indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        render(inventory, console)
    return 0
