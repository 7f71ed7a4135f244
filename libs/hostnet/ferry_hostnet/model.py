"""The inventory of a host's network interfaces, as discovery publishes it (schema ferry.inventory v1).

Like ``Get-NetAdapter`` and ``Get-SmbServerNetworkInterface`` together: what the kernel
says about each interface, with the operator's overrides applied and marked as such.
Unknown values (a speed the driver does not report, a PFC state nobody exposes) are
``None``, never guessed.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from ferry_runtime.codec import Schema
from pydantic import BaseModel, ConfigDict, Field, field_validator


class RdmaKind(StrEnum):
    ROCE = "roce"
    IWARP = "iwarp"
    INFINIBAND = "infiniband"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Address(_Frozen):
    family: Literal[4, 6]
    address: str
    prefix_len: int = Field(ge=0, le=128)
    scope: Literal["global", "site", "link", "host", "nowhere"] = "global"

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(f"{self.address}/{self.prefix_len}")


class RdmaPort(_Frozen):
    """An RDMA device port bound to the interface (from /sys/class/infiniband)."""

    device: str
    port: int
    kind: RdmaKind


class Interface(_Frozen):
    name: str
    ifindex: int
    mac: str | None = None
    mtu: int
    oper_state: str = Field(description="operational state as the kernel reports it: up, down, unknown, ...")
    admin_up: bool
    kind: str | None = Field(
        None, description="link kind: veth, bridge, bond, vlan, ... (None for a physical NIC)"
    )
    loopback: bool = False
    addresses: list[Address] = Field(default_factory=list)
    speed_bps: int | None = Field(None, description="link speed in bit/s; None when the driver does not say")
    rx_queues: int = Field(1, ge=0)
    rss_capable: bool = Field(description="more than one receive queue (or set by the operator)")
    rdma: list[RdmaPort] = Field(default_factory=list)
    rdma_kind: RdmaKind | None = Field(None, description="None when the interface has no RDMA")
    pfc_enabled: bool | None = Field(
        None, description="DCB priority flow control on any priority (RoCE); None when unknown"
    )
    overridden: list[str] = Field(default_factory=list, description="fields set by operator overrides")

    @property
    def rdma_capable(self) -> bool:
        return self.rdma_kind is not None

    @property
    def is_up(self) -> bool:
        return self.oper_state == "up" or (self.oper_state == "unknown" and self.admin_up)


class Inventory(_Frozen):
    host: str
    labels: dict[str, str] = Field(default_factory=dict, description="failure domain: site, row, rack")
    interfaces: list[Interface]
    collected_at: float = Field(description="UNIX time the kernel was read")

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def same_as(self, other: Inventory | None) -> bool:
        """Equal in everything but the collection time."""
        if other is None:
            return False
        return self.model_dump(exclude={"collected_at"}) == other.model_dump(exclude={"collected_at"})


INVENTORY = Schema("ferry.inventory", 1, Inventory)


_SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:bit/s|bps|b/s|bit)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_speed(value: int | str) -> int:
    """``"10G"``, ``"25Gbit/s"``, ``"100M"``, ``1000000000`` -> bit/s."""
    if isinstance(value, bool):
        raise ValueError("a speed such as 10G, 25Gbit/s or a number of bit/s")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a positive speed")
        return value
    match = _SPEED_RE.match(value)
    if not match:
        raise ValueError(f"a speed such as 10G, 25Gbit/s or a number of bit/s, got {value!r}")
    exact = Decimal(match.group(1)) * _UNITS[match.group(2).lower()]
    if exact != exact.to_integral_value():
        raise ValueError(f"a speed of a whole number of bit/s, got {value!r}")
    bps = int(exact)
    if bps <= 0:
        raise ValueError("a positive speed")
    return bps


def format_speed(bps: int | None) -> str:
    if bps is None:
        return "unknown"
    for unit, size in (("Tb/s", 10**12), ("Gb/s", 10**9), ("Mb/s", 10**6), ("kb/s", 10**3)):
        if bps >= size:
            value = bps / size
            return f"{value:g} {unit}"
    return f"{bps} b/s"


class InterfaceOverride(BaseModel):
    """Operator overrides for one interface (as Samba's "interfaces = eth0;speed=...,capability=RSS")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speed: int | None = Field(None, description="link speed: 10G, 25Gbit/s, or bit/s")
    rss: bool | None = None
    rdma: RdmaKind | Literal["none"] | None = None
    pfc: bool | None = None

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, (int, str)):
            return parse_speed(value)
        raise ValueError("a speed such as 10G, 25Gbit/s or a number of bit/s")


def apply_overrides(interfaces: list[Interface], overrides: dict[str, InterfaceOverride]) -> list[Interface]:
    """The interfaces with the operator's values in place of the kernel's, each change listed."""
    result = []
    for iface in interfaces:
        o = overrides.get(iface.name)
        if o is None:
            result.append(iface)
            continue
        changes: dict[str, object] = {}
        if o.speed is not None:
            changes["speed_bps"] = o.speed
        if o.rss is not None:
            changes["rss_capable"] = o.rss
        if o.rdma is not None:
            changes["rdma_kind"] = None if o.rdma == "none" else RdmaKind(o.rdma)
        if o.pfc is not None:
            changes["pfc_enabled"] = o.pfc
        overridden = sorted(set(iface.overridden) | set(changes))
        result.append(iface.model_copy(update={**changes, "overridden": overridden}))
    return result
