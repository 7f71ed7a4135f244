"""Reading the interfaces from the kernel: rtnetlink (pyroute2), sysfs, and iproute2's ``dcb``.

What comes from where:

* netlink ``RTM_GETLINK``/``RTM_GETADDR``: name, index, MAC, MTU, operational and admin
  state, link kind, addresses with prefix length and scope;
* ``/sys/class/net/<if>/speed``: link speed in Mb/s as ethtool reports it (an error or -1
  means the driver does not know, and the inventory says unknown);
* ``/sys/class/net/<if>/queues/rx-*``: the receive queues in use (more than one: RSS);
* ``/sys/class/infiniband/<dev>``: RDMA devices, their kind (``node_type`` RNIC is iWARP;
  otherwise the port's ``link_layer`` says Ethernet, i.e. RoCE, or InfiniBand) and the
  netdevs they are bound to (``ports/<n>/gid_attrs/ndevs/*`` and ``<netdev>/device/infiniband``);
* ``dcb -j pfc show dev <if>`` (iproute2): the PFC state of RoCE interfaces; unknown when
  the tool or the driver's DCB support is missing.

The function is synchronous (netlink and sysfs reads are short); async callers use
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from .model import Address, Interface, RdmaKind, RdmaPort

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8

_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


@dataclass(frozen=True, slots=True)
class _Link:
    ifindex: int
    name: str
    mac: str | None
    mtu: int
    oper_state: str
    flags: int
    kind: str | None
    num_rx_queues: int


def _read_netlink() -> tuple[list[_Link], dict[int, list[Address]]]:
    links: list[_Link] = []
    addresses: dict[int, list[Address]] = {}
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            links.append(
                _Link(
                    ifindex=int(msg["index"]),
                    name=str(msg.get("ifname")),
                    mac=msg.get("address"),
                    mtu=int(msg.get("mtu") or 0),
                    oper_state=str(msg.get("operstate") or "UNKNOWN").lower(),
                    flags=int(msg["flags"]),
                    kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                    num_rx_queues=int(msg.get("num_rx_queues") or 1),
                )
            )
        for msg in ipr.get_addr():
            family = 4 if msg["family"] == 2 else 6 if msg["family"] == 10 else None
            if family is None:
                continue
            value = msg.get("local") or msg.get("address")
            if value is None:
                continue
            addresses.setdefault(int(msg["index"]), []).append(
                Address(
                    family=family,
                    address=str(value),
                    prefix_len=int(msg["prefixlen"]),
                    scope=_SCOPES.get(int(msg["scope"]), "global"),
                )
            )
    return links, addresses


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def link_speed_bps(sysfs: Path, name: str) -> int | None:
    mbps = _read_int(sysfs / "class/net" / name / "speed")
    if mbps is None or mbps <= 0 or mbps == 0xFFFFFFFF:
        return None
    return mbps * 1_000_000


def rx_queue_count(sysfs: Path, name: str) -> int | None:
    queues = sysfs / "class/net" / name / "queues"
    try:
        return sum(1 for entry in queues.iterdir() if entry.name.startswith("rx-"))
    except OSError:
        return None


def _rdma_kind(devdir: Path, port: Path) -> RdmaKind:
    node_type = (devdir / "node_type").read_text().strip() if (devdir / "node_type").exists() else ""
    if "RNIC" in node_type:  # "4: RNIC"
        return RdmaKind.IWARP
    link_layer = (port / "link_layer").read_text().strip() if (port / "link_layer").exists() else ""
    return RdmaKind.ROCE if link_layer == "Ethernet" else RdmaKind.INFINIBAND


def rdma_bindings(sysfs: Path) -> dict[str, list[RdmaPort]]:
    """netdev name -> the RDMA device ports bound to it."""
    result: dict[str, list[RdmaPort]] = {}
    root = sysfs / "class/infiniband"
    try:
        devices = sorted(root.iterdir())
    except OSError:
        return result
    for devdir in devices:
        try:
            ports = sorted((devdir / "ports").iterdir(), key=lambda p: int(p.name))
        except (OSError, ValueError):
            continue
        for port in ports:
            kind = _rdma_kind(devdir, port)
            netdevs: set[str] = set()
            ndevs = port / "gid_attrs" / "ndevs"
            try:
                for entry in ndevs.iterdir():
                    try:
                        name = entry.read_text().strip()
                    except OSError:  # unpopulated GID slots read as EINVAL
                        continue
                    if name:
                        netdevs.add(name)
            except OSError:
                pass
            for name in netdevs:
                result.setdefault(name, []).append(
                    RdmaPort(device=devdir.name, port=int(port.name), kind=kind)
                )
    # netdevs whose own device has an RDMA device (IPoIB, iWARP NICs without GID netdevs).
    try:
        netdevs_dir = sorted((sysfs / "class/net").iterdir())
    except OSError:
        netdevs_dir = []
    for netdev in netdevs_dir:
        if netdev.name in result:
            continue
        try:
            ibdevs = sorted((netdev / "device" / "infiniband").iterdir())
        except OSError:
            continue
        port_no = (_read_int(netdev / "dev_port") or 0) + 1
        for ibdev in ibdevs:
            devdir = root / ibdev.name
            port = devdir / "ports" / str(port_no)
            if not port.exists():
                continue
            kind = _rdma_kind(devdir, port)
            result.setdefault(netdev.name, []).append(RdmaPort(device=ibdev.name, port=port_no, kind=kind))
    return result


def pfc_state(name: str, dcb: str | None = None) -> bool | None:
    """PFC enabled on any priority, from ``dcb -j pfc show dev NAME``; None when unknown."""
    tool = dcb or shutil.which("dcb")
    if tool is None:
        return None
    try:
        proc = subprocess.run(
            [tool, "-j", "pfc", "show", "dev", name, "prio-pfc"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return parse_dcb_pfc(proc.stdout)


def parse_dcb_pfc(text: str) -> bool | None:
    """``{"prio_pfc": {"0": false, ..., "3": true}}`` (or a list of such entries) -> any on?"""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    prio = data.get("prio_pfc") if isinstance(data, dict) else None
    values: Iterable[Any]
    if isinstance(prio, dict):
        values = prio.values()
    elif isinstance(prio, list):
        values = [v.get("enabled", v.get("pfc")) if isinstance(v, dict) else v for v in prio]
    else:
        return None
    flags = [bool(v) for v in values if isinstance(v, bool)]
    if not flags:
        return None
    return any(flags)


def read_interfaces(sysfs: Path = Path("/sys"), *, include_loopback: bool = False) -> list[Interface]:
    """Every interface of the current network namespace, ordered by ifindex."""
    links, addresses = _read_netlink()
    rdma = rdma_bindings(sysfs)
    result = []
    for link in sorted(links, key=lambda lk: lk.ifindex):
        loopback = bool(link.flags & IFF_LOOPBACK)
        if loopback and not include_loopback:
            continue
        queues = rx_queue_count(sysfs, link.name)
        rx_queues = queues if queues else link.num_rx_queues
        ports = rdma.get(link.name, [])
        kinds = {p.kind for p in ports}
        # One netdev with ports of several kinds does not happen on real hardware; prefer RoCE's
        # stricter policy (PFC) if it ever did.
        rdma_kind = next(
            (k for k in (RdmaKind.ROCE, RdmaKind.IWARP, RdmaKind.INFINIBAND) if k in kinds), None
        )
        pfc = pfc_state(link.name) if rdma_kind is RdmaKind.ROCE else None
        result.append(
            Interface(
                name=link.name,
                ifindex=link.ifindex,
                mac=link.mac if link.mac and link.mac != "00:00:00:00:00:00" else None,
                mtu=link.mtu,
                oper_state=link.oper_state,
                admin_up=bool(link.flags & IFF_UP),
                kind=link.kind,
                loopback=loopback,
                addresses=addresses.get(link.ifindex, []),
                speed_bps=link_speed_bps(sysfs, link.name),
                rx_queues=rx_queues,
                rss_capable=rx_queues > 1,
                rdma=ports,
                rdma_kind=rdma_kind,
                pfc_enabled=pfc,
            )
        )
    return result
