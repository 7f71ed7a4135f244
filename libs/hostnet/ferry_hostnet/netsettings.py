"""Network settings an operator gives a host, kept in JetStream KV and applied by the selector.

* **Multichannel constraints** (like New-, Get- and Remove-SmbMultichannelConstraint): bucket
  ``ferry-constraints``, one key per client host, schema ``ferry.constraints`` v1. A constraint
  names the server and the client's interfaces (by name or index) that may reach it.
* **Host settings**: bucket ``ferry-host-settings``, one key per host, schema
  ``ferry.host-settings`` v1. For now its migration networks (Add-VMMigrationNetwork, and
  Set-VMHost -UseAnyNetworkForMigration); other services add their own sections later, so
  a writer keeps the fields it does not know (the model allows extra fields).

Writers update these keys with compare-and-swap (the revision they read), so two concurrent
changes never lose one another.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ferry_runtime.codec import Schema
from ferry_runtime.config import validate_host_name
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

#: An interface as a constraint names it: its name (``"eth1"``) or its ifindex (``4``); strict,
#: so that neither ``true`` nor ``"4"`` is taken for an index.
InterfaceRef = StrictInt | StrictStr


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def check_interface_refs(refs: list[InterfaceRef]) -> list[InterfaceRef]:
    """Names are non-empty Linux interface names, indexes positive; duplicates dropped, order kept."""
    out: list[InterfaceRef] = []
    for ref in refs:
        if isinstance(ref, bool):
            raise ValueError("an interface name or index, not a boolean")
        if isinstance(ref, int):
            if ref < 1:
                raise ValueError(f"interface index {ref}: indexes start at 1")
        elif not ref or len(ref) > 15 or any(c in ref for c in "/ \t\n:") or ref in (".", ".."):
            raise ValueError(f"interface name {ref!r}: 1 to 15 characters, no '/', ':' or spaces")
        if ref not in out:
            out.append(ref)
    return out


def same_server(a: str, b: str) -> bool:
    """Server names compare case-insensitively (as SMB server names do)."""
    return a.casefold() == b.casefold()


class ConstraintSpec(_Frozen):
    """To ``server``, use only these interfaces of the client host."""

    server: str = Field(description="the server's host name (case-insensitive)")
    interfaces: list[InterfaceRef] = Field(
        min_length=1, description="client interfaces by name (string) or ifindex (integer)"
    )

    _check_server = field_validator("server")(validate_host_name)
    _check_refs = field_validator("interfaces")(check_interface_refs)


class HostConstraints(_Frozen):
    """Every Multichannel constraint of one client host (the value of its key)."""

    host: str
    constraints: list[ConstraintSpec] = Field(default_factory=list)

    _check_host = field_validator("host")(validate_host_name)

    def for_server(self, server: str) -> ConstraintSpec | None:
        return next((c for c in self.constraints if same_server(c.server, server)), None)


CONSTRAINTS = Schema("ferry.constraints", 1, HostConstraints)


class MigrationNetworkSpec(_Frozen):
    """A subnet (or one address) that may carry migrations, and its priority (0 is the highest)."""

    subnet: str = Field(description="CIDR, e.g. 10.0.2.0/24 or fd00:2::/64; host bits are cleared")
    priority: int = Field(0, ge=0, description="lower is preferred; networks may share a priority")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"a subnet such as 10.0.2.0/24, got {value!r}") from None


class MigrationNetworks(_Frozen):
    """A host's migration networks, or any network."""

    networks: list[MigrationNetworkSpec] = Field(default_factory=list)
    use_any_network: bool = Field(
        False, description="any network may carry migrations (the networks are then ignored)"
    )

    @field_validator("networks")
    @classmethod
    def _unique(cls, value: list[MigrationNetworkSpec]) -> list[MigrationNetworkSpec]:
        seen: set[str] = set()
        for net in value:
            if net.subnet in seen:
                raise ValueError(f"subnet {net.subnet} is listed twice")
            seen.add(net.subnet)
        return value


class HostSettings(BaseModel):
    """One host's settings. Sections are None until someone sets them; fields this model does
    not know (sections of newer services) are kept through a read-modify-write."""

    model_config = ConfigDict(frozen=True, extra="allow")

    host: str
    migration: MigrationNetworks | None = Field(
        None, description="migration networks; None: not set (the selector's default applies)"
    )
    updated_at: float = Field(0.0, description="UNIX time of the last change")

    _check_host = field_validator("host")(validate_host_name)

    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


HOST_SETTINGS = Schema("ferry.host-settings", 1, HostSettings)
