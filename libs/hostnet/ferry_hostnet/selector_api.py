"""The selector's request/reply payloads (NATS, schema-versioned msgpack) and HTTP bodies (JSON).

The selector answers on the subjects of :mod:`ferry_runtime.subjects` (``ferry.selector.*``),
in the queue group ``ferry-selector`` so that any of its instances may answer. Its HTTP API
has the same operations; the JSON bodies are these models.

A :class:`Plan` is ``smbcore.selection.ChannelPlan.to_dict()`` with who asked and what the
selector applied; ``class`` is the Multichannel class (``rdma``, ``rss``, ``plain``).
"""

from __future__ import annotations

from typing import Literal

from ferry_runtime.codec import Schema
from ferry_runtime.config import validate_host_name
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .netsettings import (
    InterfaceRef,
    MigrationNetworks,
    MigrationNetworkSpec,
    check_interface_refs,
)

PurposeName = Literal["smb", "migration"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Aliased(BaseModel):
    # ``class`` is a Python keyword: the field is ``nic_class``, the wire name ``class``.
    model_config = ConfigDict(frozen=True, extra="ignore", serialize_by_alias=True, validate_by_name=True)


# -- plans ------------------------------------------------------------------------------------------


class PlanRequest(_Frozen):
    client: str = Field(description="the host that opens the channels")
    server: str = Field(description="the host they go to")
    purpose: PurposeName = "smb"

    _check_hosts = field_validator("client", "server")(validate_host_name)


class PlanChannel(_Aliased):
    local_name: str
    local_index: int
    source_address: str
    remote_name: str
    remote_index: int
    remote_address: str
    transport: Literal["rdma", "tcp"]
    nic_class: Literal["rdma", "rss", "plain"] = Field(alias="class")
    connections: int
    local_speed_bps: int | None
    remote_speed_bps: int | None
    speed_bps: int | None


class PlanDecision(_Aliased):
    side: Literal["local", "remote"]
    name: str
    index: int
    picked: bool
    reason: str | None = Field(
        description="why it is skipped: loopback, down, no_address, constrained_out, "
        "not_migration_network, migration_priority, unreachable, roce_without_pfc, type_class, "
        "speed_class, capped, not_paired; null when picked"
    )
    text: str
    nic_class: Literal["rdma", "rss", "plain"] = Field(alias="class")
    speed_bps: int | None
    connections: int
    warnings: list[str]


class PlanApplied(_Frozen):
    """What the selector took into account besides the two inventories."""

    constraint: list[InterfaceRef] | None = Field(
        None, description="the client's Multichannel constraint for this server, if any"
    )
    client_migration: MigrationNetworks | None = Field(
        None, description="the client's migration networks (purpose migration only)"
    )
    server_migration: MigrationNetworks | None = Field(
        None, description="the server's migration networks (purpose migration only)"
    )
    migration_defaulted: list[str] = Field(
        default_factory=list, description="hosts without migration settings, given the selector's default"
    )
    roce_without_pfc: Literal["exclude", "warn"]
    reachability: Literal["same-subnet"] = Field(
        "same-subnet",
        description="how reachability is judged: an address in the subnet of one of the local "
        "interface's addresses (inventories carry no routes)",
    )


class Plan(_Aliased):
    client: str
    server: str
    purpose: PurposeName
    nic_class: Literal["rdma", "rss", "plain"] | None = Field(alias="class")
    transport: Literal["rdma", "tcp"] | None
    connections: int
    max_channels: int
    migration_priority: int | None
    channels: list[PlanChannel]
    decisions: list[PlanDecision] = Field(
        description="every interface of the client (side local), then of the server (side remote)"
    )
    warnings: list[str]
    applied: PlanApplied
    client_collected_at: float = Field(description="when the client's inventory was read (UNIX time)")
    server_collected_at: float = Field(description="when the server's inventory was read (UNIX time)")


PLAN_REQUEST = Schema("ferry.selector.plan-request", 1, PlanRequest)
PLAN = Schema("ferry.selector.plan", 1, Plan)


# -- constraints ------------------------------------------------------------------------------------


class ConstraintAdd(_Frozen):
    """Add interfaces to the client's constraint for the server (created if it does not exist)."""

    client: str
    server: str
    interfaces: list[InterfaceRef] = Field(min_length=1, description="names (strings) or ifindexes")

    _check_hosts = field_validator("client", "server")(validate_host_name)
    _check_refs = field_validator("interfaces")(check_interface_refs)


class ConstraintRemove(_Frozen):
    """Remove the client's constraint for the server, or only some of its interfaces."""

    client: str
    server: str
    interfaces: list[InterfaceRef] = Field(default_factory=list, description="empty: the whole constraint")

    _check_hosts = field_validator("client", "server")(validate_host_name)
    _check_refs = field_validator("interfaces")(check_interface_refs)


class ConstraintQuery(_Frozen):
    client: str | None = Field(None, description="only this client host's constraints")
    server: str | None = Field(None, description="only constraints for this server")


class ConstraintEntry(_Frozen):
    client: str
    server: str
    interfaces: list[InterfaceRef]


class ConstraintList(_Frozen):
    constraints: list[ConstraintEntry]


CONSTRAINT_ADD = Schema("ferry.selector.constraint-add", 1, ConstraintAdd)
CONSTRAINT_REMOVE = Schema("ferry.selector.constraint-remove", 1, ConstraintRemove)
CONSTRAINT_QUERY = Schema("ferry.selector.constraint-query", 1, ConstraintQuery)
CONSTRAINT_LIST = Schema("ferry.selector.constraint-list", 1, ConstraintList)


# -- host migration networks ---------------------------------------------------------------------------


class MigrationNetworksQuery(_Frozen):
    host: str

    _check_host = field_validator("host")(validate_host_name)


class MigrationNetworksSet(_Frozen):
    """Replace a host's migration networks; ``clear`` forgets them (the default applies again)."""

    host: str
    networks: list[MigrationNetworkSpec] = Field(default_factory=list)
    use_any_network: bool = False
    clear: bool = False

    _check_host = field_validator("host")(validate_host_name)


class HostMigrationNetworks(_Frozen):
    """A host's migration networks as a migration plan uses them."""

    host: str
    configured: bool = Field(
        description="false: never set, or cleared; the selector's default (shown) applies"
    )
    networks: list[MigrationNetworkSpec]
    use_any_network: bool


MIGRATION_NETWORKS_QUERY = Schema("ferry.selector.migration-networks-query", 1, MigrationNetworksQuery)
MIGRATION_NETWORKS_SET = Schema("ferry.selector.migration-networks-set", 1, MigrationNetworksSet)
HOST_MIGRATION_NETWORKS = Schema("ferry.selector.migration-networks", 1, HostMigrationNetworks)


# -- hosts -------------------------------------------------------------------------------------------------


class KnownHost(_Frozen):
    host: str
    interfaces: int
    collected_at: float
    roce_without_pfc: list[str] = Field(description="RoCE interfaces with PFC off or unknown")


class KnownHosts(_Frozen):
    hosts: list[KnownHost]


KNOWN_HOSTS = Schema("ferry.selector.hosts", 1, KnownHosts)
