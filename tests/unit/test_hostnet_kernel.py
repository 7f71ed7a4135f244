"""ferry_hostnet.kernel: sysfs parsing against fake trees laid out like Linux's, dcb's JSON, netlink."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest
from ferry_hostnet.kernel import (
    link_speed_bps,
    parse_dcb_pfc,
    pfc_state,
    rdma_bindings,
    read_interfaces,
    rx_queue_count,
)
from ferry_hostnet.model import RdmaKind, RdmaPort

EINVAL = "<EINVAL>"
"""Content of a sysfs attribute that exists but fails to read (as unpopulated GID slots do)."""


@pytest.fixture
def einval(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """Paths whose read_text fails with EINVAL, like sysfs attributes the driver refuses."""
    failing: set[Path] = set()
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self in failing:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    return failing


class FakeSysfs:
    """A /sys tree in a temporary folder: devices under devices/, class/* as relative symlinks."""

    def __init__(self, root: Path, einval: set[Path]) -> None:
        self.root = root
        self.einval = einval
        (root / "class/net").mkdir(parents=True)

    def _write(self, path: Path, content: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if content == EINVAL else content)
        if content == EINVAL:
            self.einval.add(path)

    @staticmethod
    def _link(link: Path, target: Path) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))

    def pci(self, slot: str) -> Path:
        path = self.root / "devices/pci0000:00" / slot
        path.mkdir(parents=True, exist_ok=True)
        return path

    def netdev(
        self,
        name: str,
        *,
        pci: str | None = None,
        speed: str | None = None,
        dev_port: int | None = 0,
        rx_queues: int = 1,
        tx_queues: int = 1,
    ) -> Path:
        if pci is None:
            netdir = self.root / "devices/virtual/net" / name
            netdir.mkdir(parents=True)
        else:
            device = self.pci(pci)
            netdir = device / "net" / name
            netdir.mkdir(parents=True)
            self._link(netdir / "device", device)
        for i in range(rx_queues):
            (netdir / "queues" / f"rx-{i}").mkdir(parents=True)
        for i in range(tx_queues):
            (netdir / "queues" / f"tx-{i}").mkdir(parents=True)
        if speed is not None:
            self._write(netdir / "speed", speed)
        if dev_port is not None:
            self._write(netdir / "dev_port", f"{dev_port}\n")
        self._link(self.root / "class/net" / name, netdir)
        return netdir

    def rdma(self, name: str, *, pci: str, node_type: str, ports: dict[int, tuple[str, list[str]]]) -> Path:
        """An RDMA device; ``ports`` maps port number to (link_layer, GID ndevs slot contents)."""
        devdir = self.pci(pci) / "infiniband" / name
        self._write(devdir / "node_type", f"{node_type}\n")
        for number, (link_layer, ndevs) in ports.items():
            port = devdir / "ports" / str(number)
            self._write(port / "link_layer", f"{link_layer}\n")
            (port / "gid_attrs/ndevs").mkdir(parents=True)
            for slot, content in enumerate(ndevs):
                self._write(port / "gid_attrs/ndevs" / str(slot), content)
        self._link(self.root / "class/infiniband" / name, devdir)
        return devdir


@pytest.fixture
def sysfs(tmp_path: Path, einval: set[Path]) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys", einval)


# -- link speed and receive queues --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "bps"),
    [
        ("10000\n", 10_000_000_000),
        ("25000\n", 25_000_000_000),
        ("100", 100_000_000),
        ("400000\n", 400_000_000_000),
        ("-1\n", None),  # SPEED_UNKNOWN
        ("0\n", None),
        ("4294967295\n", None),  # SPEED_UNKNOWN read as unsigned by old kernels
        ("\n", None),
        ("fast\n", None),
        (EINVAL, None),  # a down link: the driver refuses to answer
    ],
)
def test_link_speed_bps(sysfs: FakeSysfs, content: str, bps: int | None) -> None:
    sysfs.netdev("eth0", pci="0000:00:01.0", speed=content)
    assert link_speed_bps(sysfs.root, "eth0") == bps


def test_link_speed_bps_without_speed_file(sysfs: FakeSysfs) -> None:
    sysfs.netdev("veth0", speed=None)
    assert link_speed_bps(sysfs.root, "veth0") is None
    assert link_speed_bps(sysfs.root, "absent0") is None


def test_link_speed_bps_speed_is_a_directory(sysfs: FakeSysfs) -> None:
    netdir = sysfs.netdev("eth0", pci="0000:00:01.0")
    (netdir / "speed").mkdir()
    assert link_speed_bps(sysfs.root, "eth0") is None


@pytest.mark.parametrize(("rx", "tx", "count"), [(4, 4, 4), (1, 8, 1), (16, 1, 16), (0, 2, 0)])
def test_rx_queue_count(sysfs: FakeSysfs, rx: int, tx: int, count: int) -> None:
    sysfs.netdev("eth0", pci="0000:00:01.0", rx_queues=rx, tx_queues=tx)
    assert rx_queue_count(sysfs.root, "eth0") == count


def test_rx_queue_count_without_queues(sysfs: FakeSysfs) -> None:
    assert rx_queue_count(sysfs.root, "absent0") is None
    sysfs.netdev("eth0", rx_queues=0, tx_queues=0)  # no queues/ folder at all
    assert rx_queue_count(sysfs.root, "eth0") is None


# -- RDMA bindings ------------------------------------------------------------------------------


def build_roce(sysfs: FakeSysfs) -> None:
    """A mlx5 RoCE NIC: eth2 and its VLAN in the GID table, empty and unpopulated slots."""
    sysfs.netdev("eth2", pci="0000:00:02.0", speed="25000\n", rx_queues=8)
    sysfs.netdev("eth2.100")  # a VLAN: a virtual device, bound through the GID table only
    sysfs.rdma(
        "mlx5_0",
        pci="0000:00:02.0",
        node_type="1: CA",
        ports={1: ("Ethernet", ["eth2\n", "eth2\n", EINVAL, "", "eth2.100\n", "eth2.100\n", EINVAL])},
    )


def build_iwarp(sysfs: FakeSysfs) -> None:
    """A two-port iWARP RNIC (cxgb4-like): no GID netdevs, bound through <netdev>/device/infiniband."""
    sysfs.netdev("eth3", pci="0000:00:03.0", dev_port=0)
    sysfs.netdev("eth4", pci="0000:00:03.0", dev_port=1)
    sysfs.rdma(
        "iw0",
        pci="0000:00:03.0",
        node_type="4: RNIC",
        ports={1: ("Ethernet", [EINVAL, EINVAL]), 2: ("Ethernet", [EINVAL])},
    )


def build_infiniband(sysfs: FakeSysfs) -> None:
    """An InfiniBand HCA port with its IPoIB netdev ib0."""
    sysfs.netdev("ib0", pci="0000:00:04.0", dev_port=0)
    sysfs.rdma("mlx5_1", pci="0000:00:04.0", node_type="1: CA", ports={1: ("InfiniBand", [EINVAL])})


ROCE = RdmaPort(device="mlx5_0", port=1, kind=RdmaKind.ROCE)


def test_rdma_bindings_roce(sysfs: FakeSysfs) -> None:
    build_roce(sysfs)
    assert rdma_bindings(sysfs.root) == {"eth2": [ROCE], "eth2.100": [ROCE]}


def test_rdma_bindings_iwarp(sysfs: FakeSysfs) -> None:
    build_iwarp(sysfs)
    assert rdma_bindings(sysfs.root) == {
        "eth3": [RdmaPort(device="iw0", port=1, kind=RdmaKind.IWARP)],
        "eth4": [RdmaPort(device="iw0", port=2, kind=RdmaKind.IWARP)],
    }


def test_rdma_bindings_iwarp_without_dev_port(sysfs: FakeSysfs) -> None:
    sysfs.netdev("eth3", pci="0000:00:03.0", dev_port=None)
    sysfs.rdma("iw0", pci="0000:00:03.0", node_type="4: RNIC", ports={1: ("Ethernet", [])})
    assert rdma_bindings(sysfs.root) == {"eth3": [RdmaPort(device="iw0", port=1, kind=RdmaKind.IWARP)]}


def test_rdma_bindings_iwarp_in_gid_table(sysfs: FakeSysfs) -> None:
    """An RNIC that does list its netdev in the GID table is still iWARP, whatever link_layer says."""
    sysfs.netdev("eth3", pci="0000:00:03.0")
    sysfs.rdma("iw0", pci="0000:00:03.0", node_type="4: RNIC", ports={1: ("Ethernet", ["eth3\n"])})
    assert rdma_bindings(sysfs.root) == {"eth3": [RdmaPort(device="iw0", port=1, kind=RdmaKind.IWARP)]}


def test_rdma_bindings_infiniband(sysfs: FakeSysfs) -> None:
    build_infiniband(sysfs)
    assert rdma_bindings(sysfs.root) == {"ib0": [RdmaPort(device="mlx5_1", port=1, kind=RdmaKind.INFINIBAND)]}


def test_rdma_bindings_whole_host(sysfs: FakeSysfs) -> None:
    sysfs.netdev("lo")
    sysfs.netdev("eth0", pci="0000:00:01.0", speed="1000\n")  # a plain NIC
    build_roce(sysfs)
    build_iwarp(sysfs)
    build_infiniband(sysfs)
    bindings = rdma_bindings(sysfs.root)
    assert bindings == {
        "eth2": [ROCE],
        "eth2.100": [ROCE],
        "eth3": [RdmaPort(device="iw0", port=1, kind=RdmaKind.IWARP)],
        "eth4": [RdmaPort(device="iw0", port=2, kind=RdmaKind.IWARP)],
        "ib0": [RdmaPort(device="mlx5_1", port=1, kind=RdmaKind.INFINIBAND)],
    }


def test_rdma_bindings_dual_port_device(sysfs: FakeSysfs) -> None:
    """One RoCE device, two ports, each with its own netdev (mlx4-like)."""
    sysfs.netdev("eth5", pci="0000:00:05.0", dev_port=0)
    sysfs.netdev("eth6", pci="0000:00:05.0", dev_port=1)
    sysfs.rdma(
        "mlx4_0",
        pci="0000:00:05.0",
        node_type="1: CA",
        ports={1: ("Ethernet", ["eth5\n"]), 2: ("Ethernet", ["eth6\n"])},
    )
    assert rdma_bindings(sysfs.root) == {
        "eth5": [RdmaPort(device="mlx4_0", port=1, kind=RdmaKind.ROCE)],
        "eth6": [RdmaPort(device="mlx4_0", port=2, kind=RdmaKind.ROCE)],
    }


def test_rdma_bindings_without_rdma(sysfs: FakeSysfs, tmp_path: Path) -> None:
    sysfs.netdev("eth0", pci="0000:00:01.0")
    assert rdma_bindings(sysfs.root) == {}
    assert rdma_bindings(tmp_path / "nothing") == {}


def test_rdma_bindings_skip_broken_devices(sysfs: FakeSysfs) -> None:
    build_roce(sysfs)
    # A device without ports, one with a non-numeric port entry, and a netdev whose
    # device/infiniband names a device without the port it needs.
    noports = sysfs.pci("0000:00:07.0") / "infiniband/rxe0"
    noports.mkdir(parents=True)
    (sysfs.root / "class/infiniband/rxe0").symlink_to(
        os.path.relpath(noports, sysfs.root / "class/infiniband")
    )
    weird = sysfs.rdma("zz0", pci="0000:00:08.0", node_type="1: CA", ports={1: ("Ethernet", [])})
    (weird / "ports/extra").mkdir()
    sysfs.netdev("eth8", pci="0000:00:08.0", dev_port=3)
    assert rdma_bindings(sysfs.root) == {"eth2": [ROCE], "eth2.100": [ROCE]}


# -- PFC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "enabled"),
    [
        ('{"prio_pfc":{"0":false,"3":true}}', True),
        (
            '{"prio_pfc":{"0":false,"1":false,"2":false,"3":false,"4":false,"5":false,"6":false,"7":false}}',
            False,
        ),
        ('{"prio_pfc":{"0":true,"1":true}}', True),
        ('{"ifname":"eth2","prio_pfc":{"3":true},"pfc_cap":8}', True),
        ('{"prio_pfc":[false,false,false,true]}', True),
        ('{"prio_pfc":[false,false]}', False),
        ('{"prio_pfc":[{"prio":0,"enabled":false},{"prio":3,"enabled":true}]}', True),
        ('{"prio_pfc":[{"prio":0,"pfc":false},{"prio":3,"pfc":false}]}', False),
        ('{"prio_pfc":{}}', None),
        ('{"prio_pfc":[]}', None),
        ('{"prio_pfc":{"0":"on","3":1}}', None),  # no booleans: unknown
        ('{"prio_pfc":{"0":"on","3":true}}', True),
        ('{"prio_pfc":true}', None),
        ('{"pfc_cap":8}', None),
        ("[]", None),
        ("null", None),
        ('"prio_pfc"', None),
        ("", None),
        ("garbage", None),
        ('{"prio_pfc":{"0":fal', None),
        ("Error: Unknown device name.", None),
    ],
)
def test_parse_dcb_pfc(text: str, enabled: bool | None) -> None:
    assert parse_dcb_pfc(text) is enabled


def fake_dcb(tmp_path: Path, stdout: str, status: int = 0) -> tuple[str, Path]:
    args = tmp_path / "dcb.args"
    script = tmp_path / "dcb"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {args}\ncat <<'EOF'\n{stdout}\nEOF\nexit {status}\n")
    script.chmod(0o755)
    return str(script), args


def test_pfc_state_runs_dcb(tmp_path: Path) -> None:
    tool, args = fake_dcb(tmp_path, '{"prio_pfc":{"0":false,"3":true}}')
    assert pfc_state("eth2", dcb=tool) is True
    assert args.read_text().split() == ["-j", "pfc", "show", "dev", "eth2", "prio-pfc"]


def test_pfc_state_unknown_when_dcb_fails(tmp_path: Path) -> None:
    tool, _ = fake_dcb(tmp_path, "Error: Device does not support DCB", status=1)
    assert pfc_state("eth2", dcb=tool) is None


def test_pfc_state_unknown_when_dcb_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert pfc_state("eth2", dcb=str(tmp_path / "no-such-dcb")) is None
    monkeypatch.setattr("ferry_hostnet.kernel.shutil.which", lambda name: None)
    assert pfc_state("eth2") is None


# -- read_interfaces (netlink: the current namespace) -------------------------------------------


def test_read_interfaces_excludes_loopback_by_default() -> None:
    expected = {(index, name) for index, name in socket.if_nameindex()}
    everything = read_interfaces(include_loopback=True)
    assert {(i.ifindex, i.name) for i in everything} == expected
    loopbacks = [i for i in everything if i.loopback]
    assert [i.name for i in loopbacks] == ["lo"]
    assert [i.ifindex for i in everything] == sorted(i.ifindex for i in everything)

    default = read_interfaces()
    assert [i.name for i in default] == [i.name for i in everything if not i.loopback]
    assert not any(i.loopback for i in default)


def test_read_interfaces_loopback(tmp_path: Path) -> None:
    (lo,) = [i for i in read_interfaces(tmp_path, include_loopback=True) if i.loopback]
    assert lo.name == "lo"
    assert lo.mac is None  # 00:00:00:00:00:00 is no address
    assert lo.admin_up
    assert lo.is_up
    assert lo.rdma == [] and lo.rdma_kind is None and lo.pfc_enabled is None
    assert {a.address for a in lo.addresses} >= {"127.0.0.1"}


def test_read_interfaces_reads_the_given_sysfs(sysfs: FakeSysfs) -> None:
    sysfs.netdev("lo", speed="123\n", rx_queues=3)
    (lo,) = [i for i in read_interfaces(sysfs.root, include_loopback=True) if i.name == "lo"]
    assert lo.speed_bps == 123_000_000
    assert lo.rx_queues == 3
    assert lo.rss_capable
