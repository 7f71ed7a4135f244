"""``ferry plan`` and ``ferry constraint``: ask the selector service, over NATS, which NIC pairs
a host uses to reach another and why; list, add and remove SMB Multichannel constraints
(New-, Get- and Remove-SmbMultichannelConstraint)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TypeVar

from ferry_hostnet import format_speed
from ferry_hostnet.netsettings import MigrationNetworkSpec
from ferry_hostnet.selector_api import (
    CONSTRAINT_ADD,
    CONSTRAINT_LIST,
    CONSTRAINT_QUERY,
    CONSTRAINT_REMOVE,
    PLAN,
    PLAN_REQUEST,
    ConstraintAdd,
    ConstraintList,
    ConstraintQuery,
    ConstraintRemove,
    Plan,
    PlanRequest,
)
from ferry_runtime import subjects
from ferry_runtime.bus import NoResponders, RemoteError, RequestTimeout
from ferry_runtime.codec import PayloadError, Schema
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from .common import CliError, add_nats_option, bus_connection

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="the Multichannel channel plan from one host to another (from the selector service)",
        description="Which interface pairs the client uses to reach the server, how many connections "
        "each, RDMA or TCP, and why every interface of both hosts is used or not. Reachability is "
        "judged by subnet (inventories carry no routes).",
    )
    p.add_argument("--client", required=True, help="the host that opens the channels")
    p.add_argument("--server", required=True, help="the host they go to")
    p.add_argument(
        "--purpose", choices=("smb", "migration"), default="smb", help="smb (default) or migration"
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_nats_option(p)
    p.set_defaults(run=run_plan)

    c = sub.add_parser(
        "constraint",
        help="SMB Multichannel constraints: which client interfaces may reach a server",
        description="Like New-, Get- and Remove-SmbMultichannelConstraint, kept by the selector "
        "service in the KV bucket ferry-constraints.",
    )
    actions = c.add_subparsers(dest="constraint_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="allow only these client interfaces towards the server (adds to an existing constraint)",
        description="Refused when the client host's inventory has no such interface.",
    )
    add.add_argument("--client", required=True, help="the client host")
    add.add_argument("--server", required=True, help="the server (case-insensitive)")
    add.add_argument(
        "--interface",
        "-i",
        action="append",
        required=True,
        metavar="NAME|INDEX",
        help="a client interface by name or ifindex (a number is an index); repeat or comma-separate",
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(add)
    add.set_defaults(run=run_add)

    ls = actions.add_parser("list", help="list constraints")
    ls.add_argument("--client", help="only this client host's")
    ls.add_argument("--server", help="only those for this server")
    ls.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(ls)
    ls.set_defaults(run=run_list)

    rm = actions.add_parser("remove", help="remove a constraint, or some of its interfaces")
    rm.add_argument("--client", required=True, help="the client host")
    rm.add_argument("--server", required=True, help="the server")
    rm.add_argument(
        "--interface",
        "-i",
        action="append",
        default=[],
        metavar="NAME|INDEX",
        help="remove only this interface from the constraint (repeatable); default: the whole constraint",
    )
    rm.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(rm)
    rm.set_defaults(run=run_remove)


# -- talking to the selector ------------------------------------------------------------------------


def build(model: type[M], **fields: object) -> M:
    """A request model from the command line; a bad value is a usage error."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(f"{where}: {first['msg']}", 2) from None


async def ask(
    url: str, timeout: float, subject: str, request: Schema[M], body: M | None, reply: Schema[R]
) -> R:
    """One request to the selector; its errors become one-line CLI errors."""
    data = request.encode(body) if body is not None else b""
    async with bus_connection(url, timeout) as bus:
        try:
            answer = await bus.request(subject, data, timeout=timeout)
        except NoResponders:
            raise CliError(f"no selector service answers on {subject} (is ferry-selector running?)") from None
        except RequestTimeout:
            raise CliError(f"the selector did not answer within {timeout}s") from None
        except RemoteError as exc:
            raise CliError(f"selector: {exc.message} ({exc.status})") from None
    try:
        return reply.decode(answer)
    except PayloadError as exc:
        raise CliError(f"unreadable answer from the selector: {exc}") from None


def interface_refs(values: list[str]) -> list[int | str]:
    refs: list[int | str] = []
    for value in values:
        for raw in value.split(","):
            part = raw.strip()
            if part:
                refs.append(int(part) if part.isdecimal() else part)
    return refs


def console() -> Console:
    out = Console()
    return out if out.is_terminal else Console(width=200)


# -- plan ----------------------------------------------------------------------------------------------


def run_plan(args: argparse.Namespace) -> int:
    request = build(PlanRequest, client=args.client, server=args.server, purpose=args.purpose)
    plan = asyncio.run(ask(args.nats, args.timeout, subjects.SELECTOR_PLAN, PLAN_REQUEST, request, PLAN))
    if args.json:
        print(json.dumps(plan.model_dump(mode="json", by_alias=True), indent=2))
    else:
        render_plan(plan, console())
    return 0


def render_plan(plan: Plan, out: Console) -> None:
    if plan.channels:
        what = (
            f"{(plan.nic_class or '').upper()} over {(plan.transport or '').upper()}, "
            f"{plan.connections} connection{'s' if plan.connections != 1 else ''} "
            f"(at most {plan.max_channels})"
        )
        if plan.migration_priority is not None:
            what += f", migration networks of priority {plan.migration_priority}"
    else:
        what = "no usable channel"
    out.print(f"[bold]{plan.client} -> {plan.server}[/bold] ({plan.purpose}): {what}")
    if plan.channels:
        table = Table(title="Channels", title_justify="left")
        for column in ("Local", "Source", "Remote", "Destination", "Transport", "Connections", "Speed"):
            table.add_column(column)
        for c in plan.channels:
            table.add_row(
                f"{c.local_name} ({c.local_index})",
                c.source_address,
                f"{c.remote_name} ({c.remote_index})",
                c.remote_address,
                c.transport.upper(),
                str(c.connections),
                format_speed(c.speed_bps),
            )
        out.print(table)
    table = Table(title="Interfaces", title_justify="left")
    for column in ("Host", "Interface", "Class", "Speed", "Used", "Reason", "Why"):
        table.add_column(column, overflow="fold")
    for d in plan.decisions:
        host = plan.client if d.side == "local" else plan.server
        table.add_row(
            host,
            f"{d.name} ({d.index})",
            d.nic_class,
            format_speed(d.speed_bps),
            f"yes ({d.connections})" if d.picked else "no",
            d.reason or "-",
            d.text + "".join(f"\n! {w}" for w in d.warnings),
        )
    out.print(table)
    applied = plan.applied
    notes = [f"reachability: {applied.reachability} (inventories carry no routes)"]
    notes.append(f"RoCE without PFC: {applied.roce_without_pfc}")
    if applied.constraint is not None:
        notes.append(f"constraint for {plan.server}: {', '.join(map(str, applied.constraint))}")
    for who, networks in ((plan.client, applied.client_migration), (plan.server, applied.server_migration)):
        if networks is not None:
            notes.append(
                f"migration networks of {who}: {networks_text(networks.networks, networks.use_any_network)}"
            )
    if applied.migration_defaulted:
        notes.append(
            f"no migration networks set (selector default): {', '.join(applied.migration_defaulted)}"
        )
    for note in notes:
        out.print(f"  {note}")
    for warning in plan.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")


def networks_text(networks: list[MigrationNetworkSpec], use_any: bool) -> str:
    if use_any:
        return "any network"
    return ", ".join(f"{n.subnet} (priority {n.priority})" for n in networks) or "none"


# -- constraints -------------------------------------------------------------------------------------


def _print_constraints(listing: ConstraintList, as_json: bool, empty: str) -> None:
    if as_json:
        print(json.dumps(listing.model_dump(mode="json"), indent=2))
        return
    if not listing.constraints:
        print(empty)
        return
    table = Table(title="Multichannel constraints", title_justify="left")
    for column in ("Client", "Server", "Interfaces"):
        table.add_column(column)
    for entry in listing.constraints:
        table.add_row(entry.client, entry.server, ", ".join(str(i) for i in entry.interfaces))
    console().print(table)


def run_add(args: argparse.Namespace) -> int:
    request = build(
        ConstraintAdd, client=args.client, server=args.server, interfaces=interface_refs(args.interface)
    )
    listing = asyncio.run(
        ask(
            args.nats,
            args.timeout,
            subjects.SELECTOR_CONSTRAINT_ADD,
            CONSTRAINT_ADD,
            request,
            CONSTRAINT_LIST,
        )
    )
    _print_constraints(listing, args.json, "")
    return 0


def run_list(args: argparse.Namespace) -> int:
    query = build(ConstraintQuery, client=args.client, server=args.server)
    listing = asyncio.run(
        ask(
            args.nats,
            args.timeout,
            subjects.SELECTOR_CONSTRAINT_LIST,
            CONSTRAINT_QUERY,
            query,
            CONSTRAINT_LIST,
        )
    )
    _print_constraints(listing, args.json, "no constraints")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    request = build(
        ConstraintRemove, client=args.client, server=args.server, interfaces=interface_refs(args.interface)
    )
    listing = asyncio.run(
        ask(
            args.nats,
            args.timeout,
            subjects.SELECTOR_CONSTRAINT_REMOVE,
            CONSTRAINT_REMOVE,
            request,
            CONSTRAINT_LIST,
        )
    )
    _print_constraints(listing, args.json, f"{args.client} has no constraints left")
    return 0
