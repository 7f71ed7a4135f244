"""A channel plan from what the selector holds: the two inventories, the client's constraints,
both hosts' migration networks, and the configured policy, through smbcore's rules.

Pure (no I/O): the service's HTTP and NATS handlers, the tests and the benchmark call it alike.

Reachability is "same subnet": a local interface reaches a server address in the subnet of
one of its own addresses. Inventories carry no routes, so a server reached only through a
router is unreachable here; the plan says so in each such decision.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ferry_hostnet.netsettings import MigrationNetworks, same_server
from ferry_hostnet.selector_api import HostMigrationNetworks, Plan, PlanApplied, PlanRequest
from ferry_runtime.bus import HandlerError
from smbcore.selection import (
    Constraint,
    MigrationNetwork,
    MigrationSettings,
    Nic,
    NicAddress,
    Purpose,
    Reason,
    SelectionPolicy,
    select_channels,
)

from .state import ClusterState, HostView

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNREACHABLE_NOTE = " (judged by subnet: inventories carry no routes)"


@lru_cache(maxsize=1 << 16)
def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@lru_cache(maxsize=1 << 16)
def _subnets(addresses: tuple[NicAddress, ...]) -> tuple[IPNetwork, ...]:
    return tuple(a.network for a in addresses if a.usable)


def same_subnet(local: Nic, remote_address: str) -> bool:
    """:func:`smbcore.selection.same_subnet`, with each address parsed once (plans repeat them)."""
    ip = _ip(remote_address)
    return any(ip in net for net in _subnets(local.addresses))


def migration_settings(networks: MigrationNetworks) -> MigrationSettings:
    return MigrationSettings(
        tuple(MigrationNetwork(n.subnet, n.priority) for n in networks.networks), networks.use_any_network
    )


@dataclass(frozen=True, slots=True)
class Planner:
    policy: SelectionPolicy
    #: For a host without migration-network settings: any network, or none.
    unset_migration_networks: Literal["any", "none"] = "any"

    def migration_networks(self, state: ClusterState, host: str) -> HostMigrationNetworks:
        """A host's migration networks as plans use them (its settings, else the default)."""
        settings = state.host_settings.get(host)
        if settings is None or settings.migration is None:
            return HostMigrationNetworks(
                host=host,
                configured=False,
                networks=[],
                use_any_network=self.unset_migration_networks == "any",
            )
        return HostMigrationNetworks(
            host=host,
            configured=True,
            networks=list(settings.migration.networks),
            use_any_network=settings.migration.use_any_network,
        )

    def plan(self, state: ClusterState, request: PlanRequest) -> Plan:
        client = _inventory(state, request.client)
        server = _inventory(state, request.server)
        purpose = Purpose(request.purpose)

        constraints: list[Constraint] = []
        constraint_refs = None
        host_constraints = state.constraints.get(request.client)
        if host_constraints is not None:
            spec = host_constraints.for_server(request.server)
            if spec is not None:
                constraints.append(Constraint(spec.server, tuple(spec.interfaces)))
                constraint_refs = list(spec.interfaces)

        local_migration = remote_migration = None
        client_networks = server_networks = None
        defaulted: list[str] = []
        if purpose is Purpose.MIGRATION:
            client_view = self.migration_networks(state, request.client)
            server_view = self.migration_networks(state, request.server)
            client_networks = MigrationNetworks(
                networks=client_view.networks, use_any_network=client_view.use_any_network
            )
            server_networks = MigrationNetworks(
                networks=server_view.networks, use_any_network=server_view.use_any_network
            )
            local_migration = migration_settings(client_networks)
            remote_migration = migration_settings(server_networks)
            defaulted = [v.host for v in (client_view, server_view) if not v.configured]
            if same_server(request.client, request.server):
                defaulted = defaulted[:1]

        result = select_channels(
            client.nics,
            server.nics,
            server=request.server,
            purpose=purpose,
            reachable=same_subnet,
            constraints=constraints,
            migration=local_migration,
            policy=self.policy,
            remote_migration=remote_migration,
        )
        body = result.to_dict()
        for decision in body["decisions"]:  # type: ignore[attr-defined]
            if decision["reason"] == Reason.UNREACHABLE:
                decision["text"] += UNREACHABLE_NOTE
        applied = PlanApplied(
            constraint=constraint_refs,
            client_migration=client_networks,
            server_migration=server_networks,
            migration_defaulted=defaulted,
            roce_without_pfc=self.policy.roce_without_pfc.value,
        )
        body.update(
            client=request.client,
            applied=applied,
            client_collected_at=client.collected_at,
            server_collected_at=server.collected_at,
        )
        return Plan.model_validate(body)


def _inventory(state: ClusterState, host: str) -> HostView:
    view = state.host(host)
    if view is None:
        raise HandlerError(
            404,
            f"no inventory for host {host!r} (its discovery service has not published one, or it "
            f"expired); inventories held: {len(state.inventories)}",
        )
    return view
