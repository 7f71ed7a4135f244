"""What the smbserver advertises in FSCTL_QUERY_NETWORK_INTERFACE_INFO: the inventory's
interfaces (discovery's, or the kernel's), with operator overrides."""

from __future__ import annotations

from typing import Any

from ferry_hostnet import INVENTORY
from ferry_hostnet.model import Address, Interface, Inventory, RdmaKind
from ferry_runtime.bus import Request
from ferry_smbserver.advertise import Advertiser, local_addresses, normalize_address
from ferry_smbserver.settings import AdvertiseOptions, AdvertiseOverride
from hypothesis import given
from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo, decode_interfaces, encode_interfaces

from tests.unit.strategies import inventories

G = 1_000_000_000


def iface(name: str, ifindex: int, *addresses: tuple[str, str], **fields: Any) -> Interface:
    values: dict[str, Any] = {
        "name": name,
        "ifindex": ifindex,
        "mtu": 1500,
        "oper_state": "up",
        "admin_up": True,
        "rss_capable": False,
        "addresses": [
            Address(family=6 if ":" in a else 4, address=a, prefix_len=24, scope=scope)
            for a, scope in addresses
        ],
    }
    values.update(fields)
    return Interface(**values)


def inventory(*interfaces: Interface, host: str = "hv01") -> Inventory:
    return Inventory(host=host, interfaces=list(interfaces), collected_at=1.0)


HOST = inventory(
    iface("lo", 1, ("127.0.0.1", "host"), loopback=True, oper_state="unknown"),
    iface("eth0", 2, ("10.0.0.2", "global"), ("fe80::1", "link"), speed_bps=10 * G, rss_capable=True),
    iface(
        "rdma0", 3, ("10.1.0.2", "global"), ("fd00::2", "global"), speed_bps=100 * G, rdma_kind=RdmaKind.ROCE
    ),
    iface("eth9", 4, ("10.9.0.2", "global"), oper_state="down", speed_bps=G),
    iface("veth1", 5, ("10.5.0.2", "site")),  # no speed from the driver
)


def advertised(
    inv: Inventory, overrides: dict[str, AdvertiseOverride] | None = None, **options: Any
) -> list[Any]:
    entries = local_addresses(
        inv,
        overrides or {},
        include_loopback=options.get("include_loopback", False),
        default_speed=options.get("default_speed", G),
    )
    return [(a.interface, a.address, a.info()) for a in entries if a.advertised]


def test_up_interfaces_global_addresses_with_capabilities() -> None:
    assert advertised(HOST) == [
        ("eth0", "10.0.0.2", NetworkInterfaceInfo(2, InterfaceCapability.RSS, 10 * G, "10.0.0.2")),
        ("rdma0", "10.1.0.2", NetworkInterfaceInfo(3, InterfaceCapability.RDMA, 100 * G, "10.1.0.2")),
        ("rdma0", "fd00::2", NetworkInterfaceInfo(3, InterfaceCapability.RDMA, 100 * G, "fd00::2")),
        ("veth1", "10.5.0.2", NetworkInterfaceInfo(5, 0, G, "10.5.0.2")),
    ]


def test_every_address_is_known_for_channel_lookups() -> None:
    entries = {a.address: a for a in local_addresses(HOST, {}, include_loopback=False, default_speed=G)}
    assert entries["127.0.0.1"].interface == "lo" and not entries["127.0.0.1"].advertised
    assert entries["10.9.0.2"].interface == "eth9" and not entries["10.9.0.2"].advertised
    assert entries["fe80::1"].interface == "eth0" and not entries["fe80::1"].advertised


def test_overrides() -> None:
    overrides = {
        "eth0": AdvertiseOverride(speed="25G", rss=False, rdma=True),
        "rdma0": AdvertiseOverride(advertise=False),
        "veth1": AdvertiseOverride(rss=True),
    }
    assert advertised(HOST, overrides, default_speed=2 * G) == [
        ("eth0", "10.0.0.2", NetworkInterfaceInfo(2, InterfaceCapability.RDMA, 25 * G, "10.0.0.2")),
        ("veth1", "10.5.0.2", NetworkInterfaceInfo(5, InterfaceCapability.RSS, 2 * G, "10.5.0.2")),
    ]


def test_loopback_only_when_asked() -> None:
    names = [name for name, _, _ in advertised(HOST, include_loopback=True)]
    assert names[0] == "lo"


def test_normalize_address() -> None:
    assert normalize_address("::ffff:10.0.0.2") == "10.0.0.2"
    assert normalize_address("fe80::1%eth0") == "fe80::1"
    assert normalize_address("10.0.0.2") == "10.0.0.2"
    assert normalize_address("not-an-address") == "not-an-address"


@given(inventories)
def test_any_inventory_gives_an_encodable_answer(inv: Inventory) -> None:
    entries = [info for _, _, info in advertised(inv)]
    if entries:
        assert decode_interfaces(encode_interfaces(entries)) == entries


async def test_advertiser_follows_changes_and_looks_up_addresses() -> None:
    advertiser = Advertiser("hv01", AdvertiseOptions(), {}, bus=None)
    assert advertiser.interfaces() == [] and advertiser.source == "none"
    assert advertiser.apply(HOST, "discovery")
    assert advertiser.source == "discovery"
    assert [i.address for i in advertiser.interfaces()] == ["10.0.0.2", "10.1.0.2", "fd00::2", "10.5.0.2"]
    found = advertiser.lookup("::ffff:10.1.0.2")
    assert found is not None and found.interface == "rdma0" and found.rdma and found.speed_bps == 100 * G
    assert not advertiser.apply(HOST, "discovery")  # nothing new

    # A link goes down and an RDMA NIC appears: the next query sees it.
    changed = inventory(
        HOST.interfaces[0],
        HOST.interfaces[1].model_copy(update={"oper_state": "down"}),
        HOST.interfaces[2],
        iface("rdma1", 6, ("10.2.0.2", "global"), speed_bps=200 * G, rdma_kind=RdmaKind.IWARP),
    )
    await advertiser._on_changed(Request("ferry.inventory.changed.hv01", INVENTORY.encode(changed), {}))
    assert [(i.if_index, i.address) for i in advertiser.interfaces()] == [
        (3, "10.1.0.2"),
        (3, "fd00::2"),
        (6, "10.2.0.2"),
    ]
    assert advertiser.interfaces()[-1].capabilities == InterfaceCapability.RDMA

    # Another host's change is not ours; garbage is ignored.
    other = inventory(iface("x", 9, ("10.7.0.1", "global")), host="hv02")
    await advertiser._on_changed(Request("ferry.inventory.changed.hv02", INVENTORY.encode(other), {}))
    await advertiser._on_changed(Request("ferry.inventory.changed.hv01", b"\x00garbage", {}))
    assert len(advertiser.interfaces()) == 3


async def test_without_a_bus_the_kernel_is_read(monkeypatch: Any) -> None:
    advertiser = Advertiser("hv01", AdvertiseOptions(), {}, bus=None)

    async def kernel() -> Inventory:
        return HOST

    monkeypatch.setattr(advertiser, "read_kernel", kernel)
    await advertiser.refresh()
    assert advertiser.source == "kernel"
    assert len(advertiser.interfaces()) == 4


async def test_discovery_only_never_reads_the_kernel(monkeypatch: Any) -> None:
    advertiser = Advertiser("hv01", AdvertiseOptions(source="discovery"), {}, bus=None)

    async def kernel() -> Inventory:
        raise AssertionError("the kernel must not be read")

    monkeypatch.setattr(advertiser, "read_kernel", kernel)
    await advertiser.refresh()
    assert advertiser.source == "none" and advertiser.interfaces() == []
