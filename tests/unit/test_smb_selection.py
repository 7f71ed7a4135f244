"""smbcore.selection: Multichannel channel selection by Windows' rules, one table of scenarios
with the reason for every interface's decision, and Hypothesis properties over arbitrary hosts."""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from ferry_hostnet.model import Address, Interface
from ferry_hostnet.model import RdmaKind as HostRdmaKind
from hypothesis import given, settings
from hypothesis import strategies as st
from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo, decode_interfaces, encode_interfaces
from smbcore.selection import (
    ChannelPlan,
    Constraint,
    MigrationNetwork,
    MigrationSettings,
    Nic,
    NicAddress,
    NicClass,
    PfcPolicy,
    Purpose,
    RdmaKind,
    Reachability,
    Reason,
    Route,
    SelectionPolicy,
    Side,
    Transport,
    connection_speeds,
    from_network_interface_info,
    nic_from_inventory,
    route_table,
    same_subnet,
    select_channels,
    speed_weights,
    split_by_weight,
)

G = 10**9
RSS = InterfaceCapability.RSS
RDMA = InterfaceCapability.RDMA
PICKED = None  # the expected "reason" of a picked interface


def addr(text: str) -> NicAddress:
    address, _, prefix = text.partition("/")
    return NicAddress(address, int(prefix) if prefix else None)


def nic(
    name: str,
    index: int,
    *addresses: str,
    speed: int | None = 10 * G,
    rss: bool = True,
    queues: int | None = 8,
    rdma: RdmaKind | None = None,
    pfc: bool | None = None,
    up: bool = True,
    loopback: bool = False,
) -> Nic:
    return Nic(name, index, tuple(addr(a) for a in addresses), speed, rss, queues, rdma, pfc, up, loopback)


# The seed: a 1 Gb RSS NIC, two 10 Gb RSS NICs and two 10 Gb RDMA NICs (also RSS), each in its
# own subnet, on both hosts; the server's side as its FSCTL_QUERY_NETWORK_INTERFACE_INFO says.
ETH0 = nic("eth0", 2, "10.0.0.1/24", speed=1 * G)
ETH1 = nic("eth1", 3, "10.0.1.1/24")
ETH2 = nic("eth2", 4, "10.0.2.1/24")
RDMA0 = nic("rdma0", 5, "10.0.3.1/24", rdma=RdmaKind.ROCE, pfc=True)
RDMA1 = nic("rdma1", 6, "10.0.4.1/24", rdma=RdmaKind.IWARP)
SEED_LOCAL = (ETH0, ETH1, ETH2, RDMA0, RDMA1)
SEED_SERVER = [
    NetworkInterfaceInfo(12, RSS, 1 * G, "10.0.0.2"),
    NetworkInterfaceInfo(13, RSS, 10 * G, "10.0.1.2"),
    NetworkInterfaceInfo(14, RSS, 10 * G, "10.0.2.2"),
    NetworkInterfaceInfo(15, RSS | RDMA, 10 * G, "10.0.3.2"),
    NetworkInterfaceInfo(16, RSS | RDMA, 10 * G, "10.0.4.2"),
]
SEED_REMOTE = from_network_interface_info(SEED_SERVER)
SERVER_NO_RDMA = from_network_interface_info(
    [NetworkInterfaceInfo(e.if_index, RSS, e.link_speed, e.address) for e in SEED_SERVER]
)
IF = {n.name: n for n in SEED_REMOTE}


@dataclass
class Case:
    local: Sequence[Nic]
    remote: Sequence[Nic]
    #: (local, source address, remote, remote address, transport, connections)
    channels: list[tuple[str, str, str, str, Transport, int]]
    #: every interface: "l:name" / "r:name" -> the reason, or PICKED
    reasons: dict[str, Reason | None]
    options: dict[str, object] = field(default_factory=dict)
    warnings: int = 0


def tcp(local: str, src: str, remote: str, dst: str, n: int = 4) -> tuple[str, str, str, str, Transport, int]:
    return local, src, remote, dst, Transport.TCP, n


def rdma(
    local: str, src: str, remote: str, dst: str, n: int = 2
) -> tuple[str, str, str, str, Transport, int]:
    return local, src, remote, dst, Transport.RDMA, n


TC, SC, UR = Reason.TYPE_CLASS, Reason.SPEED_CLASS, Reason.UNREACHABLE
CO, NMN, MP = Reason.CONSTRAINED_OUT, Reason.NOT_MIGRATION_NETWORK, Reason.MIGRATION_PRIORITY
SEED_REASONS_RSS_ONLY: dict[str, Reason | None] = {"l:eth0": SC, "l:eth1": PICKED, "l:eth2": PICKED}
SUBNET16 = [nic(f"eth{i}", 10 + i, f"10.1.{i}.1/16") for i in range(10)]
PLAIN3 = [nic(f"p{i}", 20 + i, f"10.1.0.{i + 1}/24", rss=False) for i in range(3)]
ONE_SERVER_NIC = (nic("srv", 7, "10.1.0.200"),)
MIGRATION = MigrationSettings((MigrationNetwork("10.0.2.0/24", 1), MigrationNetwork("10.0.1.0/24", 2)))
RSS_LOCAL = (ETH0, ETH1, ETH2)

CASES = {
    "seed: the two RDMA NICs, 2 connections each": Case(
        SEED_LOCAL,
        SEED_REMOTE,
        [rdma("rdma0", "10.0.3.1", "if15", "10.0.3.2"), rdma("rdma1", "10.0.4.1", "if16", "10.0.4.2")],
        {"l:eth0": TC, "l:eth1": TC, "l:eth2": TC, "l:rdma0": PICKED, "l:rdma1": PICKED}
        | {"r:if12": TC, "r:if13": TC, "r:if14": TC, "r:if15": PICKED, "r:if16": PICKED},
    ),
    "seed without RDMA: the two 10 Gb RSS NICs, 4 each": Case(
        RSS_LOCAL,
        SEED_REMOTE,
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2"), tcp("eth2", "10.0.2.1", "if14", "10.0.2.2")],
        SEED_REASONS_RSS_ONLY
        | {"r:if12": SC, "r:if13": PICKED, "r:if14": PICKED, "r:if15": UR, "r:if16": UR},
    ),
    "server without RDMA: the RDMA NICs serve as 10 Gb RSS NICs": Case(
        SEED_LOCAL,
        SERVER_NO_RDMA,
        [
            tcp("eth1", "10.0.1.1", "if13", "10.0.1.2"),
            tcp("eth2", "10.0.2.1", "if14", "10.0.2.2"),
            tcp("rdma0", "10.0.3.1", "if15", "10.0.3.2"),
            tcp("rdma1", "10.0.4.1", "if16", "10.0.4.2"),
        ],
        SEED_REASONS_RSS_ONLY
        | {"l:rdma0": PICKED, "l:rdma1": PICKED}
        | {"r:if12": SC, "r:if13": PICKED, "r:if14": PICKED, "r:if15": PICKED, "r:if16": PICKED},
    ),
    "constraint naming two interfaces (a name, an index): exactly them": Case(
        SEED_LOCAL,
        SEED_REMOTE,
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2"), tcp("eth2", "10.0.2.1", "if14", "10.0.2.2")],
        {"l:eth0": CO, "l:eth1": PICKED, "l:eth2": PICKED, "l:rdma0": CO, "l:rdma1": CO}
        | {"r:if12": UR, "r:if13": PICKED, "r:if14": PICKED, "r:if15": UR, "r:if16": UR},
        {"server": "hv02", "constraints": [Constraint("HV02", ("eth1", 4)), Constraint("hv03", ("eth0",))]},
    ),
    "a constraint for another server does not apply": Case(
        SEED_LOCAL,
        SEED_REMOTE,
        [rdma("rdma0", "10.0.3.1", "if15", "10.0.3.2"), rdma("rdma1", "10.0.4.1", "if16", "10.0.4.2")],
        {"l:eth0": TC, "l:eth1": TC, "l:eth2": TC, "l:rdma0": PICKED, "l:rdma1": PICKED}
        | {"r:if12": TC, "r:if13": TC, "r:if14": TC, "r:if15": PICKED, "r:if16": PICKED},
        {"server": "hv02", "constraints": [Constraint("hv03", ("eth0",))]},
    ),
    "a constraint naming no existing interface leaves nothing, with a warning": Case(
        RSS_LOCAL,
        SEED_REMOTE[:3],
        [],
        {"l:eth0": CO, "l:eth1": CO, "l:eth2": CO, "r:if12": UR, "r:if13": UR, "r:if14": UR},
        {"server": "hv02", "constraints": [Constraint("hv02", ("eth7",))]},
        warnings=1,
    ),
    "mixed 10 Gb and 1 Gb: only the 10 Gb; unknown speed ranks below 1 Gb": Case(
        (ETH0, ETH1, nic("eth9", 9, "10.0.1.9/24", speed=None)),
        SEED_REMOTE[:2],
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2")],
        {"l:eth0": SC, "l:eth1": PICKED, "l:eth9": SC, "r:if12": SC, "r:if13": PICKED},
    ),
    "unknown speed loses to 1 Gb": Case(
        (ETH0, nic("eth9", 9, "10.0.0.9/24", speed=None)),
        SEED_REMOTE[:1],
        [tcp("eth0", "10.0.0.1", "if12", "10.0.0.2")],
        {"l:eth0": PICKED, "l:eth9": SC, "r:if12": PICKED},
    ),
    "unreachable subnets are skipped on both sides": Case(
        (ETH1, nic("eth5", 8, "192.168.5.1/24")),
        (IF["if13"], nic("if20", 20, "172.16.0.2")),
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2")],
        {"l:eth1": PICKED, "l:eth5": UR, "r:if13": PICKED, "r:if20": UR},
    ),
    "a route makes another subnet reachable": Case(
        (ETH1, nic("eth5", 8, "192.168.5.1/24")),
        (IF["if13"], nic("if20", 20, "172.16.0.2")),
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2"), tcp("eth5", "192.168.5.1", "if20", "172.16.0.2")],
        {"l:eth1": PICKED, "l:eth5": PICKED, "r:if13": PICKED, "r:if20": PICKED},
        {"reachable": route_table([Route("172.16.0.0/16", "eth5")])},
    ),
    "an RSS NIC with one receive queue is not RSS": Case(
        (nic("eth1", 3, "10.0.1.1/24", queues=1), ETH2),
        SEED_REMOTE[1:3],
        [tcp("eth2", "10.0.2.1", "if14", "10.0.2.2")],
        {"l:eth1": TC, "l:eth2": PICKED, "r:if13": TC, "r:if14": PICKED},
    ),
    "32-channel cap: ten RSS NICs spread 4, 4, 3, ...": Case(
        SUBNET16,
        ONE_SERVER_NIC,
        [
            tcp(n.name, n.addresses[0].address, "srv", "10.1.0.200", 4 if i < 2 else 3)
            for i, n in enumerate(SUBNET16)
        ],
        {f"l:{n.name}": PICKED for n in SUBNET16} | {"r:srv": PICKED},
    ),
    "a cap below the number of NICs leaves the last ones out": Case(
        PLAIN3,
        ONE_SERVER_NIC,
        [tcp("p0", "10.1.0.1", "srv", "10.1.0.200", 1), tcp("p1", "10.1.0.2", "srv", "10.1.0.200", 1)],
        {"l:p0": PICKED, "l:p1": PICKED, "l:p2": Reason.CAPPED, "r:srv": PICKED},
        {"policy": SelectionPolicy(max_channels=2)},
    ),
    "a configured cap is spread evenly": Case(
        (ETH1, nic("eth3", 5, "10.0.1.3/24")),
        SEED_REMOTE[1:2],
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2", 3), tcp("eth3", "10.0.1.3", "if13", "10.0.1.2", 3)],
        {"l:eth1": PICKED, "l:eth3": PICKED, "r:if13": PICKED},
        {"policy": SelectionPolicy(max_channels=6)},
    ),
    "migration: the priority-1 network only": Case(
        RSS_LOCAL,
        SEED_REMOTE[:3],
        [tcp("eth2", "10.0.2.1", "if14", "10.0.2.2")],
        {"l:eth0": NMN, "l:eth1": MP, "l:eth2": PICKED, "r:if12": UR, "r:if13": UR, "r:if14": PICKED},
        {"purpose": Purpose.MIGRATION, "migration": MIGRATION},
    ),
    "migration: priority beats speed": Case(
        RSS_LOCAL,
        SEED_REMOTE[:3],
        [tcp("eth0", "10.0.0.1", "if12", "10.0.0.2")],
        {"l:eth0": PICKED, "l:eth1": MP, "l:eth2": NMN, "r:if12": PICKED, "r:if13": UR, "r:if14": UR},
        {
            "purpose": Purpose.MIGRATION,
            "migration": MigrationSettings(
                (MigrationNetwork("10.0.0.0/24", 0), MigrationNetwork("10.0.1.0/24", 1))
            ),
        },
    ),
    "migration: falls back to priority 2 when priority 1 is down": Case(
        (ETH0, ETH1, nic("eth2", 4, "10.0.2.1/24", up=False)),
        SEED_REMOTE[:3],
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2")],
        {
            "l:eth0": NMN,
            "l:eth1": PICKED,
            "l:eth2": Reason.DOWN,
            "r:if12": UR,
            "r:if13": PICKED,
            "r:if14": UR,
        },
        {"purpose": Purpose.MIGRATION, "migration": MIGRATION},
    ),
    "migration: falls back when priority 1 reaches nothing, which keeps its reason": Case(
        (ETH1, nic("eth5", 8, "192.168.5.1/24")),
        SEED_REMOTE[1:2],
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2")],
        {"l:eth1": PICKED, "l:eth5": UR, "r:if13": PICKED},
        {
            "purpose": Purpose.MIGRATION,
            "migration": MigrationSettings(
                (MigrationNetwork("192.168.5.0/24", 1), MigrationNetwork("10.0.1.0/24", 2))
            ),
        },
    ),
    "migration: the source address is the one in the migration network": Case(
        (nic("eth1", 3, "10.0.1.1/24", "10.0.6.1/24"),),
        (nic("if13", 13, "10.0.1.2", "10.0.6.2"),),
        [tcp("eth1", "10.0.6.1", "if13", "10.0.6.2")],
        {"l:eth1": PICKED, "r:if13": PICKED},
        {"purpose": Purpose.MIGRATION, "migration": MigrationSettings((MigrationNetwork("10.0.6.0/24"),))},
    ),
    "the same host for SMB: lowest on-link address": Case(
        (nic("eth1", 3, "10.0.1.1/24", "10.0.6.1/24"),),
        (nic("if13", 13, "10.0.6.2", "10.0.1.2"),),
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2")],
        {"l:eth1": PICKED, "r:if13": PICKED},
        {"migration": MigrationSettings((MigrationNetwork("10.0.6.0/24"),))},  # not a migration
    ),
    "migration over any network": Case(
        RSS_LOCAL,
        SEED_REMOTE[:3],
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2"), tcp("eth2", "10.0.2.1", "if14", "10.0.2.2")],
        SEED_REASONS_RSS_ONLY | {"r:if12": SC, "r:if13": PICKED, "r:if14": PICKED},
        {"purpose": Purpose.MIGRATION, "migration": MigrationSettings(use_any_network=True)},
    ),
    "migration with no networks and not any network: nothing": Case(
        RSS_LOCAL,
        SEED_REMOTE[:3],
        [],
        {"l:eth0": NMN, "l:eth1": NMN, "l:eth2": NMN, "r:if12": UR, "r:if13": UR, "r:if14": UR},
        {"purpose": Purpose.MIGRATION, "migration": MigrationSettings()},
    ),
    "RoCE without PFC is excluded from RDMA, iWARP kept": Case(
        (ETH1, nic("rdma0", 5, "10.0.3.1/24", rdma=RdmaKind.ROCE, pfc=None), RDMA1),
        SEED_REMOTE,
        [rdma("rdma1", "10.0.4.1", "if16", "10.0.4.2")],
        {"l:eth1": TC, "l:rdma0": Reason.ROCE_WITHOUT_PFC, "l:rdma1": PICKED}
        | {"r:if12": UR, "r:if13": TC, "r:if14": UR, "r:if15": TC, "r:if16": PICKED},
    ),
    "RoCE without PFC under the warn policy: used, with a warning": Case(
        (ETH1, nic("rdma0", 5, "10.0.3.1/24", rdma=RdmaKind.ROCE, pfc=False), RDMA1),
        SEED_REMOTE,
        [rdma("rdma0", "10.0.3.1", "if15", "10.0.3.2"), rdma("rdma1", "10.0.4.1", "if16", "10.0.4.2")],
        {"l:eth1": TC, "l:rdma0": PICKED, "l:rdma1": PICKED}
        | {"r:if12": UR, "r:if13": TC, "r:if14": UR, "r:if15": PICKED, "r:if16": PICKED},
        {"policy": SelectionPolicy(roce_without_pfc=PfcPolicy.WARN)},
        warnings=1,
    ),
    "RoCE without PFC competes as the RSS NIC it also is": Case(
        (ETH1, nic("rdma0", 5, "10.0.3.1/24", rdma=RdmaKind.ROCE, pfc=False)),
        SEED_REMOTE,
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2"), tcp("rdma0", "10.0.3.1", "if15", "10.0.3.2")],
        {"l:eth1": PICKED, "l:rdma0": PICKED}
        | {"r:if12": UR, "r:if13": PICKED, "r:if14": UR, "r:if15": PICKED, "r:if16": UR},
        warnings=1,
    ),
    "a server RoCE NIC without PFC (from its inventory) is excluded too": Case(
        (RDMA0, RDMA1),
        (nic("s3", 3, "10.0.3.2", rdma=RdmaKind.ROCE), nic("s4", 4, "10.0.4.2", rdma=RdmaKind.INFINIBAND)),
        [rdma("rdma1", "10.0.4.1", "s4", "10.0.4.2")],
        {"l:rdma0": TC, "l:rdma1": PICKED, "r:s3": Reason.ROCE_WITHOUT_PFC, "r:s4": PICKED},
    ),
    "IPv6": Case(
        (nic("eth1", 3, "fd00:1::1/64"), nic("eth2", 4, "fd00:2::1/64")),
        from_network_interface_info(
            [
                NetworkInterfaceInfo(13, RSS, 10 * G, "fd00:1::2"),
                NetworkInterfaceInfo(14, RSS, 10 * G, "fd00:2::2"),
            ]
        ),
        [tcp("eth1", "fd00:1::1", "if13", "fd00:1::2"), tcp("eth2", "fd00:2::1", "if14", "fd00:2::2")],
        {"l:eth1": PICKED, "l:eth2": PICKED, "r:if13": PICKED, "r:if14": PICKED},
    ),
    "dual stack: IPv6 first": Case(
        (nic("eth1", 3, "10.0.1.1/24", "fd00:1::1/64"),),
        (nic("if13", 13, "10.0.1.2", "fd00:1::2"),),
        [tcp("eth1", "fd00:1::1", "if13", "fd00:1::2")],
        {"l:eth1": PICKED, "r:if13": PICKED},
    ),
    "link-local addresses are not used": Case(
        (nic("eth1", 3, "fe80::1/64"), nic("eth2", 4, "169.254.0.1/16"), ETH0),
        (nic("if13", 13, "fe80::2"), IF["if12"]),
        [tcp("eth0", "10.0.0.1", "if12", "10.0.0.2")],
        {"l:eth1": Reason.NO_ADDRESS, "l:eth2": Reason.NO_ADDRESS, "l:eth0": PICKED}
        | {"r:if13": Reason.NO_ADDRESS, "r:if12": PICKED},
    ),
    "down, loopback and unaddressed interfaces are skipped": Case(
        (
            nic("lo", 1, "127.0.0.1/8", loopback=True),
            nic("eth3", 5, "10.0.1.3/24", up=False),
            nic("eth4", 6),
            ETH1,
        ),
        (nic("if13", 13, "10.0.1.2"), nic("if14", 14, "10.0.1.4", up=False), nic("if99", 99)),
        [tcp("eth1", "10.0.1.1", "if13", "10.0.1.2")],
        {"l:lo": Reason.LOOPBACK, "l:eth3": Reason.DOWN, "l:eth4": Reason.NO_ADDRESS, "l:eth1": PICKED}
        | {"r:if13": PICKED, "r:if14": Reason.DOWN, "r:if99": Reason.NO_ADDRESS},
    ),
    "local NICs are spread across the server's NICs": Case(
        (nic("a", 1, "10.2.0.1/16"), nic("b", 2, "10.2.0.2/16"), nic("c", 3, "10.2.0.3/16")),
        (nic("x", 1, "10.2.1.1"), nic("y", 2, "10.2.1.2")),
        [
            tcp("a", "10.2.0.1", "x", "10.2.1.1"),
            tcp("b", "10.2.0.2", "y", "10.2.1.2"),
            tcp("c", "10.2.0.3", "x", "10.2.1.1"),
        ],
        {"l:a": PICKED, "l:b": PICKED, "l:c": PICKED, "r:x": PICKED, "r:y": PICKED},
    ),
    "the constrained local NIC is paired first": Case(
        (nic("a", 1, "10.2.0.1/16"), nic("b", 2, "10.3.0.2/24")),
        (nic("x", 1, "10.2.1.1"), nic("y", 2, "10.3.0.1")),
        [tcp("a", "10.2.0.1", "x", "10.2.1.1"), tcp("b", "10.3.0.2", "y", "10.3.0.1")],
        {"l:a": PICKED, "l:b": PICKED, "r:x": PICKED, "r:y": PICKED},
        {"reachable": route_table([Route("10.0.0.0/8", "a")])},
    ),
    "more server NICs than local ones: the rest are not paired": Case(
        (nic("a", 1, "10.2.0.1/16"),),
        (nic("x", 1, "10.2.1.1"), nic("y", 2, "10.2.1.2")),
        [tcp("a", "10.2.0.1", "x", "10.2.1.1")],
        {"l:a": PICKED, "r:x": PICKED, "r:y": Reason.NOT_PAIRED},
    ),
    "a faster server NIC reached only from a slower local one": Case(
        (nic("a", 1, "10.2.0.1/24"), nic("b", 2, "10.3.0.1/24", speed=1 * G)),
        (nic("x", 1, "10.2.0.2"), nic("y", 2, "10.3.0.2", speed=25 * G)),
        [tcp("a", "10.2.0.1", "x", "10.2.0.2")],
        {"l:a": PICKED, "l:b": SC, "r:x": PICKED, "r:y": SC},
    ),
    "nothing on the server": Case((ETH1,), (), [], {"l:eth1": UR}),
}


def run(case: Case) -> ChannelPlan:
    return select_channels(case.local, case.remote, **case.options)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_scenario(case: Case) -> None:
    plan = run(case)
    got = [
        (c.local_name, c.source_address, c.remote_name, c.remote_address, c.transport, c.connections)
        for c in plan.channels
    ]
    assert got == case.channels
    reasons = {f"{d.side.value[0]}:{d.name}": d.reason for d in plan.decisions}
    assert reasons == case.reasons
    assert len(plan.decisions) == len(case.local) + len(case.remote)
    assert len(plan.warnings) == case.warnings
    for d in plan.decisions:
        assert d.text
        assert d.picked == (d.connections > 0)
    json.dumps(plan.to_dict())


def test_seed_plan_reads_well() -> None:
    plan = select_channels(SEED_LOCAL, SEED_REMOTE, server="hv02")
    assert plan.nic_class is NicClass.RDMA
    assert plan.transport is Transport.RDMA
    assert plan.connections == 4
    eth1 = plan.decision(Side.LOCAL, "eth1")
    assert eth1.text == "RSS interface; RDMA interfaces are in use"
    assert eth1.nic_class is NicClass.RSS
    picked = plan.decision(Side.LOCAL, "rdma0")
    assert picked.text == "RDMA 10 Gb/s: 2 connections from 10.0.3.1 to 10.0.3.2 (if15) over RDMA"
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["transport"] == "rdma"
    assert data["channels"][0] == {
        "local_name": "rdma0",
        "local_index": 5,
        "source_address": "10.0.3.1",
        "remote_name": "if15",
        "remote_index": 15,
        "remote_address": "10.0.3.2",
        "transport": "rdma",
        "class": "rdma",
        "connections": 2,
        "local_speed_bps": 10 * G,
        "remote_speed_bps": 10 * G,
        "speed_bps": 10 * G,
    }
    assert data["decisions"][0]["reason"] == "type_class"
    assert data["decisions"][0]["picked"] is False


def test_speed_and_cap_texts() -> None:
    plan = run(CASES["mixed 10 Gb and 1 Gb: only the 10 Gb; unknown speed ranks below 1 Gb"])
    assert plan.decision(Side.LOCAL, "eth0").text == "1 Gb/s; RSS interfaces of 10 Gb/s are in use"
    assert plan.decision(Side.LOCAL, "eth9").text == "unknown speed; RSS interfaces of 10 Gb/s are in use"
    capped = run(CASES["a cap below the number of NICs leaves the last ones out"])
    assert "limit of 2 channels" in capped.decision(Side.LOCAL, "p2").text
    spread = run(CASES["32-channel cap: ten RSS NICs spread 4, 4, 3, ..."])
    assert spread.connections == 32
    assert "3 connections (of 4: session limit 32)" in spread.decision(Side.LOCAL, "eth9").text


def test_roce_without_pfc_decisions_carry_warnings() -> None:
    excluded = run(CASES["RoCE without PFC is excluded from RDMA, iWARP kept"])
    d = excluded.decision(Side.LOCAL, "rdma0")
    assert "PFC unknown" in d.text
    assert d.warnings == ("RoCE without PFC (PFC unknown): RDMA not used",)
    assert d.nic_class is NicClass.RSS
    assert excluded.warnings == ()  # it is not used, so the plan has nothing to warn about
    warned = run(CASES["RoCE without PFC under the warn policy: used, with a warning"])
    assert warned.decision(Side.LOCAL, "rdma0").nic_class is NicClass.RDMA
    assert warned.warnings == (
        "local rdma0: RoCE without PFC (PFC off) is used for RDMA: expect losses under congestion",
    )
    assert warned.decision(Side.LOCAL, "rdma1").warnings == ()  # iWARP needs no PFC


def test_migration_priority_is_reported() -> None:
    plan = run(CASES["migration: the priority-1 network only"])
    assert plan.migration_priority == 1
    assert (
        plan.decision(Side.LOCAL, "eth1").text == "in a migration network of priority 2; priority 1 is in use"
    )
    assert plan.decision(Side.LOCAL, "eth0").text == "not in a migration network (10.0.2.0/24, 10.0.1.0/24)"
    assert run(CASES["migration: falls back to priority 2 when priority 1 is down"]).migration_priority == 2
    assert run(CASES["migration over any network"]).migration_priority is None


# -- conversions -------------------------------------------------------------------------------


def test_from_network_interface_info_groups_addresses_by_ifindex() -> None:
    wire = encode_interfaces(
        [
            NetworkInterfaceInfo(7, RSS | RDMA, 25 * G, "10.0.0.2"),
            NetworkInterfaceInfo(3, 0, 0, "192.168.1.2"),
            NetworkInterfaceInfo(7, RSS | RDMA, 25 * G, "FD00::2"),
            NetworkInterfaceInfo(7, RSS | RDMA, 25 * G, "10.0.0.2"),
        ]
    )
    nics = from_network_interface_info(decode_interfaces(wire))
    assert [n.name for n in nics] == ["if3", "if7"]
    plain, fast = nics
    assert plain == Nic("if3", 3, (NicAddress("192.168.1.2"),))
    assert fast.addresses == (NicAddress("10.0.0.2"), NicAddress("fd00::2"))
    assert (fast.speed_bps, fast.rss_capable, fast.rx_queues, fast.rdma_kind) == (
        25 * G,
        True,
        None,
        RdmaKind.UNKNOWN,
    )
    assert not fast.roce_without_pfc  # a server's RDMA of unknown kind is taken at its word


def host_interface(**changes: object) -> Interface:
    base: dict[str, object] = {
        "name": "eth1",
        "ifindex": 3,
        "mtu": 9000,
        "oper_state": "up",
        "admin_up": True,
        "addresses": [
            Address(family=4, address="10.0.1.1", prefix_len=24),
            Address(family=6, address="fe80::1", prefix_len=64, scope="link"),
        ],
        "speed_bps": 25 * G,
        "rx_queues": 16,
        "rss_capable": True,
        "rdma_kind": HostRdmaKind.ROCE,
        "pfc_enabled": True,
    }
    base.update(changes)
    return Interface.model_validate(base)


def test_nic_from_inventory() -> None:
    n = nic_from_inventory(host_interface().model_dump())
    assert n == Nic(
        "eth1",
        3,
        (NicAddress("10.0.1.1", 24), NicAddress("fe80::1", 64, "link")),
        25 * G,
        True,
        16,
        RdmaKind.ROCE,
        True,
    )
    assert n.usable_addresses == (NicAddress("10.0.1.1", 24),)
    # The same as msgpack would carry it (enums as strings).
    assert nic_from_inventory(json.loads(host_interface().model_dump_json())) == n
    assert not nic_from_inventory(host_interface(oper_state="down").model_dump()).up
    assert nic_from_inventory(host_interface(oper_state="unknown").model_dump()).up
    assert not nic_from_inventory(host_interface(oper_state="unknown", admin_up=False).model_dump()).up
    single = host_interface(rx_queues=1, rdma_kind=None, speed_bps=None)
    assert not nic_from_inventory(single.model_dump()).rss
    overridden = host_interface(rx_queues=1, overridden=["rss_capable"])
    assert nic_from_inventory(overridden.model_dump()).rss  # the operator's word stands
    with pytest.raises(ValueError, match="ifindex"):
        nic_from_inventory({**host_interface().model_dump(), "ifindex": "3"})


def test_inputs_validate_themselves() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        NicAddress("10.0.0.256")
    with pytest.raises(ValueError, match="prefix length"):
        NicAddress("10.0.0.1", 33)
    assert NicAddress("FD00:0::1").address == "fd00::1"
    with pytest.raises(ValueError, match="speed"):
        Nic("eth0", 1, speed_bps=0)
    with pytest.raises(ValueError, match="names no interface"):
        Constraint("hv02", ())
    with pytest.raises(ValueError, match="max_channels"):
        SelectionPolicy(max_channels=0)
    assert MigrationNetwork("192.168.10.7/24").subnet == "192.168.10.0/24"
    assert MigrationNetwork("192.168.10.7").subnet == "192.168.10.7/32"
    with pytest.raises(ValueError, match="same name"):
        select_channels([ETH1, nic("eth1", 9)], [])
    with pytest.raises(ValueError, match="same index"):
        select_channels([], [nic("x", 1), nic("y", 1)])


def test_reachability_helpers() -> None:
    eth = nic("eth1", 3, "10.0.1.1/24", "fd00:1::1/64", "fe80::1/64")
    assert same_subnet(eth, "10.0.1.200")
    assert not same_subnet(eth, "10.0.2.1")
    assert same_subnet(eth, "fd00:1::ffff")
    assert not same_subnet(eth, "fe80::2")  # link-local is not a subnet anyone shares
    routes = route_table([Route("0.0.0.0/0", 3), Route("fd00:9::/64", "eth9")])
    assert routes(eth, "8.8.8.8")
    assert not routes(eth, "fd00:9::1")  # that route leaves through another interface
    assert routes(eth, "fd00:1::7")
    assert not routes(nic("eth2", 4, "fd00:1::2/64"), "8.8.8.8")  # no IPv4 source to send from


# -- spreading I/O -------------------------------------------------------------------------------


def test_connection_speeds_and_weights() -> None:
    plan = run(CASES["a configured cap is spread evenly"])
    assert connection_speeds(plan.channels) == (10 * G // 3,) * 6
    mixed = [10 * G, 10 * G, 25 * G, None]
    assert speed_weights(mixed) == (2, 2, 5, 2)
    assert speed_weights([None, None]) == (1, 1)
    assert speed_weights([]) == ()


def test_split_by_weight() -> None:
    mib = 1 << 20
    assert split_by_weight(10 * mib, [1, 1], unit=mib) == (5 * mib, 5 * mib)
    assert split_by_weight(10 * mib + 5, [2, 2, 5], unit=mib) == (2 * mib, 2 * mib, 6 * mib + 5)
    assert split_by_weight(7, [1, 0, 1]) == (4, 0, 3)
    assert split_by_weight(0, [3]) == (0,)
    with pytest.raises(ValueError, match="not all zero"):
        split_by_weight(10, [0, 0])
    with pytest.raises(ValueError, match="unit 0"):
        split_by_weight(10, [1], unit=0)


@given(
    st.integers(0, 2**40),
    st.lists(st.integers(0, 100), min_size=1, max_size=40).filter(any),
    st.integers(1, 8 << 20),
)
def test_split_by_weight_adds_up_and_follows_the_weights(total: int, weights: list[int], unit: int) -> None:
    shares = split_by_weight(total, weights, unit)
    assert sum(shares) == total
    units = total // unit
    whole = sum(weights)
    heaviest = min(range(len(weights)), key=lambda i: (-weights[i], i))
    for i, (share, w) in enumerate(zip(shares, weights, strict=True)):
        body = share - (total % unit if i == heaviest else 0)
        assert body % unit == 0
        assert abs(body // unit * whole - units * w) < whole  # within one unit of the exact share


# -- properties ----------------------------------------------------------------------------------

V4_NETS = ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.1.0.0/16"]
V6_NETS = ["fd00:0::/64", "fd00:1::/64"]
SPEEDS = st.sampled_from([None, 1 * G, 10 * G, 25 * G])


@st.composite
def addresses(draw: st.DrawFn, *, with_prefix: bool) -> NicAddress:
    kind = draw(st.sampled_from(["v4", "v4", "v4", "v6", "v6", "odd"]))
    if kind == "odd":
        text = draw(st.sampled_from(["fe80::5/64", "169.254.3.3/16", "127.0.0.1/8", "192.168.77.1/24"]))
        return addr(text if with_prefix else text.split("/")[0])
    net = ipaddress.ip_network(draw(st.sampled_from(V4_NETS if kind == "v4" else V6_NETS)))
    host = net.network_address + draw(st.integers(1, 250))
    return NicAddress(str(host), net.prefixlen if with_prefix else None)


@st.composite
def nics(draw: st.DrawFn, *, remote: bool) -> list[Nic]:
    count = draw(st.integers(0, 7))
    out = []
    for i in range(count):
        rdma_kind = draw(st.none() | st.sampled_from(RdmaKind))
        out.append(
            Nic(
                name=f"{'r' if remote else 'l'}{i}",
                index=i + draw(st.integers(0, 1)) * 100,
                addresses=tuple(
                    draw(
                        st.lists(
                            addresses(with_prefix=not remote),
                            min_size=draw(st.sampled_from([0, 1, 1, 1])),
                            max_size=3,
                        )
                    )
                ),
                speed_bps=draw(SPEEDS),
                rss_capable=draw(st.booleans()),
                rx_queues=draw(st.sampled_from([None, 0, 1, 2, 8])),
                rdma_kind=rdma_kind,
                pfc_enabled=draw(st.none() | st.booleans()),
                up=draw(st.sampled_from([True] * 7 + [False])),
                loopback=draw(st.sampled_from([False] * 11 + [True])),
            )
        )
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Nic], list[Nic], dict[str, object]]:
    local = draw(nics(remote=False))
    remote = draw(nics(remote=True))
    options: dict[str, object] = {
        "server": "hv02",
        "policy": SelectionPolicy(
            max_channels=draw(st.integers(1, 12) | st.just(32)),
            rdma_connections=draw(st.integers(1, 8)),
            rss_connections=draw(st.integers(1, 8)),
            plain_connections=draw(st.integers(1, 3)),
            roce_without_pfc=draw(st.sampled_from(PfcPolicy)),
        ),
        "purpose": draw(st.sampled_from(Purpose)),
    }
    if local and draw(st.booleans()):
        named = draw(st.lists(st.sampled_from(local), min_size=1, max_size=3))
        items = tuple(n.name if draw(st.booleans()) else n.index for n in named)
        options["constraints"] = [Constraint(draw(st.sampled_from(["hv02", "HV02", "hv03"])), items)]
    if draw(st.booleans()):
        networks = draw(
            st.lists(
                st.builds(MigrationNetwork, st.sampled_from(V4_NETS + V6_NETS), st.integers(0, 2)), max_size=3
            )
        )
        options["migration"] = MigrationSettings(tuple(networks), draw(st.booleans()))
    if draw(st.booleans()):
        routes = [
            Route(draw(st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.0/8"])), n.index) for n in local[:2]
        ]
        options["reachable"] = route_table(routes)
    return local, remote, options


def plan_of(scenario: tuple[list[Nic], list[Nic], dict[str, object]]) -> ChannelPlan:
    local, remote, options = scenario
    return select_channels(local, remote, **options)  # type: ignore[arg-type]


@given(scenarios())
@settings(max_examples=300)
def test_properties(scenario: tuple[list[Nic], list[Nic], dict[str, object]]) -> None:
    local, remote, options = scenario
    plan = plan_of(scenario)
    policy = options["policy"]
    assert isinstance(policy, SelectionPolicy)
    reachable: Reachability = options.get("reachable", same_subnet)  # type: ignore[assignment]

    # Never more than the cap; every channel has at least one connection.
    assert plan.connections <= policy.max_channels
    assert all(c.connections >= 1 for c in plan.channels)

    # Never mixes classes or speeds; RDMA only as the RDMA class.
    assert len({c.nic_class for c in plan.channels}) <= 1
    assert len({c.transport for c in plan.channels}) <= 1
    assert len({c.local_speed_bps for c in plan.channels}) <= 1
    assert len({c.remote_speed_bps for c in plan.channels}) <= 1
    for c in plan.channels:
        assert c.nic_class is plan.nic_class
        assert (c.transport is Transport.RDMA) == (c.nic_class is NicClass.RDMA)
        assert c.connections <= policy.connections(c.nic_class)

    # Every input interface gets exactly one decision, picked exactly when it has a channel.
    keys = [(d.side, d.index) for d in plan.decisions]
    assert keys == [(Side.LOCAL, n.index) for n in local] + [(Side.REMOTE, n.index) for n in remote]
    picked_local = {c.local_name for c in plan.channels}
    picked_remote = {c.remote_name for c in plan.channels}
    assert len(picked_local) == len(plan.channels)  # one pair per local interface
    for d in plan.decisions:
        used = picked_local if d.side is Side.LOCAL else picked_remote
        assert d.picked == (d.name in used)
        assert (d.reason is None) == (d.connections > 0)
    assert sum(d.connections for d in plan.decisions if d.side is Side.REMOTE) == plan.connections

    # Each pair is real: the source is the local interface's, the remote address reachable.
    by_name = {n.name: n for n in local}
    remote_by_name = {n.name: n for n in remote}
    for c in plan.channels:
        lnic = by_name[c.local_name]
        assert c.source_address in {a.address for a in lnic.usable_addresses}
        assert c.remote_address in {a.address for a in remote_by_name[c.remote_name].usable_addresses}
        assert (
            ipaddress.ip_address(c.source_address).version == ipaddress.ip_address(c.remote_address).version
        )
        assert reachable(lnic, c.remote_address)
        assert lnic.up and not lnic.loopback

    # Deterministic: the same input gives the same plan, and so does any order of the input
    # (but for the order of the decisions, which follows the input).
    assert plan_of(scenario) == plan
    rng = random.Random(len(local) * 31 + len(remote))
    shuffled = plan_of((rng.sample(local, len(local)), rng.sample(remote, len(remote)), options))
    assert shuffled.channels == plan.channels
    assert set(shuffled.decisions) == set(plan.decisions)

    json.dumps(plan.to_dict())
