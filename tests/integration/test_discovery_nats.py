"""Discovery instances in namespaces publishing to a real nats-server through a bridge."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import nats.aio.msg
import nats.js.errors
import pytest
from ferry_hostnet import INVENTORY, Inventory
from ferry_runtime import subjects
from nats.js.kv import KeyValue

from tests.support.netns import Lab, Namespace
from tests.support.procs import VENV_BIN, NatsServer, Service, free_port

REFRESH = 1.0
TTL = 3.0


@dataclass
class Host:
    name: str
    ns: Namespace
    address: str


def discovery(host: Host, nats_url: str, **extra_env: str) -> Service:
    env = {
        "FERRY_HOST__NAME": host.name,
        "FERRY_HOST__RACK": "r1",
        "FERRY_NATS__URL": nats_url,
        "FERRY_NATS__RECONNECT_WAIT": "0.2",
        "FERRY_NATS__CONNECT_TIMEOUT": "1",
        "FERRY_HTTP__HOST": host.address,
        "FERRY_HTTP__PORT": "0",
        "FERRY_DISCOVERY__REFRESH_INTERVAL": str(REFRESH),
        "FERRY_DISCOVERY__INVENTORY_TTL": str(TTL),
        "FERRY_DISCOVERY__DEBOUNCE": "0.05",
        "FERRY_LOGGING__FORMAT": "json",
        **extra_env,
    }
    return Service([str(VENV_BIN / "ferry-discovery")], env=env, netns=host.ns.name)


@pytest.fixture
def hosts(lab: Lab) -> list[Host]:
    result = []
    for label in ("a", "b"):
        ns, address = lab.add_host(label)
        result.append(Host(f"hv-{label}-{lab.tag}", ns, address))
    return result


@pytest.fixture
def bus_nats(lab: Lab, hosts: list[Host], tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server on the bridge address, reachable from every test host."""
    server = NatsServer(tmp_path / "nats", host=lab.gateway).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


@pytest.fixture
async def inventory_kv(bus_nats: NatsServer) -> AsyncIterator[Callable[[], asyncio.Future[KeyValue]]]:
    nc = await nats.connect(bus_nats.url)

    async def kv() -> KeyValue:
        return await nc.jetstream().key_value(subjects.INVENTORY_BUCKET)

    try:
        yield kv  # type: ignore[misc]
    finally:
        await nc.close()


async def read_inventory(kv: KeyValue, host: str) -> Inventory | None:
    try:
        entry = await kv.get(host)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    return INVENTORY.decode(entry.value) if entry.value else None


async def until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll an async or sync predicate; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as r,
    ):
        return r.status, await r.json()


async def bucket(inventory_kv: Callable[[], asyncio.Future[KeyValue]], timeout: float = 10) -> KeyValue:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await inventory_kv()
        except nats.js.errors.BucketNotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_two_hosts_publish_expire_and_follow_addresses(
    hosts: list[Host],
    bus_nats: NatsServer,
    services: list[Service],
    inventory_kv: Callable[[], asyncio.Future[KeyValue]],
) -> None:
    a, b = hosts
    services += [discovery(a, bus_nats.url).start(), discovery(b, bus_nats.url).start()]
    kv = await bucket(inventory_kv)

    # Both inventories arrive, each with its host's own uplink address and labels.
    for host in hosts:
        await until(lambda h=host: read_inventory(kv, h.name), 10, f"{host.name} inventory")
        inventory = await read_inventory(kv, host.name)
        assert inventory is not None
        uplink = inventory.interface("uplink")
        assert uplink is not None and uplink.is_up
        assert [x.address for x in uplink.addresses if x.family == 4] == [host.address]
        assert inventory.labels == {"rack": "r1"}

    # A third client, the CLI, reads another host's inventory from the bus.
    cli = subprocess.run(
        [str(VENV_BIN / "ferry"), "interfaces", "--host", b.name, "--json", "--nats", bus_nats.url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout)["host"] == b.name
    unknown = subprocess.run(
        [str(VENV_BIN / "ferry"), "interfaces", "--host", "nosuchhost", "--nats", bus_nats.url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 1
    assert "unknown host 'nosuchhost'" in unknown.stderr and a.name in unknown.stderr

    # An address added in host b's namespace shows up in KV within seconds (netlink, not the timer),
    # and a change event says so.
    events: asyncio.Queue[tuple[str, Inventory]] = asyncio.Queue()
    watcher = await nats.connect(bus_nats.url)

    async def on_change(msg: nats.aio.msg.Msg) -> None:
        await events.put((msg.subject, INVENTORY.decode(msg.data)))

    await watcher.subscribe(subjects.ALL_INVENTORY_CHANGES, cb=on_change)
    await watcher.flush()
    b.ns.ip("addr", "add", "198.19.5.5/24", "dev", "uplink")
    subject, changed = await asyncio.wait_for(events.get(), 5)
    await watcher.close()
    assert subject == subjects.inventory_changed(b.name)
    changed_uplink = changed.interface("uplink")
    assert changed_uplink is not None and any(x.address == "198.19.5.5" for x in changed_uplink.addresses)

    async def has_new_address() -> bool:
        inv = await read_inventory(kv, b.name)
        uplink = inv.interface("uplink") if inv else None
        return uplink is not None and any(x.address == "198.19.5.5" for x in uplink.addresses)

    took = await until(has_new_address, 5, "new address in KV")
    print(f"address visible in KV after {took:.2f}s")

    # Killing host a's discovery (no goodbye) lets its inventory expire; b's stays.
    services[0].signal(signal.SIGKILL)
    services[0].wait(5)
    took = await until(lambda: _absent(kv, a.name), TTL + 10, "expiry of the dead host's inventory")
    print(f"dead host's inventory expired after {took:.2f}s (TTL {TTL}s)")
    assert await read_inventory(kv, b.name) is not None
    expired = subprocess.run(
        [str(VENV_BIN / "ferry"), "interfaces", "--host", a.name, "--nats", bus_nats.url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert expired.returncode == 1 and a.name in expired.stderr


async def _absent(kv: KeyValue, host: str) -> bool:
    return await read_inventory(kv, host) is None


async def test_not_ready_until_nats_appears(
    lab: Lab, hosts: list[Host], tmp_path: Path, services: list[Service]
) -> None:
    a = hosts[0]
    port = free_port(lab.gateway)
    url = f"nats://{lab.gateway}:{port}"
    service = discovery(a, url).start()
    services.append(service)
    assert service.url is not None

    # Serving HTTP, alive, but not ready: NATS is not there.
    status, _ = await get_json(f"{service.url}/healthz")
    assert status == 200
    status, body = await get_json(f"{service.url}/readyz")
    assert status == 503
    assert body["checks"]["nats"]["ok"] is False  # type: ignore[index]
    # The inventory is served locally all the same.
    status, body = await get_json(f"{service.url}/v1/interfaces")
    assert status == 200 and body["host"] == a.name
    await asyncio.sleep(1.5)  # several failed attempts
    assert service.process is not None and service.process.poll() is None

    server = NatsServer(tmp_path / "late-nats", host=lab.gateway, port=port).start()
    try:

        async def ready() -> bool:
            return (await get_json(f"{service.url}/readyz"))[0] == 200

        took = await until(ready, 10, "ready once NATS is up")
        print(f"ready {took:.2f}s after nats-server started")
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value(subjects.INVENTORY_BUCKET)
            assert await read_inventory(kv, a.name) is not None
        finally:
            await nc.close()
        assert "NATS not reachable, retrying" in service.text
    finally:
        assert service.stop() == 0
        server.stop()


async def test_sigterm_mid_publish(
    hosts: list[Host],
    bus_nats: NatsServer,
    services: list[Service],
    inventory_kv: Callable[[], asyncio.Future[KeyValue]],
) -> None:
    """SIGTERM while addresses churn: a clean exit in time, and the last value in KV is whole."""
    a = hosts[0]
    service = discovery(a, bus_nats.url, FERRY_SHUTDOWN_TIMEOUT="5").start()
    services.append(service)
    kv = await bucket(inventory_kv)
    await until(lambda: read_inventory(kv, a.name), 10, "first publish")
    for i in range(40):
        a.ns.ip("addr", "add", f"198.19.6.{i + 1}/32", "dev", "uplink")
        if i == 25:
            service.signal(signal.SIGTERM)
    started = time.monotonic()
    assert service.wait(15) == 0, service.text
    print(f"stopped {time.monotonic() - started:.2f}s after SIGTERM")
    inventory = await read_inventory(kv, a.name)
    assert inventory is not None and inventory.host == a.name  # decodes: never a torn value
    logs = [json.loads(line) for line in service.output if line.startswith("{")]
    assert [e["message"] for e in logs][-2:] == ["stopping", "stopped"]
