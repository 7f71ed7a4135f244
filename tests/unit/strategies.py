"""Hypothesis strategies for the hostnet inventory model."""

from __future__ import annotations

from ferry_hostnet.model import Address, Interface, Inventory, RdmaKind, RdmaPort
from hypothesis import strategies as st

# msgpack carries integers in [-2**63, 2**64 - 1]; keep to what a kernel would report.
COUNTS = st.integers(min_value=0, max_value=2**31 - 1)
SPEEDS = st.none() | st.integers(min_value=1, max_value=2**62)
NAMES = st.text(min_size=1, max_size=15)

addresses = st.one_of(
    st.builds(
        Address,
        family=st.just(4),
        address=st.ip_addresses(v=4).map(str),
        prefix_len=st.integers(0, 32),
        scope=st.sampled_from(["global", "site", "link", "host", "nowhere"]),
    ),
    st.builds(
        Address,
        family=st.just(6),
        address=st.ip_addresses(v=6).map(str),
        prefix_len=st.integers(0, 128),
        scope=st.sampled_from(["global", "site", "link", "host", "nowhere"]),
    ),
)

rdma_ports = st.builds(
    RdmaPort,
    device=NAMES,
    port=st.integers(1, 255),
    kind=st.sampled_from(RdmaKind),
)

interfaces = st.builds(
    Interface,
    name=NAMES,
    ifindex=st.integers(1, 2**31 - 1),
    mac=st.none() | st.from_regex(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z"),
    mtu=st.integers(68, 65535),
    oper_state=st.sampled_from(["up", "down", "unknown", "dormant", "lowerlayerdown"]),
    admin_up=st.booleans(),
    kind=st.none() | st.sampled_from(["veth", "bridge", "bond", "vlan"]),
    loopback=st.booleans(),
    addresses=st.lists(addresses, max_size=3),
    speed_bps=SPEEDS,
    rx_queues=COUNTS,
    rss_capable=st.booleans(),
    rdma=st.lists(rdma_ports, max_size=2),
    rdma_kind=st.none() | st.sampled_from(RdmaKind),
    pfc_enabled=st.none() | st.booleans(),
    overridden=st.lists(
        st.sampled_from(["speed_bps", "rss_capable", "rdma_kind", "pfc_enabled"]), unique=True
    ),
)

inventories = st.builds(
    Inventory,
    host=NAMES,
    labels=st.dictionaries(st.sampled_from(["site", "row", "rack"]), st.text(max_size=10)),
    interfaces=st.lists(interfaces, max_size=4),
    collected_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
