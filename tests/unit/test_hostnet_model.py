"""ferry_hostnet.model: speeds, operator overrides, inventory comparison, interface state."""

from __future__ import annotations

from typing import Any

import pytest
from ferry_hostnet.model import (
    Address,
    Interface,
    InterfaceOverride,
    Inventory,
    RdmaKind,
    RdmaPort,
    apply_overrides,
    format_speed,
    parse_speed,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.unit.strategies import inventories


def iface(name: str = "eth0", **fields: Any) -> Interface:
    values: dict[str, Any] = {
        "name": name,
        "ifindex": 2,
        "mtu": 1500,
        "oper_state": "up",
        "admin_up": True,
        "rss_capable": False,
    }
    values.update(fields)
    return Interface(**values)


# -- parse_speed / format_speed -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bps"),
    [
        ("10G", 10_000_000_000),
        ("25Gbit/s", 25_000_000_000),
        ("25 Gbit/s", 25_000_000_000),
        ("100M", 100_000_000),
        ("100m", 100_000_000),
        ("1.5G", 1_500_000_000),
        ("2.5G", 2_500_000_000),
        ("400Gbps", 400_000_000_000),
        ("40Gb/s", 40_000_000_000),
        ("1T", 1_000_000_000_000),
        ("10k", 10_000),
        ("100Mbit", 100_000_000),
        ("  10G  ", 10_000_000_000),
        ("1000", 1000),
        (1000, 1000),
        (1_000_000_000, 1_000_000_000),
        (25_000_000_000, 25_000_000_000),
    ],
)
def test_parse_speed(value: int | str, bps: int) -> None:
    assert parse_speed(value) == bps


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "0G",
        "0.0001",
        "-1",
        "-10G",
        "fast",
        "",
        "G",
        "10X",
        "10 G bit",
        "1,5G",
        "10GiB",
        0,
        -1,
        True,
        False,
    ],
)
def test_parse_speed_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="speed"):
        parse_speed(value)


@pytest.mark.parametrize(("value", "bps"), [("4.1G", 4_100_000_000), ("2.05G", 2_050_000_000)])
def test_parse_speed_decimal_fractions_are_exact(value: str, bps: int) -> None:
    assert parse_speed(value) == bps


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["", "k", "M", "G", "T"]))
def test_parse_speed_whole_numbers_with_units(number: int, unit: str) -> None:
    # Up to 10**18 bit/s, far beyond any link. parse_speed goes through a float, which is exact
    # here (number * 5**12 fits in 53 bits) but not for larger numbers or decimal fractions
    # (see test_parse_speed_decimal_fractions_are_exact).
    scale = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[unit]
    assert parse_speed(f"{number}{unit}") == number * scale
    assert parse_speed(f"{number} {unit}bit/s") == number * scale


@pytest.mark.parametrize(
    ("bps", "text"),
    [
        (None, "unknown"),
        (0, "0 b/s"),
        (999, "999 b/s"),
        (1000, "1 kb/s"),
        (100_000_000, "100 Mb/s"),
        (1_000_000_000, "1 Gb/s"),
        (1_500_000_000, "1.5 Gb/s"),
        (10_000_000_000, "10 Gb/s"),
        (25_000_000_000, "25 Gb/s"),
        (400_000_000_000, "400 Gb/s"),
        (1_600_000_000_000, "1.6 Tb/s"),
    ],
)
def test_format_speed(bps: int | None, text: str) -> None:
    assert format_speed(bps) == text


@pytest.mark.parametrize("text", ["10G", "25G", "100M", "1.5G", "400G", "1T", "10k"])
def test_format_parse_round_trip(text: str) -> None:
    bps = parse_speed(text)
    assert parse_speed(format_speed(bps).replace(" ", "")) == bps


# -- overrides ----------------------------------------------------------------------------------


def test_override_speed_accepts_text_and_numbers() -> None:
    assert InterfaceOverride(speed="25G").speed == 25_000_000_000
    assert InterfaceOverride(speed=10**9).speed == 10**9
    assert InterfaceOverride().speed is None


@pytest.mark.parametrize(
    "fields",
    [{"speed": "fast"}, {"speed": 0}, {"speed": 1.5}, {"speed": True}, {"rdma": "fc"}, {"mtu": 9000}],
)
def test_override_refuses(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        InterfaceOverride(**fields)


@pytest.mark.parametrize(
    ("override", "changed", "overridden"),
    [
        (InterfaceOverride(speed=25_000_000_000), {"speed_bps": 25_000_000_000}, ["speed_bps"]),
        (InterfaceOverride(rss=True), {"rss_capable": True}, ["rss_capable"]),
        (InterfaceOverride(rss=False), {"rss_capable": False}, ["rss_capable"]),
        (InterfaceOverride(rdma=RdmaKind.ROCE), {"rdma_kind": RdmaKind.ROCE}, ["rdma_kind"]),
        (InterfaceOverride(rdma="iwarp"), {"rdma_kind": RdmaKind.IWARP}, ["rdma_kind"]),
        (InterfaceOverride(rdma="none"), {"rdma_kind": None}, ["rdma_kind"]),
        (InterfaceOverride(pfc=True), {"pfc_enabled": True}, ["pfc_enabled"]),
        (InterfaceOverride(pfc=False), {"pfc_enabled": False}, ["pfc_enabled"]),
        (
            InterfaceOverride(speed=10**10, rss=True, rdma="none", pfc=False),
            {"speed_bps": 10**10, "rss_capable": True, "rdma_kind": None, "pfc_enabled": False},
            ["pfc_enabled", "rdma_kind", "rss_capable", "speed_bps"],
        ),
        (InterfaceOverride(), {}, []),
    ],
)
def test_apply_overrides(override: InterfaceOverride, changed: dict[str, Any], overridden: list[str]) -> None:
    before = iface(
        speed_bps=1_000_000_000,
        rss_capable=False,
        rdma=[RdmaPort(device="iw0", port=1, kind=RdmaKind.IWARP)],
        rdma_kind=RdmaKind.IWARP,
        pfc_enabled=None,
    )
    (after,) = apply_overrides([before], {"eth0": override})
    assert after.overridden == overridden
    for field, value in changed.items():
        assert getattr(after, field) == value
    untouched = set(Interface.model_fields) - set(changed) - {"overridden"}
    for field in untouched:
        assert getattr(after, field) == getattr(before, field), field
    # The kernel's RDMA ports stay listed even when the operator says "none".
    assert after.rdma == before.rdma


def test_interfaces_without_overrides_are_unchanged() -> None:
    eth0, eth1, lo = iface("eth0"), iface("eth1", ifindex=3), iface("lo", ifindex=1, loopback=True)
    result = apply_overrides(
        [lo, eth0, eth1], {"eth1": InterfaceOverride(speed="10G"), "eth9": InterfaceOverride(rss=True)}
    )
    assert [i.name for i in result] == ["lo", "eth0", "eth1"]
    assert result[0] is lo
    assert result[1] is eth0
    assert result[2].speed_bps == 10_000_000_000
    assert result[2].overridden == ["speed_bps"]
    assert eth1.speed_bps is None  # the input is not modified


def test_apply_overrides_merges_with_earlier_overrides() -> None:
    (once,) = apply_overrides([iface()], {"eth0": InterfaceOverride(speed=10**9)})
    (twice,) = apply_overrides([once], {"eth0": InterfaceOverride(pfc=True)})
    assert twice.overridden == ["pfc_enabled", "speed_bps"]
    assert (twice.speed_bps, twice.pfc_enabled) == (10**9, True)


def test_apply_overrides_empty() -> None:
    assert apply_overrides([], {"eth0": InterfaceOverride(rss=True)}) == []
    interfaces = [iface()]
    assert apply_overrides(interfaces, {}) == interfaces


# -- inventory and interface --------------------------------------------------------------------


def inventory(collected_at: float = 1.0, **changes: Any) -> Inventory:
    values: dict[str, Any] = {
        "host": "hv01",
        "labels": {"site": "dc1"},
        "interfaces": [iface(addresses=[Address(family=4, address="198.18.0.1", prefix_len=24)])],
        "collected_at": collected_at,
    }
    values.update(changes)
    return Inventory(**values)


def test_same_as_ignores_collection_time() -> None:
    assert inventory(1.0).same_as(inventory(2.0))
    assert inventory(1.0) != inventory(2.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"host": "hv02"},
        {"labels": {"site": "dc2"}},
        {"labels": {}},
        {"interfaces": []},
        {"interfaces": [iface(mtu=9000)]},
        {"interfaces": [iface(addresses=[Address(family=4, address="198.18.0.2", prefix_len=24)])]},
    ],
)
def test_same_as_sees_other_differences(changes: dict[str, Any]) -> None:
    assert not inventory(1.0).same_as(inventory(1.0, **changes))


def test_same_as_none() -> None:
    assert not inventory().same_as(None)


@given(inventories, st.floats(min_value=0, max_value=4e9))
def test_same_as_is_reflexive_across_times(inv: Inventory, when: float) -> None:
    assert inv.same_as(inv.model_copy(update={"collected_at": when}))


def test_inventory_interface_lookup() -> None:
    inv = inventory(interfaces=[iface("eth0"), iface("eth1", ifindex=3)])
    found = inv.interface("eth1")
    assert found is not None
    assert found.ifindex == 3
    assert inv.interface("eth9") is None


@pytest.mark.parametrize(
    ("oper_state", "admin_up", "is_up"),
    [
        ("up", True, True),
        ("up", False, True),
        ("unknown", True, True),  # e.g. tun devices and some virtual NICs
        ("unknown", False, False),
        ("down", True, False),
        ("down", False, False),
        ("dormant", True, False),
        ("lowerlayerdown", True, False),
        ("notpresent", True, False),
    ],
)
def test_interface_is_up(oper_state: str, admin_up: bool, is_up: bool) -> None:
    assert iface(oper_state=oper_state, admin_up=admin_up).is_up is is_up


def test_rdma_capable_follows_rdma_kind() -> None:
    assert not iface().rdma_capable
    assert iface(rdma_kind=RdmaKind.ROCE).rdma_capable


def test_address_interface() -> None:
    assert str(Address(family=4, address="198.18.0.1", prefix_len=24).interface.network) == "198.18.0.0/24"
    assert str(Address(family=6, address="2001:db8::1", prefix_len=64).interface.network) == "2001:db8::/64"


def test_models_are_frozen_and_ignore_unknown_fields() -> None:
    i = Interface.model_validate(
        {
            "name": "eth0",
            "ifindex": 2,
            "mtu": 1500,
            "oper_state": "up",
            "admin_up": True,
            "rss_capable": False,
            "from_the_future": 1,
        }
    )
    assert not hasattr(i, "from_the_future")
    with pytest.raises(ValidationError):
        i.mtu = 9000  # type: ignore[misc]
