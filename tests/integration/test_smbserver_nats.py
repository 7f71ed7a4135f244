"""The smbserver service (``ferry-smbserver``) with a real nats-server: a source host's migrator
asks it over NATS for a temporary hidden share; SMB clients (Ferry's, Samba's smbclient,
smbprotocol) check who can use it and what is listed; leases run out; restarts clean up; the
interfaces it advertises follow the inventory in KV."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.js.errors
import pytest
from ferry_hostnet import INVENTORY
from ferry_hostnet.model import Address, Interface, Inventory, RdmaKind
from ferry_runtime import subjects
from ferry_runtime.bus import Bus, NoResponders, RemoteError
from ferry_runtime.config import HostSettings, NatsSettings, TracingSettings
from ferry_runtime.metrics import RuntimeMetrics
from ferry_runtime.migration_shares import (
    CREATE_SHARE,
    MIGRATION_SHARE,
    REMOVE_SHARE,
    RENEW_SHARE,
    SHARE_REMOVED,
    CreateShare,
    MigrationShare,
    RemoveShare,
    RenewShare,
    ShareRemoved,
)
from ferry_runtime.tracing import Telemetry
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from smbcore.aio_client import SMBClient
from smbcore.auth import UserDatabase
from smbcore.client_errors import SMBStatusError
from smbcore.ntstatus import NTStatus
from smbprotocol.connection import Connection
from smbprotocol.ioctl import (
    CtlCode,
    IOCTLFlags,
    SMB2IOCTLRequest,
    SMB2IOCTLResponse,
    SMB2NetworkInterfaceInfo,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tests.conftest import require_tool
from tests.support.procs import VENV_BIN, NatsServer, Service, free_port

TARGET = "hv-target"
SOURCE, SOURCE_SECRET = "hv-source", "S0urce-host-secret"
OTHER, OTHER_SECRET = "hv-other", "0ther-host-secret"
USER, PASSWORD = "alice", "Corr3ct-Horse"


@dataclass
class Target:
    """The target host: an smbserver, its folders and accounts."""

    root: Path
    nats_url: str
    smb_port: int
    service: Service | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    @property
    def url(self) -> str:
        assert self.service is not None and self.service.url is not None
        return self.service.url

    def env(self) -> dict[str, str]:
        return {
            "FERRY_HOST__NAME": TARGET,
            "FERRY_NATS__URL": self.nats_url,
            "FERRY_NATS__RECONNECT_WAIT": "0.2",
            "FERRY_NATS__CONNECT_TIMEOUT": "1",
            "FERRY_HTTP__HOST": "127.0.0.1",
            "FERRY_HTTP__PORT": "0",
            "FERRY_SMB__LISTEN": "127.0.0.1",
            "FERRY_SMB__PORT": str(self.smb_port),
            "FERRY_SMB__USERS": str(self.root / "users.db"),
            "FERRY_SHARES__data__PATH": str(self.root / "data"),
            "FERRY_MIGRATION__ALLOWED_ROOTS": str(self.vms),
            "FERRY_MIGRATION__MIN_LEASE": "0.5",
            "FERRY_MIGRATION__MAINTENANCE_INTERVAL": "0.5",
            "FERRY_ADVERTISE__REFRESH_INTERVAL": "0.5",
            "FERRY_LOGGING__FORMAT": "json",
            **self.extra_env,
        }

    def start(self) -> Target:
        self.service = Service([str(VENV_BIN / "ferry-smbserver")], env=self.env()).start()
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


@pytest.fixture
def target(tmp_path: Path, nats_server: NatsServer) -> Iterator[Target]:
    (tmp_path / "data").mkdir()
    users = UserDatabase(tmp_path / "users.db")
    users.add_user(f"host${SOURCE}", SOURCE_SECRET)
    users.add_user(f"host${OTHER}", OTHER_SECRET)
    users.add_user(USER, PASSWORD)
    running = Target(tmp_path, nats_server.url, free_port())
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """The source host's side of the bus (what its migrator uses)."""
    telemetry = Telemetry("test-migrator", HostSettings(name=SOURCE), TracingSettings())
    bus = Bus(
        NatsSettings(url=[nats_server.url], request_timeout=5),
        "test",
        telemetry,
        RuntimeMetrics(CollectorRegistry()),
    )
    await bus.start()
    await bus.wait_connected(10)
    try:
        yield bus
    finally:
        await bus.close()


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


async def ready(target: Target) -> None:
    async def check() -> bool:
        return (await get_json(f"{target.url}/readyz"))[0] == 200

    await until(check, 15, "smbserver ready")


async def create(
    bus: Bus, migration_id: str, dest: Path, lease: float = 30.0, source: str = SOURCE
) -> MigrationShare:
    request = CreateShare(
        source=source, migration_id=migration_id, destination=str(dest), lease_seconds=lease
    )
    return MIGRATION_SHARE.decode(
        await bus.request(subjects.smbserver_share_create(TARGET), CREATE_SHARE.encode(request))
    )


async def renew(bus: Bus, migration_id: str, lease: float) -> MigrationShare:
    request = RenewShare(source=SOURCE, migration_id=migration_id, lease_seconds=lease)
    return MIGRATION_SHARE.decode(
        await bus.request(subjects.smbserver_share_renew(TARGET), RENEW_SHARE.encode(request))
    )


async def remove(bus: Bus, migration_id: str, **fields: Any) -> ShareRemoved:
    request = RemoveShare(source=SOURCE, migration_id=migration_id, **fields)
    return SHARE_REMOVED.decode(
        await bus.request(subjects.smbserver_share_remove(TARGET), REMOVE_SHARE.encode(request))
    )


async def lease_keys(nats_url: str) -> list[str]:
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(subjects.SMBSERVER_LEASES_BUCKET)
        try:
            return sorted(await kv.keys())
        except nats.js.errors.NoKeysError:
            return []
    finally:
        await nc.close()


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def smbclient_listing(target: Target) -> dict[str, str]:
    """``smbclient -L`` (Samba, over srvsvc) as alice: share name -> type."""
    smbclient = require_tool(shutil.which("smbclient"), "smbclient")
    out = subprocess.run(
        [smbclient, "-L", "//127.0.0.1", "-p", str(target.smb_port), "-m", "SMB3", "-U", f"{USER}%{PASSWORD}",
         "--configfile=/dev/null"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    shares = {}
    for line in out.stdout.splitlines():
        if line.startswith("\t") and not line.strip().startswith(("Sharename", "---------")):
            name, kind, *_ = line.split()
            shares[name] = kind
    return shares


async def test_source_host_gets_a_hidden_share_only_it_can_use(target: Target, bus: Bus) -> None:
    target.start()
    await ready(target)
    dest = target.vms / "web01"
    share = await create(bus, "m1", dest)
    staging = dest / ".ferry-staging" / f"{SOURCE}.m1"
    assert share.created and share.share == f"{SOURCE}.m1$" and share.host == TARGET
    assert share.path == str(staging) and share.account == f"host${SOURCE}"
    assert await lease_keys(target.nats_url) == [f"{TARGET}.{SOURCE}.m1"]

    # The source host's identity writes into it ...
    payload = os.urandom(3 * 1024 * 1024 + 17)
    client = await SMBClient.connect("127.0.0.1", target.smb_port)
    try:
        tree = await (await client.login(f"host${SOURCE}", SOURCE_SECRET)).connect_tree(share.share)
        async with await tree.open("disk0.qcow2", "w") as f:
            await f.write(0, payload)
        assert (staging / "disk0.qcow2").read_bytes() == payload

        # ... another host's identity and a user cannot connect to it.
        for user, password in ((f"host${OTHER}", OTHER_SECRET), (USER, PASSWORD)):
            other = await SMBClient.connect("127.0.0.1", target.smb_port)
            try:
                session = await other.login(user, password)
                with pytest.raises(SMBStatusError) as err:
                    await session.connect_tree(share.share)
                assert err.value.status == NTStatus.ACCESS_DENIED
                await session.connect_tree("data")  # what it may use, it can
            finally:
                await other.close()

        # Not in listings: srvsvc (Samba's smbclient -L), the HTTP API, the CLI; shown when asked.
        listed = await asyncio.to_thread(smbclient_listing, target)
        assert "data" in listed and share.share not in listed
        _, body = await get_json(f"{target.url}/v1/shares")
        assert [s["name"] for s in body["shares"]] == ["data", "IPC$"]
        _, body = await get_json(f"{target.url}/v1/shares?hidden=1")
        (shown,) = [s for s in body["shares"] if s["migration"]]
        assert (
            shown["name"] == share.share and shown["hidden"] and shown["users"] == [f"host${SOURCE}".lower()]
        )
        assert shown["lease"]["source"] == SOURCE and shown["trees"] == 1
        cli = await asyncio.to_thread(
            subprocess.run,
            [str(VENV_BIN / "ferry"), "smbserver", "shares", "--url", target.url, "--json", "--hidden"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert share.share in [s["name"] for s in json.loads(cli.stdout)["shares"]]

        # Renewing extends; creating again is the same share.
        renewed = await renew(bus, "m1", 60)
        assert renewed.expires_at > share.expires_at and renewed.path == share.path
        again = await create(bus, "m1", dest)
        assert not again.created and again.path == share.path

        # Refusals carry a status and a reason.
        with pytest.raises(RemoteError) as refused:
            await create(bus, "m2", Path("/etc"))
        assert refused.value.status == 403 and "not under an allowed root" in refused.value.message
        with pytest.raises(RemoteError) as refused:
            await create(bus, "m3", dest, source="hv-unknown")
        assert (
            refused.value.status == 403
            and "ferry smbserver user add 'host$hv-unknown'" in refused.value.message
        )
        with pytest.raises(RemoteError) as refused:
            await bus.request(subjects.smbserver_share_create(TARGET), b"\x93garbage")
        assert refused.value.status == 400
        with pytest.raises(NoResponders):
            await bus.request(subjects.smbserver_share_create("hv-nowhere"), b"", timeout=2)

        # The migration ends: the share goes (the open tree sees it), so do the files.
        removed = await remove(bus, "m1", reason="completed")
        assert removed.removed and removed.staging_removed
        assert not exists(staging) and exists(dest)
        with pytest.raises(SMBStatusError) as err:
            await tree.open("disk0.qcow2", "r")
        assert err.value.status == NTStatus.NETWORK_NAME_DELETED
        assert await lease_keys(target.nats_url) == []
        samples = await metric_samples(target)
        written = (("direction", "written"), ("kind", "migration"), ("share", share.share))
        assert samples[("ferry_smbserver_share_bytes_total", written)] == len(payload)
        assert samples[("ferry_smbserver_migration_share_events_total", (("event", "created"),))] == 1
        # The core's own answers, through smbcore's request hook: the two tree connects the
        # share's users list refused, and every connection's NEGOTIATE (three, plus smbclient's).
        denied = (("command", "TREE_CONNECT"), ("status", "STATUS_ACCESS_DENIED"))
        assert samples[("ferry_smbserver_errors_total", denied)] == 2
        timed = "ferry_smbserver_request_duration_seconds_count"
        assert samples[(timed, (("command", "NEGOTIATE"),))] >= 3
        assert samples[(timed, (("command", "TREE_CONNECT"),))] >= 4
    finally:
        await client.close()


async def metric_samples(target: Target) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(f"{target.url}/metrics") as r:
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_lease_not_renewed_takes_the_share_and_its_folder(target: Target, bus: Bus) -> None:
    target.start()
    await ready(target)
    dest = target.vms / "db01"
    share = await create(bus, "m-lease", dest, lease=2.0)
    client = await SMBClient.connect("127.0.0.1", target.smb_port)
    try:
        tree = await (await client.login(f"host${SOURCE}", SOURCE_SECRET)).connect_tree(share.share)
        async with await tree.open("disk.raw", "w") as f:
            await f.write(0, b"x" * 65536)
        assert exists(Path(share.path) / "disk.raw")

        # The migrator stops renewing (it died): the share, its folder and its record go.
        async def gone() -> bool:
            _, body = await get_json(f"{target.url}/v1/shares?hidden=1")
            return share.share not in [s["name"] for s in body["shares"]] and not exists(share.path)

        took = await until(gone, 15, "the share's lease to run out")
        print(f"share gone {took:.2f}s after creation (lease 2 s)")
        await until(lambda: _no_keys(target), 10, "record deleted")
        with pytest.raises(SMBStatusError) as err:
            await tree.open("disk.raw", "r")
        assert err.value.status == NTStatus.NETWORK_NAME_DELETED
        with pytest.raises(RemoteError) as late:
            await renew(bus, "m-lease", 30)
        assert late.value.status == 404
    finally:
        await client.close()


async def _no_keys(target: Target) -> bool:
    return await lease_keys(target.nats_url) == []


async def test_concurrent_requests_do_not_collide(target: Target, bus: Bus) -> None:
    target.start()
    await ready(target)
    dest = target.vms / "many"

    # Two requesters create the same migration's share at once: one share, one folder.
    first, second = await asyncio.gather(create(bus, "same", dest), create(bus, "same", dest))
    assert {first.created, second.created} == {True, False} and first.path == second.path

    # Many migrations created and removed at once, some removed while being created.
    ids = [f"c{i}" for i in range(16)]
    calls: list[Any] = []
    for i, migration_id in enumerate(ids):
        calls.append(create(bus, migration_id, dest))
        if i % 2:
            calls.append(remove(bus, migration_id))
        if i % 4 == 1:
            calls.append(create(bus, migration_id, dest))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)], results

    _, body = await get_json(f"{target.url}/v1/migration-shares")
    served = {s["migration_id"] for s in body["shares"]}
    keys = {key.rsplit(".", 1)[1] for key in await lease_keys(target.nats_url)}
    folders = {p.name.split(".", 1)[1] for p in (dest / ".ferry-staging").iterdir()}
    assert served == keys == folders
    assert {"same", *(ids[i] for i in range(0, 16, 2))} <= served  # never removed
    # All removed now, at once: nothing left anywhere.
    await asyncio.gather(*(remove(bus, m) for m in served))
    assert await lease_keys(target.nats_url) == []
    assert not exists(dest / ".ferry-staging")


async def test_a_restarted_smbserver_restores_live_shares_and_cleans_stale_ones(
    target: Target, bus: Bus
) -> None:
    target.start()
    await ready(target)
    live = await create(bus, "live", target.vms / "a", lease=60)
    stale = await create(bus, "stale", target.vms / "b", lease=1.0)
    (Path(live.path) / "disk").write_bytes(b"kept")
    (Path(stale.path) / "disk").write_bytes(b"lost")
    assert target.service is not None
    target.service.signal(signal.SIGKILL)  # no goodbye: its timers die with it
    target.service.wait(10)
    await asyncio.sleep(1.5)  # the stale lease runs out while nobody serves it
    assert exists(stale.path)

    target.start()
    await ready(target)
    assert not exists(stale.path)
    assert await lease_keys(target.nats_url) == [f"{TARGET}.{SOURCE}.live"]
    _, body = await get_json(f"{target.url}/v1/migration-shares")
    assert [s["share"] for s in body["shares"]] == [live.share]
    client = await SMBClient.connect("127.0.0.1", target.smb_port)
    try:
        tree = await (await client.login(f"host${SOURCE}", SOURCE_SECRET)).connect_tree(live.share)
        async with await tree.open("disk", "r") as f:
            assert await f.read(0, 4) == b"kept"
    finally:
        await client.close()
    assert "stale migration share cleaned up" in target.service.text


def query_interfaces(port: int) -> list[tuple[int, int, int, str]]:
    """FSCTL_QUERY_NETWORK_INTERFACE_INFO from smbprotocol (an independent client):
    (ifindex, capabilities, link speed, address) per entry."""
    conn = Connection(uuid.uuid4(), "127.0.0.1", port)
    conn.connect(timeout=10)
    try:
        session = Session(conn, USER, PASSWORD)
        session.connect()
        tree = TreeConnect(session, r"\\127.0.0.1\IPC$")
        tree.connect()
        request = SMB2IOCTLRequest()
        request["ctl_code"] = CtlCode.FSCTL_QUERY_NETWORK_INTERFACE_INFO
        request["file_id"] = b"\xff" * 16
        request["max_output_response"] = 65536
        request["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
        sent = conn.send(request, sid=session.session_id, tid=tree.tree_connect_id)
        response = SMB2IOCTLResponse()
        response.unpack(conn.receive(sent)["data"].get_value())
        entries = []
        for info in SMB2NetworkInterfaceInfo.unpack_multiple(response["buffer"].get_value()):
            address = str(
                ipaddress.ip_address(info["sock_addr_storage"]["buffer"].get_value().get_ipaddress())
            )
            entries.append(
                (
                    info["if_index"].get_value(),
                    info["capability"].get_value(),
                    info["link_speed"].get_value(),
                    address,
                )
            )
        return entries
    finally:
        conn.disconnect()


def fake_inventory(*interfaces: Interface) -> Inventory:
    return Inventory(host=TARGET, interfaces=list(interfaces), collected_at=time.time())


def nic(name: str, ifindex: int, address: str, speed: int, **fields: Any) -> Interface:
    values: dict[str, Any] = {
        "name": name, "ifindex": ifindex, "mtu": 9000, "oper_state": "up", "admin_up": True,
        "rss_capable": True, "speed_bps": speed,
        "addresses": [Address(family=4, address=address, prefix_len=24)],
    }  # fmt: skip
    return Interface(**{**values, **fields})


async def test_advertised_interfaces_follow_the_inventory(
    target: Target, nats_server: NatsServer, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_server.url)
    kv = await nc.jetstream().create_key_value(bucket=subjects.INVENTORY_BUCKET)
    eth = nic("eth1", 11, "10.88.1.2", 25_000_000_000)
    await kv.put(TARGET, INVENTORY.encode(fake_inventory(eth)))
    target.extra_env["FERRY_INTERFACES__eth1__SPEED"] = "40G"  # an operator override wins
    target.start()
    await ready(target)

    async def advertised() -> list[tuple[int, int, int, str]]:
        return await asyncio.to_thread(query_interfaces, target.smb_port)

    await until(
        lambda: _equals(advertised, [(11, 1, 40_000_000_000, "10.88.1.2")]), 10, "inventory advertised"
    )

    # An RDMA NIC appears and eth1 goes down (as discovery announces it): clients see it at once.
    changed = fake_inventory(
        eth.model_copy(update={"oper_state": "down"}),
        nic("rdma0", 12, "10.88.2.2", 100_000_000_000, rdma_kind=RdmaKind.ROCE, rss_capable=False),
    )
    await kv.put(TARGET, INVENTORY.encode(changed))
    await nc.publish(subjects.inventory_changed(TARGET), INVENTORY.encode(changed))
    took = await until(
        lambda: _equals(advertised, [(12, 2, 100_000_000_000, "10.88.2.2")]), 10, "change advertised"
    )
    print(f"inventory change advertised within {took:.2f}s")
    _, body = await get_json(f"{target.url}/v1/interfaces")
    assert body["source"] == "discovery"

    # NATS goes away: the kernel's interfaces are advertised instead.
    await nc.close()
    nats_server.stop()

    async def from_kernel() -> bool:
        return (await get_json(f"{target.url}/v1/interfaces"))[1]["source"] == "kernel"

    await until(from_kernel, 15, "fallback to the kernel")
    entries = await advertised()
    assert entries and all(address != "10.88.2.2" for *_, address in entries)


async def _equals(read: Callable[[], Any], expected: Any) -> bool:
    return bool(await read() == expected)
