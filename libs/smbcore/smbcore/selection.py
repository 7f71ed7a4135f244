"""SMB 3 Multichannel channel selection: which local/remote interface pairs a session uses,
how many connections each, RDMA or TCP, and why every other interface stays idle.

Pure functions over frozen, slotted dataclasses: no sockets, no clock, no kernel. The async
client feeds it the local interfaces and the server's FSCTL_QUERY_NETWORK_INTERFACE_INFO
answer (:func:`from_network_interface_info`); the selector service feeds it two hosts'
inventories (:func:`nic_from_inventory` reads the ``ferry.inventory`` v1 interface fields, so
this module needs nothing from ``ferry_hostnet``).

The rules are Windows' auto-configuration (MS-SMB2 leaves the choice to "implementation-specific
criteria" of the client when it handles the FSCTL_QUERY_NETWORK_INTERFACE_INFO response, 3.2.5.14):

* Classes, best first: RDMA, RSS, the rest. A pair is of a class only if both ends are: RDMA
  needs RDMA at both ends (and then the transport is RDMA), RSS needs RSS at both ends; an
  interface may serve in a lower class than its own (an RDMA NIC that is also RSS-capable
  is an RSS NIC towards a server without RDMA). An "RSS" NIC with one receive queue is not
  RSS. The best class that has a reachable pair is used; interfaces not in it stay idle.
* Within that class the fastest local speed wins, then the fastest server speed reachable
  from those; unknown speeds rank below every known one; slower interfaces stay idle.
* Connections per local interface: 4 (RSS), 2 (RDMA), 1 (the rest); at most 32 per session,
  spread evenly when capped (:class:`SelectionPolicy`).
* A local interface is used only if it reaches one of the server's addresses (same subnet by
  default, or any test given as ``reachable``; see :func:`route_table`).
* Each chosen local interface gets one server interface of the class it reaches, the least
  used so far (the local interfaces with fewest choices go first), and one of its addresses:
  on-link first, then IPv6 before IPv4, then the lowest. The source address is the local one
  whose subnet holds it most narrowly. Server interfaces left without a partner stay idle.
* A constraint for the server (New-SmbMultichannelConstraint) leaves only the interfaces it
  names; migration networks (Add-VMMigrationNetwork) leave, for a migration, only interfaces
  with an address in the best-priority networks that yield a channel; the server's own
  migration networks, when given, leave only its addresses in them.
* A RoCE NIC without PFC (off or unknown) is not used for RDMA under the default policy
  ``exclude``: it then competes as the RSS or plain NIC it also is (as Windows treats a NIC
  whose RDMA does not work). Under ``warn`` it is used for RDMA and its decision carries a
  warning. iWARP and InfiniBand need no PFC.

Link-local (169.254/16, fe80::/10), loopback, multicast and host-scoped addresses are never
used: a link-local address names no link by itself, so neither "same subnet" nor a route can
say which local interface reaches it. Loopback is the exception a policy may make
(``SelectionPolicy(allow_loopback=True)``): one host's tests and benchmarks run a client and a
server over 127.0.0.1, 127.0.0.2 and ::1 as if they were networks.

Every interface of both sides gets exactly one :class:`Decision`; :meth:`ChannelPlan.to_dict`
renders the plan as JSON-ready primitives. :func:`connection_speeds`, :func:`speed_weights`
and :func:`split_by_weight` split I/O across the planned connections in proportion to speed.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import TypeVar

from .ioctl import InterfaceCapability, NetworkInterfaceInfo

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NicClass(StrEnum):
    """An interface's Multichannel class, best first (the order of :data:`CLASS_ORDER`)."""

    RDMA = "rdma"
    RSS = "rss"
    PLAIN = "plain"


CLASS_ORDER = (NicClass.RDMA, NicClass.RSS, NicClass.PLAIN)


class Transport(StrEnum):
    RDMA = "rdma"
    TCP = "tcp"


class RdmaKind(StrEnum):
    """The values match ``ferry.inventory``'s; UNKNOWN is a server that only says "RDMA"."""

    ROCE = "roce"
    IWARP = "iwarp"
    INFINIBAND = "infiniband"
    UNKNOWN = "unknown"


class PfcPolicy(StrEnum):
    """What to do with a RoCE interface whose priority flow control is off or unknown."""

    EXCLUDE = "exclude"
    WARN = "warn"


class Purpose(StrEnum):
    SMB = "smb"
    MIGRATION = "migration"


class Side(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class Reason(StrEnum):
    """Why an interface is not used, in the order the checks run."""

    LOOPBACK = "loopback"
    DOWN = "down"
    NO_ADDRESS = "no_address"
    CONSTRAINED_OUT = "constrained_out"
    NOT_MIGRATION_NETWORK = "not_migration_network"
    MIGRATION_PRIORITY = "migration_priority"  # in a migration network of a lower priority
    UNREACHABLE = "unreachable"
    ROCE_WITHOUT_PFC = "roce_without_pfc"
    TYPE_CLASS = "type_class"
    SPEED_CLASS = "speed_class"
    CAPPED = "capped"  # the session's channel limit left no connection for it
    NOT_PAIRED = "not_paired"  # a server interface no chosen local interface was paired with


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NicAddress:
    """One address of an interface; ``prefix_len`` None when unknown (a server's FSCTL answer)."""

    address: str
    prefix_len: int | None = None
    scope: str = "global"
    #: Usable although it is a loopback (or host-scoped) address: set by :func:`select_channels`
    #: under ``SelectionPolicy(allow_loopback=True)``, for one-host tests and benchmarks.
    loopback_ok: bool = False

    def __post_init__(self) -> None:
        ip = ipaddress.ip_address(self.address)
        object.__setattr__(self, "address", str(ip))
        if self.prefix_len is not None and not 0 <= self.prefix_len <= ip.max_prefixlen:
            raise ValueError(f"prefix length {self.prefix_len} for {ip}")

    @property
    def ip(self) -> IPAddress:
        return ipaddress.ip_address(self.address)

    @property
    def network(self) -> IPNetwork:
        """The subnet; just the address itself when the prefix is unknown."""
        ip = self.ip
        prefix = ip.max_prefixlen if self.prefix_len is None else self.prefix_len
        return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)

    @property
    def usable(self) -> bool:
        """Global (or site) unicast: something a channel can be bound to and reach."""
        ip = self.ip
        if self.loopback_ok and ip.is_loopback:
            return True
        return self.scope in ("global", "site") and not (
            ip.is_link_local or ip.is_loopback or ip.is_multicast or ip.is_unspecified
        )


@dataclass(frozen=True, slots=True)
class Nic:
    """A network interface of either side.

    ``rx_queues`` None means unknown: the RSS flag is then taken as it is (a server's
    advertisement, an operator's override). ``rdma_kind`` None means no RDMA.
    """

    name: str
    index: int
    addresses: tuple[NicAddress, ...] = ()
    speed_bps: int | None = None
    rss_capable: bool = False
    rx_queues: int | None = None
    rdma_kind: RdmaKind | None = None
    pfc_enabled: bool | None = None
    up: bool = True
    loopback: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "addresses", tuple(self.addresses))
        if self.rdma_kind is not None:
            object.__setattr__(self, "rdma_kind", RdmaKind(self.rdma_kind))
        if self.index < 0:
            raise ValueError(f"interface index {self.index}")
        if self.speed_bps is not None and self.speed_bps <= 0:
            raise ValueError(f"speed {self.speed_bps} bit/s (None when unknown)")
        if self.rx_queues is not None and self.rx_queues < 0:
            raise ValueError(f"{self.rx_queues} receive queues")

    @property
    def rss(self) -> bool:
        """RSS-capable with more than one receive queue (or a queue count nobody knows)."""
        return self.rss_capable and (self.rx_queues is None or self.rx_queues > 1)

    @property
    def roce_without_pfc(self) -> bool:
        return self.rdma_kind is RdmaKind.ROCE and self.pfc_enabled is not True

    @property
    def usable_addresses(self) -> tuple[NicAddress, ...]:
        return tuple(a for a in self.addresses if a.usable)


@dataclass(frozen=True, slots=True)
class Constraint:
    """Like New-SmbMultichannelConstraint: to ``server`` use only these local interfaces
    (names or indexes). Server names compare case-insensitively; several constraints for one
    server add up."""

    server: str
    interfaces: tuple[str | int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "interfaces", tuple(self.interfaces))
        if not self.interfaces:
            raise ValueError(f"a constraint for {self.server!r} names no interface")

    def applies_to(self, server: str) -> bool:
        return self.server.casefold() == server.casefold()


@dataclass(frozen=True, slots=True)
class MigrationNetwork:
    """Like Add-VMMigrationNetwork: a subnet (or one address) and its priority; a lower
    number is a higher priority, and several networks may share one."""

    subnet: str
    priority: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "subnet", str(ipaddress.ip_network(self.subnet, strict=False)))
        if self.priority < 0:
            raise ValueError(f"priority {self.priority}")

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.subnet)


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """A host's migration networks, or "use any network" (Set-VMHost -UseAnyNetworkForMigration).
    No networks and not ``use_any_network`` means no interface may carry a migration."""

    networks: tuple[MigrationNetwork, ...] = ()
    use_any_network: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(self.networks))


@dataclass(frozen=True, slots=True)
class Route:
    """A route of the local host: ``destination`` (CIDR; ``0.0.0.0/0`` and ``::/0`` are
    defaults) leaves through ``interface`` (a name or an index)."""

    destination: str
    interface: str | int

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", str(ipaddress.ip_network(self.destination, strict=False)))

    def through(self, nic: Nic) -> bool:
        return self.interface == (nic.index if isinstance(self.interface, int) else nic.name)


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """Every limit of the selection, with Windows' defaults."""

    #: Channels (connections) in one session (MS-SMB2 and Windows: 32).
    max_channels: int = 32
    #: Connections per local interface (Windows' ConnectionCountPer...NetworkInterface).
    rdma_connections: int = 2
    rss_connections: int = 4
    plain_connections: int = 1
    #: A RoCE interface with PFC off or unknown: not used for RDMA, or used with a warning.
    roce_without_pfc: PfcPolicy = PfcPolicy.EXCLUDE
    #: Treat loopback interfaces and addresses like any other: for tests and benchmarks on one
    #: host (a client and a server on 127.0.0.1, 127.0.0.2 and ::1), never for real networks.
    allow_loopback: bool = False

    def __post_init__(self) -> None:
        for name in ("max_channels", "rdma_connections", "rss_connections", "plain_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        object.__setattr__(self, "roce_without_pfc", PfcPolicy(self.roce_without_pfc))

    def connections(self, nic_class: NicClass) -> int:
        if nic_class is NicClass.RDMA:
            return self.rdma_connections
        if nic_class is NicClass.RSS:
            return self.rss_connections
        return self.plain_connections


DEFAULT_POLICY = SelectionPolicy()

#: ``reachable(local_interface, remote_address)``: can a connection bound to this local
#: interface reach that address? Called only when the interface has an address of its family.
Reachability = Callable[[Nic, str], bool]


def same_subnet(local: Nic, remote_address: str) -> bool:
    """The remote address is in the subnet of one of the interface's usable addresses."""
    ip = ipaddress.ip_address(remote_address)
    return any(ip in a.network for a in local.usable_addresses)


def route_table(routes: Iterable[Route]) -> Reachability:
    """Reachability from a precomputed routing table: the same subnet, or any route through
    the interface that covers the address. Not longest-prefix-match: each channel is bound to
    its own interface, so any route out of it will do."""
    table = tuple((r, ipaddress.ip_network(r.destination)) for r in routes)

    def reachable(local: Nic, remote_address: str) -> bool:
        if same_subnet(local, remote_address):
            return True
        ip = ipaddress.ip_address(remote_address)
        if not any(a.ip.version == ip.version for a in local.usable_addresses):
            return False
        return any(route.through(local) and ip in network for route, network in table)

    return reachable


# -- conversions ---------------------------------------------------------------------------------


def from_network_interface_info(entries: Iterable[NetworkInterfaceInfo]) -> tuple[Nic, ...]:
    """The server's interfaces from its FSCTL_QUERY_NETWORK_INTERFACE_INFO answer: one entry
    per address, grouped by IfIndex (which tells the server's interfaces apart, MS-SMB2
    3.2.5.14). Named ``if<index>``; a LinkSpeed of 0 is unknown; RDMA of an unknown kind;
    receive queues unknown (the RSS flag stands)."""
    grouped: dict[int, list[NetworkInterfaceInfo]] = {}
    for entry in entries:
        grouped.setdefault(entry.if_index, []).append(entry)
    nics = []
    for index in sorted(grouped):
        group = grouped[index]
        caps = InterfaceCapability(0)
        for entry in group:
            caps |= InterfaceCapability(
                entry.capabilities & (InterfaceCapability.RSS | InterfaceCapability.RDMA)
            )
        speed = max(entry.link_speed for entry in group)
        addresses = tuple(
            NicAddress(a) for a in dict.fromkeys(str(ipaddress.ip_address(e.address)) for e in group)
        )
        nics.append(
            Nic(
                name=f"if{index}",
                index=index,
                addresses=addresses,
                speed_bps=speed or None,
                rss_capable=InterfaceCapability.RSS in caps,
                rx_queues=None,
                rdma_kind=RdmaKind.UNKNOWN if InterfaceCapability.RDMA in caps else None,
            )
        )
    return tuple(nics)


def nic_from_inventory(data: Mapping[str, object]) -> Nic:
    """A :class:`Nic` from one interface of a ``ferry.inventory`` v1 document (a plain mapping,
    e.g. ``Interface.model_dump()``). Up as the inventory defines it (oper state up, or unknown
    and administratively up); when an operator overrode ``rss_capable``, the receive-queue
    count is not held against it."""
    raw_addresses = data.get("addresses", [])
    if not isinstance(raw_addresses, list):
        raise ValueError(f"inventory interface field 'addresses': {raw_addresses!r}")
    addresses = []
    for item in raw_addresses:
        if not isinstance(item, Mapping):
            raise ValueError(f"inventory address {item!r}")
        address = _get(item, "address", str)
        prefix = _get(item, "prefix_len", int)
        scope = _get(item, "scope", str, "global")
        addresses.append(NicAddress(address, prefix, scope))
    overridden = data.get("overridden", [])
    oper_state = _get(data, "oper_state", str)
    rdma_kind = _get_optional(data, "rdma_kind", str)
    return Nic(
        name=_get(data, "name", str),
        index=_get(data, "ifindex", int),
        addresses=tuple(addresses),
        speed_bps=_get_optional(data, "speed_bps", int) or None,
        rss_capable=_get(data, "rss_capable", bool),
        rx_queues=(
            None
            if isinstance(overridden, list) and "rss_capable" in overridden
            else _get(data, "rx_queues", int, 1)
        ),
        rdma_kind=None if rdma_kind is None else RdmaKind(rdma_kind),
        pfc_enabled=_get_optional(data, "pfc_enabled", bool),
        up=oper_state == "up" or (oper_state == "unknown" and _get(data, "admin_up", bool)),
        loopback=_get(data, "loopback", bool, False),
    )


_T = TypeVar("_T")


def _get(data: Mapping[str, object], key: str, kind: type[_T], default: object = None) -> _T:
    """One field of an inventory mapping, of the right type (a bool is no int here)."""
    value = data.get(key, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"inventory interface field {key!r}: {value!r}")
    return value


def _get_optional(data: Mapping[str, object], key: str, kind: type[_T]) -> _T | None:
    return None if data.get(key) is None else _get(data, key, kind)


# -- outputs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelPair:
    """One local interface paired with one server address, and the connections between them."""

    local_name: str
    local_index: int
    source_address: str
    remote_name: str
    remote_index: int
    remote_address: str
    transport: Transport
    nic_class: NicClass
    connections: int
    local_speed_bps: int | None
    remote_speed_bps: int | None

    @property
    def speed_bps(self) -> int | None:
        """What the pair can carry: the slower known end (None when neither is known)."""
        known = [s for s in (self.local_speed_bps, self.remote_speed_bps) if s is not None]
        return min(known) if known else None

    def to_dict(self) -> dict[str, object]:
        return {
            "local_name": self.local_name,
            "local_index": self.local_index,
            "source_address": self.source_address,
            "remote_name": self.remote_name,
            "remote_index": self.remote_index,
            "remote_address": self.remote_address,
            "transport": str(self.transport),
            "class": str(self.nic_class),
            "connections": self.connections,
            "local_speed_bps": self.local_speed_bps,
            "remote_speed_bps": self.remote_speed_bps,
            "speed_bps": self.speed_bps,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one interface: picked (``reason`` None) or skipped, and why in words."""

    side: Side
    name: str
    index: int
    reason: Reason | None
    text: str
    nic_class: NicClass  # the interface's own class under the policy
    speed_bps: int | None
    connections: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def picked(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, object]:
        return {
            "side": str(self.side),
            "name": self.name,
            "index": self.index,
            "picked": self.picked,
            "reason": None if self.reason is None else str(self.reason),
            "text": self.text,
            "class": str(self.nic_class),
            "speed_bps": self.speed_bps,
            "connections": self.connections,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    server: str
    purpose: Purpose
    nic_class: NicClass | None  # the class in use; None when nothing is
    channels: tuple[ChannelPair, ...]
    decisions: tuple[Decision, ...]  # the local interfaces in input order, then the server's
    warnings: tuple[str, ...]
    max_channels: int
    migration_priority: int | None = None  # the migration networks' priority in use

    @property
    def transport(self) -> Transport | None:
        if self.nic_class is None:
            return None
        return Transport.RDMA if self.nic_class is NicClass.RDMA else Transport.TCP

    @property
    def connections(self) -> int:
        return sum(c.connections for c in self.channels)

    def decision(self, side: Side, name: str) -> Decision:
        return next(d for d in self.decisions if d.side is side and d.name == name)

    def to_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "purpose": str(self.purpose),
            "class": None if self.nic_class is None else str(self.nic_class),
            "transport": None if self.transport is None else str(self.transport),
            "connections": self.connections,
            "max_channels": self.max_channels,
            "migration_priority": self.migration_priority,
            "channels": [c.to_dict() for c in self.channels],
            "decisions": [d.to_dict() for d in self.decisions],
            "warnings": list(self.warnings),
        }


# -- selection ------------------------------------------------------------------------------------


def select_channels(
    local: Iterable[Nic],
    remote: Iterable[Nic],
    *,
    server: str = "",
    purpose: Purpose = Purpose.SMB,
    reachable: Reachability = same_subnet,
    constraints: Iterable[Constraint] = (),
    migration: MigrationSettings | None = None,
    policy: SelectionPolicy = DEFAULT_POLICY,
    remote_migration: MigrationSettings | None = None,
) -> ChannelPlan:
    """The channel plan from these local interfaces to the server's.

    ``constraints`` are every constraint of the local host; those for ``server`` apply.
    ``migration`` applies to ``purpose=MIGRATION`` only (None there: any network), and to the
    local side only; ``reachable`` then sees each interface with only the addresses in the
    migration networks being tried. ``remote_migration``, the server's own migration networks
    (also for ``purpose=MIGRATION`` only; None: any network), leaves of the server's interfaces
    only the addresses in any of them, whatever their priority: the local host's priorities
    order the choice. Interface names and indexes must be unique on each side.
    """
    local = tuple(local)
    remote = tuple(remote)
    if policy.allow_loopback:
        local, remote = tuple(map(_loopback_ok, local)), tuple(map(_loopback_ok, remote))
    _check_unique(Side.LOCAL, local)
    _check_unique(Side.REMOTE, remote)
    warnings: list[str] = []
    local_done: dict[int, Decision] = {}

    named = [i for c in constraints if c.applies_to(server) for i in c.interfaces]
    for item in dict.fromkeys(named):
        if not any(_named(nic, item) for nic in local):
            warnings.append(f"constraint for {server!r} names {item!r}, which is no local interface")

    eligible: list[Nic] = []
    for nic in local:
        skip = _prefilter(Side.LOCAL, nic, policy)
        if skip is None and named and not any(_named(nic, item) for item in named):
            skip = _decide(
                Side.LOCAL,
                nic,
                policy,
                Reason.CONSTRAINED_OUT,
                f"not in the Multichannel constraint for {server!r}",
            )
        if skip is None:
            eligible.append(nic)
        else:
            local_done[nic.index] = skip
    remotes: list[Nic] = []
    remote_done: dict[int, Decision] = {}
    for nic in remote:
        skip = _prefilter(Side.REMOTE, nic, policy)
        if skip is None:
            remotes.append(nic)
        else:
            remote_done[nic.index] = skip
    if purpose is Purpose.MIGRATION and remote_migration is not None and not remote_migration.use_any_network:
        remotes = _in_remote_migration_networks(remotes, remote_migration, policy, remote_done)

    priority: int | None = None
    if purpose is Purpose.MIGRATION and migration is not None and not migration.use_any_network:
        outcome, priority = _by_migration_priority(
            eligible, remotes, migration, reachable, policy, local_done
        )
    else:
        outcome = _select(eligible, remotes, reachable, policy)
        local_done.update(outcome.local)
    remote_done.update(outcome.remote)

    decisions = tuple(local_done[n.index] for n in local) + tuple(remote_done[n.index] for n in remote)
    for d in decisions:
        if d.picked:
            warnings.extend(f"{d.side} {d.name}: {w}" for w in d.warnings)
    return ChannelPlan(
        server=server,
        purpose=purpose,
        nic_class=outcome.nic_class if outcome.channels else None,
        channels=outcome.channels,
        decisions=decisions,
        warnings=tuple(warnings),
        max_channels=policy.max_channels,
        migration_priority=priority if outcome.channels else None,
    )


def _by_migration_priority(
    eligible: list[Nic],
    remotes: list[Nic],
    migration: MigrationSettings,
    reachable: Reachability,
    policy: SelectionPolicy,
    local_done: dict[int, Decision],
) -> tuple[_Outcome, int | None]:
    """Try the migration networks' priorities best first; the first that yields a channel wins.
    An interface tried at a priority that failed keeps the reason it failed there."""
    levels: dict[int, list[IPNetwork]] = {}
    for net in migration.networks:
        levels.setdefault(net.priority, []).append(net.network)
    member: dict[int, list[int]] = {}  # interface index -> the priorities it has an address in
    for nic in eligible:
        prios = sorted(
            p for p, nets in levels.items() if any(a.ip in n for a in nic.usable_addresses for n in nets)
        )
        if prios:
            member[nic.index] = prios
        else:
            text = (
                "not in a migration network ("
                + (", ".join(n.subnet for n in migration.networks) or "none configured")
                + ")"
            )
            local_done[nic.index] = _decide(Side.LOCAL, nic, policy, Reason.NOT_MIGRATION_NETWORK, text)
    outcome = _select([], remotes, reachable, policy)
    chosen: int | None = None
    for prio in sorted(levels):
        group = [
            replace(nic, addresses=_within(nic.addresses, levels[prio]))
            for nic in eligible
            if prio in member.get(nic.index, ())
        ]
        if not group:
            continue
        outcome = _select(group, remotes, reachable, policy)
        local_done.update(outcome.local)
        if outcome.channels:
            chosen = prio
            break
    if chosen is not None:
        for nic in eligible:
            prios = member.get(nic.index, [])
            if prios and min(prios) > chosen:
                local_done[nic.index] = _decide(
                    Side.LOCAL,
                    nic,
                    policy,
                    Reason.MIGRATION_PRIORITY,
                    f"in a migration network of priority {min(prios)}; priority {chosen} is in use",
                )
    return outcome, chosen


def _in_remote_migration_networks(
    remotes: list[Nic],
    migration: MigrationSettings,
    policy: SelectionPolicy,
    remote_done: dict[int, Decision],
) -> list[Nic]:
    """The server's interfaces cut down to their addresses in the server's migration networks;
    an interface with none is skipped."""
    networks = [n.network for n in migration.networks]
    kept: list[Nic] = []
    for nic in remotes:
        inside = _within(nic.addresses, networks)
        if inside:
            kept.append(replace(nic, addresses=inside))
        else:
            text = (
                "not in a migration network of the server ("
                + (", ".join(n.subnet for n in migration.networks) or "none configured")
                + ")"
            )
            remote_done[nic.index] = _decide(Side.REMOTE, nic, policy, Reason.NOT_MIGRATION_NETWORK, text)
    return kept


def _within(addresses: tuple[NicAddress, ...], networks: list[IPNetwork]) -> tuple[NicAddress, ...]:
    return tuple(a for a in addresses if a.usable and any(a.ip in n for n in networks))


@dataclass(frozen=True, slots=True)
class _Outcome:
    nic_class: NicClass | None
    channels: tuple[ChannelPair, ...]
    local: dict[int, Decision]
    remote: dict[int, Decision]


def _select(
    locals_: list[Nic], remotes: list[Nic], reachable: Reachability, policy: SelectionPolicy
) -> _Outcome:
    """The rules proper, over interfaces that passed the filters (up, addressed, allowed)."""
    local_out: dict[int, Decision] = {}
    remote_out: dict[int, Decision] = {}
    lcls = {n.index: _classes(n, policy) for n in locals_}
    rcls = {n.index: _classes(n, policy) for n in remotes}

    # Which server addresses each local interface reaches, best first.
    reach: dict[tuple[int, int], tuple[str, ...]] = {}
    for lnic in locals_:
        families = {a.ip.version for a in lnic.usable_addresses}
        for rnic in remotes:
            found = [
                a
                for a in dict.fromkeys(x.address for x in rnic.usable_addresses)
                if ipaddress.ip_address(a).version in families and reachable(lnic, a)
            ]
            if found:
                reach[lnic.index, rnic.index] = tuple(sorted(found, key=partial(_address_rank, lnic)))

    def reaches(lnic: Nic, rnic: Nic) -> bool:
        return (lnic.index, rnic.index) in reach

    for lnic in locals_:
        if not any(reaches(lnic, r) for r in remotes):
            local_out[lnic.index] = _decide(
                Side.LOCAL, lnic, policy, Reason.UNREACHABLE, "reaches none of the server's addresses"
            )
    for rnic in remotes:
        if not any(reaches(lnic, rnic) for lnic in locals_):
            remote_out[rnic.index] = _decide(
                Side.REMOTE, rnic, policy, Reason.UNREACHABLE, "no eligible local interface reaches it"
            )

    tier = next(
        (c for c in CLASS_ORDER if any(c in lcls[li] and c in rcls[ri] for li, ri in reach)),
        None,
    )
    if tier is None:
        return _Outcome(None, (), local_out, remote_out)

    in_tier_l = [n for n in locals_ if n.index not in local_out]
    in_tier_r = [n for n in remotes if n.index not in remote_out]
    tier_l: list[Nic] = []
    for lnic in in_tier_l:
        if tier not in lcls[lnic.index]:
            local_out[lnic.index] = _class_skip(Side.LOCAL, lnic, tier, policy)
        elif not any(tier in rcls[r.index] and reaches(lnic, r) for r in in_tier_r):
            local_out[lnic.index] = _decide(
                Side.LOCAL, lnic, policy, Reason.TYPE_CLASS, f"reaches no {_LABEL[tier]} server interface"
            )
        else:
            tier_l.append(lnic)
    tier_r: list[Nic] = []
    for rnic in in_tier_r:
        if tier not in rcls[rnic.index]:
            remote_out[rnic.index] = _class_skip(Side.REMOTE, rnic, tier, policy)
        elif not any(tier in lcls[lnic.index] and reaches(lnic, rnic) for lnic in in_tier_l):
            remote_out[rnic.index] = _decide(
                Side.REMOTE, rnic, policy, Reason.TYPE_CLASS, f"no {_LABEL[tier]} local interface reaches it"
            )
        else:
            tier_r.append(rnic)

    # The fastest local speed, then the fastest server speed those reach.
    top_l = max(_speed_rank(n.speed_bps) for n in tier_l)
    fast_l = [n for n in tier_l if _speed_rank(n.speed_bps) == top_l]
    top_r = max(_speed_rank(r.speed_bps) for r in tier_r if any(reaches(lnic, r) for lnic in fast_l))
    kept_r = [r for r in tier_r if _speed_rank(r.speed_bps) == top_r and any(reaches(n, r) for n in fast_l)]
    kept_l = [n for n in fast_l if any(reaches(n, r) for r in kept_r)]
    in_use_l = _speed_text(fast_l[0].speed_bps)
    in_use_r = _speed_text(kept_r[0].speed_bps)
    for lnic in tier_l:
        if lnic not in fast_l:
            text = f"{_speed_text(lnic.speed_bps)}; {_LABEL[tier]} interfaces of {in_use_l} are in use"
            local_out[lnic.index] = _decide(Side.LOCAL, lnic, policy, Reason.SPEED_CLASS, text)
        elif lnic not in kept_l:
            text = f"reaches only server interfaces slower than {in_use_r}"
            local_out[lnic.index] = _decide(Side.LOCAL, lnic, policy, Reason.SPEED_CLASS, text)
    for rnic in tier_r:
        if rnic in kept_r:
            continue
        if _speed_rank(rnic.speed_bps) < top_r:
            text = f"{_speed_text(rnic.speed_bps)}; {_LABEL[tier]} server interfaces of {in_use_r} are in use"
        else:
            text = f"reached only from local interfaces slower than {in_use_l}"
        remote_out[rnic.index] = _decide(Side.REMOTE, rnic, policy, Reason.SPEED_CLASS, text)

    # Connections per interface, within the session's limit, spread evenly.
    kept_l.sort(key=_order)
    kept_r.sort(key=_order)
    per = policy.connections(tier)
    counts = _spread(len(kept_l), per, policy.max_channels)
    active = [(n, c) for n, c in zip(kept_l, counts, strict=True) if c]
    for lnic, count in zip(kept_l, counts, strict=True):
        if not count:
            text = f"the session's limit of {policy.max_channels} channels is taken by the others"
            local_out[lnic.index] = _decide(Side.LOCAL, lnic, policy, Reason.CAPPED, text)

    # Pair: the most constrained local interface first, each with the least used server one.
    assigned: dict[int, list[tuple[Nic, int]]] = {r.index: [] for r in kept_r}
    partner: dict[int, Nic] = {}
    for lnic, count in sorted(active, key=lambda p: (sum(reaches(p[0], r) for r in kept_r), _order(p[0]))):
        rnic = min((r for r in kept_r if reaches(lnic, r)), key=lambda r: (len(assigned[r.index]), _order(r)))
        assigned[rnic.index].append((lnic, count))
        partner[lnic.index] = rnic

    transport = Transport.RDMA if tier is NicClass.RDMA else Transport.TCP
    channels = []
    for lnic, count in active:
        rnic = partner[lnic.index]
        address = reach[lnic.index, rnic.index][0]
        source = _source_address(lnic, address)
        channels.append(
            ChannelPair(
                lnic.name,
                lnic.index,
                source,
                rnic.name,
                rnic.index,
                address,
                transport,
                tier,
                count,
                lnic.speed_bps,
                rnic.speed_bps,
            )
        )
        capped = f" (of {per}: session limit {policy.max_channels})" if count < per else ""
        text = (
            f"{_LABEL[tier]} {_speed_text(lnic.speed_bps)}: {_plural(count, 'connection')}{capped} "
            f"from {source} to {address} ({rnic.name}) over {transport.upper()}"
        )
        local_out[lnic.index] = _decide(Side.LOCAL, lnic, policy, None, text, count)
    for rnic in kept_r:
        pairs = assigned[rnic.index]
        if pairs:
            count = sum(c for _, c in pairs)
            text = (
                f"{_LABEL[tier]} {_speed_text(rnic.speed_bps)}: {_plural(count, 'connection')} "
                f"from {', '.join(n.name for n, _ in sorted(pairs, key=lambda p: _order(p[0])))}"
            )
            remote_out[rnic.index] = _decide(Side.REMOTE, rnic, policy, None, text, count)
        else:
            text = "no chosen local interface was left to pair with it"
            remote_out[rnic.index] = _decide(Side.REMOTE, rnic, policy, Reason.NOT_PAIRED, text)
    return _Outcome(tier, tuple(channels), local_out, remote_out)


def _loopback_ok(nic: Nic) -> Nic:
    addresses = tuple(replace(a, loopback_ok=True) if a.ip.is_loopback else a for a in nic.addresses)
    return replace(nic, loopback=False, addresses=addresses)


def _prefilter(side: Side, nic: Nic, policy: SelectionPolicy) -> Decision | None:
    if nic.loopback:
        return _decide(side, nic, policy, Reason.LOOPBACK, "loopback interface")
    if not nic.up:
        return _decide(side, nic, policy, Reason.DOWN, "not up")
    if not nic.usable_addresses:
        text = "only link-local or host addresses" if nic.addresses else "no address"
        return _decide(side, nic, policy, Reason.NO_ADDRESS, text)
    return None


def _classes(nic: Nic, policy: SelectionPolicy) -> tuple[NicClass, ...]:
    """The classes an interface can serve in, best first."""
    rdma = nic.rdma_kind is not None and not (
        nic.roce_without_pfc and policy.roce_without_pfc is PfcPolicy.EXCLUDE
    )
    return tuple(
        c for c, ok in ((NicClass.RDMA, rdma), (NicClass.RSS, nic.rss), (NicClass.PLAIN, True)) if ok
    )


def _class_skip(side: Side, nic: Nic, tier: NicClass, policy: SelectionPolicy) -> Decision:
    if tier is NicClass.RDMA and nic.rdma_kind is not None:  # RDMA-capable, yet not in the class
        pfc = "off" if nic.pfc_enabled is False else "unknown"
        text = f"RoCE without PFC (PFC {pfc}) is not used for RDMA; {_LABEL[tier]} interfaces are in use"
        return _decide(side, nic, policy, Reason.ROCE_WITHOUT_PFC, text)
    own = _classes(nic, policy)[0]
    return _decide(
        side, nic, policy, Reason.TYPE_CLASS, f"{_LABEL[own]} interface; {_LABEL[tier]} interfaces are in use"
    )


def _decide(
    side: Side, nic: Nic, policy: SelectionPolicy, reason: Reason | None, text: str, connections: int = 0
) -> Decision:
    warnings: tuple[str, ...] = ()
    if nic.roce_without_pfc:
        pfc = "off" if nic.pfc_enabled is False else "unknown"
        if policy.roce_without_pfc is PfcPolicy.WARN:
            warnings = (f"RoCE without PFC (PFC {pfc}) is used for RDMA: expect losses under congestion",)
        else:
            warnings = (f"RoCE without PFC (PFC {pfc}): RDMA not used",)
    return Decision(
        side,
        nic.name,
        nic.index,
        reason,
        text,
        _classes(nic, policy)[0],
        nic.speed_bps,
        connections,
        warnings,
    )


def _check_unique(side: Side, nics: tuple[Nic, ...]) -> None:
    for what, keys in (("index", [n.index for n in nics]), ("name", [n.name for n in nics])):
        if len(set(keys)) != len(keys):
            raise ValueError(f"{side} interfaces with the same {what}")


def _named(nic: Nic, item: str | int) -> bool:
    return nic.index == item if isinstance(item, int) else nic.name == item


def _order(nic: Nic) -> tuple[int, str]:
    return nic.index, nic.name


def _speed_rank(speed: int | None) -> tuple[bool, int]:
    return speed is not None, speed or 0


def _address_rank(local: Nic, address: str) -> tuple[bool, bool, int]:
    """On-link first, then IPv6 before IPv4 (RFC 6724's default precedence), then lowest."""
    ip = ipaddress.ip_address(address)
    return not same_subnet(local, address), ip.version == 4, int(ip)


def _source_address(local: Nic, remote_address: str) -> str:
    """The local address to bind: of the remote's family, the one whose subnet holds the remote
    address most narrowly, else the lowest."""
    ip = ipaddress.ip_address(remote_address)
    candidates = [a for a in local.usable_addresses if a.ip.version == ip.version]
    best = min(candidates, key=lambda a: (ip not in a.network, -a.network.prefixlen, int(a.ip)))
    return best.address


def _spread(n: int, per: int, cap: int) -> list[int]:
    """``n`` interfaces wanting ``per`` connections each, ``cap`` in all: as even as can be,
    the first in order getting the odd ones."""
    if n == 0:
        return []
    total = min(n * per, cap)
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _speed_text(bps: int | None) -> str:
    if bps is None:
        return "unknown speed"
    for unit, size in (("Tb/s", 10**12), ("Gb/s", 10**9), ("Mb/s", 10**6), ("kb/s", 10**3)):
        if bps >= size:
            return f"{bps / size:g} {unit}"
    return f"{bps} b/s"


_LABEL = {NicClass.RDMA: "RDMA", NicClass.RSS: "RSS", NicClass.PLAIN: "non-RSS"}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- spreading I/O ----------------------------------------------------------------------------------


def connection_speeds(channels: Iterable[ChannelPair]) -> tuple[int | None, ...]:
    """One entry per connection, in plan order: its pair's speed shared among the pair's
    connections (None when the pair's speed is unknown)."""
    out: list[int | None] = []
    for pair in channels:
        speed = pair.speed_bps
        out.extend([None if speed is None else max(1, speed // pair.connections)] * pair.connections)
    return tuple(out)


def speed_weights(speeds: Sequence[int | None]) -> tuple[int, ...]:
    """Integer weights in proportion to speed, reduced by their common divisor. An unknown
    speed weighs as the slowest known one (all unknown: equal weights)."""
    known = [s for s in speeds if s is not None and s > 0]
    fill = min(known) if known else 1
    weights = [s if s is not None and s > 0 else fill for s in speeds]
    divisor = math.gcd(*weights) if weights else 1
    return tuple(w // divisor for w in weights)


def split_by_weight(total: int, weights: Sequence[int], unit: int = 1) -> tuple[int, ...]:
    """Split ``total`` bytes across channels in proportion to ``weights``, in whole ``unit``s
    (a request size) by largest remainder; the ``total % unit`` tail goes to the heaviest
    channel (the first among equals). The shares add up to ``total`` exactly."""
    if total < 0 or unit < 1:
        raise ValueError(f"total {total}, unit {unit}")
    if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"weights {list(weights)}: non-negative, not all zero")
    units, tail = divmod(total, unit)
    whole = sum(weights)
    shares = [units * w // whole for w in weights]
    left = units - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(units * weights[i] % whole), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    result = [s * unit for s in shares]
    heaviest = min(range(len(weights)), key=lambda i: (-weights[i], i))
    result[heaviest] += tail
    return tuple(result)


__all__ = [
    "CLASS_ORDER",
    "DEFAULT_POLICY",
    "ChannelPair",
    "ChannelPlan",
    "Constraint",
    "Decision",
    "MigrationNetwork",
    "MigrationSettings",
    "Nic",
    "NicAddress",
    "NicClass",
    "PfcPolicy",
    "Purpose",
    "RdmaKind",
    "Reachability",
    "Reason",
    "Route",
    "SelectionPolicy",
    "Side",
    "Transport",
    "connection_speeds",
    "from_network_interface_info",
    "nic_from_inventory",
    "route_table",
    "same_subnet",
    "select_channels",
    "speed_weights",
    "split_by_weight",
]
