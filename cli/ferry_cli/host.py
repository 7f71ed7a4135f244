"""``ferry host``: a host's settings kept in NATS (bucket ferry-host-settings); for now its
migration networks (Add-VMMigrationNetwork, Set-VMHost -UseAnyNetworkForMigration), read and
written through the selector service."""

from __future__ import annotations

import argparse
import asyncio
import json

from ferry_hostnet.netsettings import MigrationNetworkSpec
from ferry_hostnet.selector_api import (
    HOST_MIGRATION_NETWORKS,
    MIGRATION_NETWORKS_QUERY,
    MIGRATION_NETWORKS_SET,
    HostMigrationNetworks,
    MigrationNetworksQuery,
    MigrationNetworksSet,
)
from ferry_runtime import subjects

from .common import CliError, add_nats_option
from .plan import ask, build, networks_text


def parse_network(value: str) -> MigrationNetworkSpec:
    """``SUBNET[:PRIORITY]`` (IPv6: ``fd00:2::/64:1``: the priority follows the prefix length)."""
    subnet, priority = value, "0"
    if "/" in value:
        head, _, tail = value.rpartition("/")
        prefix, sep, prio = tail.partition(":")
        if sep:
            subnet, priority = f"{head}/{prefix}", prio
    elif value.count(":") == 1:  # IPv4 address with a priority
        subnet, priority = value.split(":")
    if not priority.isdecimal():
        raise argparse.ArgumentTypeError(f"priority of {value!r}: a number (0 is the highest)")
    try:
        return MigrationNetworkSpec(subnet=subnet, priority=int(priority))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("host", help="a host's settings in NATS (migration networks)")
    areas = p.add_subparsers(dest="host_area", metavar="AREA", required=True)
    mig = areas.add_parser(
        "migration-networks",
        help="the networks a host's migrations may use",
        description="Like Add-VMMigrationNetwork and Set-VMHost -UseAnyNetworkForMigration: a migration "
        "plan uses only interfaces with an address in these subnets, the highest priority (lowest "
        "number) that gives a channel first. A host without settings gets the selector's default.",
    )
    actions = mig.add_subparsers(dest="migration_command", metavar="ACTION", required=True)

    set_p = actions.add_parser("set", help="replace the host's migration networks")
    set_p.add_argument("host")
    set_p.add_argument(
        "--network",
        "-n",
        action="append",
        default=[],
        type=parse_network,
        metavar="SUBNET[:PRIORITY]",
        help="e.g. 10.0.2.0/24:0 (priority 0, the highest, by default); repeatable",
    )
    set_p.add_argument(
        "--any-network", action="store_true", help="migrations may use any network (the list is kept, unused)"
    )
    set_p.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(set_p)
    set_p.set_defaults(run=run_set)

    show = actions.add_parser("show", help="the host's migration networks as plans use them")
    show.add_argument("host")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(show)
    show.set_defaults(run=run_show)

    clear = actions.add_parser("clear", help="forget the host's settings (the selector's default applies)")
    clear.add_argument("host")
    clear.add_argument("--json", action="store_true", help="print JSON")
    add_nats_option(clear)
    clear.set_defaults(run=run_clear)


def _print(view: HostMigrationNetworks, as_json: bool) -> None:
    if as_json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
        return
    source = "" if view.configured else " (not set: the selector's default)"
    print(f"{view.host}: migrations use {networks_text(view.networks, view.use_any_network)}{source}")
    if view.use_any_network and view.networks:
        print(f"  networks kept for later: {networks_text(view.networks, False)}")


def _set(args: argparse.Namespace, request: MigrationNetworksSet) -> int:
    view = asyncio.run(
        ask(
            args.nats,
            args.timeout,
            subjects.SELECTOR_MIGRATION_NETWORKS_SET,
            MIGRATION_NETWORKS_SET,
            request,
            HOST_MIGRATION_NETWORKS,
        )
    )
    _print(view, args.json)
    return 0


def run_set(args: argparse.Namespace) -> int:
    if not args.network and not args.any_network:
        raise CliError(
            "give --network SUBNET[:PRIORITY] (repeatable) or --any-network; `clear` forgets them", 2
        )
    return _set(
        args,
        build(MigrationNetworksSet, host=args.host, networks=args.network, use_any_network=args.any_network),
    )


def run_clear(args: argparse.Namespace) -> int:
    return _set(args, build(MigrationNetworksSet, host=args.host, clear=True))


def run_show(args: argparse.Namespace) -> int:
    query = build(MigrationNetworksQuery, host=args.host)
    view = asyncio.run(
        ask(
            args.nats,
            args.timeout,
            subjects.SELECTOR_MIGRATION_NETWORKS_GET,
            MIGRATION_NETWORKS_QUERY,
            query,
            HOST_MIGRATION_NETWORKS,
        )
    )
    _print(view, args.json)
    return 0
