"""The selector service against a real nats-server (no namespaces: inventories are written to KV
as discovery writes them): readiness, plans over HTTP, NATS and the CLI, constraint and
migration-network changes with compare-and-swap across two instances, state kept in NATS
across restarts, inventory expiry, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import msgpack
import nats
import nats.js.errors
import pytest
from ferry_hostnet.netsettings import HOST_SETTINGS
from ferry_hostnet.selector_api import (
    CONSTRAINT_ADD,
    CONSTRAINT_LIST,
    CONSTRAINT_QUERY,
    PLAN,
    PLAN_REQUEST,
    ConstraintAdd,
    ConstraintQuery,
    PlanRequest,
)
from ferry_runtime import subjects
from nats.aio.client import Client
from nats.js.kv import KeyValue

from tests.support.procs import VENV_BIN, NatsServer, Service
from tests.support.selector import http, inventory, seed, selector


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


async def inventory_bucket(nc: Client, ttl: float | None = None) -> KeyValue:
    """The bucket as discovery creates it (TTL and limit markers when ``ttl``)."""
    return await nc.jetstream().create_key_value(
        bucket=subjects.INVENTORY_BUCKET, ttl=ttl, limit_marker_ttl=ttl, history=1
    )


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


async def ready(service: Service) -> bool:
    return (await http("GET", f"{service.url}/readyz"))[0] == 200


def cli(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ferry"), *args, "--nats", nats_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_ready_once_discovery_published_then_plans_everywhere(
    nats_server: NatsServer, nc: Client, services: list[Service]
) -> None:
    service = selector(nats_server.url).start(wait_listening=60)
    services.append(service)
    # No discovery has published: the inventory bucket does not exist, and the selector waits.
    status, body = await http("GET", f"{service.url}/readyz")
    assert status == 503
    await until(
        lambda: _state_detail(service, "waiting for the bucket"),
        10,
        "the selector waits for the inventory bucket",
    )
    status, body = await http("GET", f"{service.url}/v1/plan?client=hv01&server=hv02")
    assert status == 503 and "not loaded" in body["message"]

    kv = await inventory_bucket(nc, ttl=30)
    await kv.put("hv01", inventory("hv01", seed(1)))
    await kv.put("hv02", inventory("hv02", seed(2)))
    await until(lambda: ready(service), 10, "ready once the bucket exists")

    status, plan = await http("GET", f"{service.url}/v1/plan?client=hv01&server=hv02")
    assert status == 200, plan
    assert plan["class"] == "rdma" and plan["connections"] == 4
    assert [(c["local_name"], c["remote_name"]) for c in plan["channels"]] == [
        ("rdma0", "rdma0"),
        ("rdma1", "rdma1"),
    ]
    # Over NATS: the same plan.
    reply = await nc.request(
        subjects.SELECTOR_PLAN, PLAN_REQUEST.encode(PlanRequest(client="hv01", server="hv02")), timeout=5
    )
    assert PLAN.decode(reply.data).model_dump(mode="json", by_alias=True) == plan
    # Through the CLI.
    proc = cli(nats_server.url, "plan", "--client", "hv01", "--server", "hv02", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == plan
    proc = cli(nats_server.url, "plan", "--client", "hv01", "--server", "hv02")
    assert "RDMA over RDMA, 4 connections" in proc.stdout and "rdma0 (5)" in proc.stdout

    # Errors: an unknown host, a bad purpose, a malformed NATS request.
    status, body = await http("GET", f"{service.url}/v1/plan?client=hv01&server=hv09")
    assert status == 404 and "'hv09'" in body["message"]
    status, body = await http("GET", f"{service.url}/v1/plan?client=hv01&server=hv02&purpose=backup")
    assert status == 400 and "purpose" in body["message"]
    reply = await nc.request(subjects.SELECTOR_PLAN, b"junk", timeout=5)
    assert reply.headers is not None and reply.headers["Ferry-Status"] == "400"
    proc = cli(nats_server.url, "plan", "--client", "hv01", "--server", "hv09")
    assert proc.returncode == 1 and "no inventory for host 'hv09'" in proc.stderr and "(404)" in proc.stderr

    # An inventory that expires (or is deleted) leaves the selector within moments.
    await kv.delete("hv02")
    await until(
        lambda: _status(service, "/v1/plan?client=hv01&server=hv02", 404), 5, "deleted inventory forgotten"
    )
    metrics = (await _text(f"{service.url}/metrics")).splitlines()  # HTTP, NATS and twice the CLI
    assert 'ferry_selector_plans_total{outcome="channels",purpose="smb"} 4.0' in metrics
    assert "ferry_selector_inventories 1.0" in metrics

    # OpenAPI names every route.
    _, document = await http("GET", f"{service.url}/openapi.json")
    for path in ("/v1/plan", "/v1/hosts", "/v1/constraints", "/v1/constraints/{client}/{server}"):
        assert path in document["paths"]
    assert set(document["paths"]["/v1/hosts/{host}/migration-networks"]) == {"get", "put", "delete"}

    service.signal(signal.SIGTERM)
    assert service.wait(15) == 0
    messages = [json.loads(line)["message"] for line in service.output if line.startswith("{")]
    assert messages[-2:] == ["stopping", "stopped"]


async def _state_detail(service: Service, text: str) -> bool:
    _, body = await http("GET", f"{service.url}/readyz")
    return text in body["checks"]["state"]["detail"]


async def _status(service: Service, path: str, status: int) -> bool:
    return (await http("GET", f"{service.url}{path}"))[0] == status


async def _text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return await r.text()


async def test_constraints_over_http_nats_and_cli(
    nats_server: NatsServer, nc: Client, services: list[Service]
) -> None:
    kv = await inventory_bucket(nc)
    await kv.put("hv01", inventory("hv01", seed(1)))
    await kv.put("hv02", inventory("hv02", seed(2)))
    service = selector(nats_server.url).start(wait_listening=60)
    services.append(service)
    await until(lambda: ready(service), 10, "ready")
    url = service.url

    # Refused: an interface the client does not have; a client with no inventory; bad bodies.
    status, body = await http(
        "POST", f"{url}/v1/constraints", {"client": "hv01", "server": "hv02", "interfaces": ["eth1", 99]}
    )
    assert status == 422 and "no interface 99" in body["message"] and "eth1 (index 3)" in body["message"]
    status, body = await http(
        "POST", f"{url}/v1/constraints", {"client": "hv07", "server": "hv02", "interfaces": ["eth1"]}
    )
    assert status == 404 and "no inventory for host 'hv07'" in body["message"]
    status, body = await http(
        "POST", f"{url}/v1/constraints", {"client": "hv01", "server": "hv02", "interfaces": []}
    )
    assert status == 400 and "interfaces" in body["message"]
    status, _ = await http("POST", f"{url}/v1/constraints", ["not", "an", "object"])
    assert status == 400

    # New-SmbMultichannelConstraint -InterfaceAlias eth1 then -InterfaceIndex 4 (eth2): they add up.
    status, body = await http(
        "POST", f"{url}/v1/constraints", {"client": "hv01", "server": "HV02", "interfaces": ["eth1"]}
    )
    assert status == 200 and body == {
        "constraints": [{"client": "hv01", "server": "HV02", "interfaces": ["eth1"]}]
    }
    reply = await nc.request(
        subjects.SELECTOR_CONSTRAINT_ADD,
        CONSTRAINT_ADD.encode(ConstraintAdd(client="hv01", server="hv02", interfaces=[4])),
        timeout=5,
    )
    assert [e.interfaces for e in CONSTRAINT_LIST.decode(reply.data).constraints] == [["eth1", 4]]

    status, plan = await http("GET", f"{url}/v1/plan?client=hv01&server=hv02")
    assert [c["local_name"] for c in plan["channels"]] == ["eth1", "eth2"]
    assert plan["applied"]["constraint"] == ["eth1", 4]
    reasons = {d["name"]: d["reason"] for d in plan["decisions"] if d["side"] == "local"}
    assert reasons == {
        "eth0": "constrained_out",
        "eth1": None,
        "eth2": None,
        "rdma0": "constrained_out",
        "rdma1": "constrained_out",
    }

    # The CLI: add, list, remove an interface, remove the rest.
    proc = cli(nats_server.url, "constraint", "add", "--client", "hv01", "--server", "hv03", "-i", "rdma0,6")
    assert proc.returncode == 0, proc.stderr
    proc = cli(nats_server.url, "constraint", "add", "--client", "hv01", "--server", "hv03", "-i", "eth9")
    assert proc.returncode == 1 and "no interface 'eth9'" in proc.stderr
    proc = cli(nats_server.url, "constraint", "list", "--json")
    assert json.loads(proc.stdout)["constraints"] == [
        {"client": "hv01", "server": "HV02", "interfaces": ["eth1", 4]},
        {"client": "hv01", "server": "hv03", "interfaces": ["rdma0", 6]},
    ]
    reply = await nc.request(
        subjects.SELECTOR_CONSTRAINT_LIST, CONSTRAINT_QUERY.encode(ConstraintQuery(server="HV03")), timeout=5
    )
    assert [e.server for e in CONSTRAINT_LIST.decode(reply.data).constraints] == ["hv03"]
    proc = cli(nats_server.url, "constraint", "remove", "--client", "hv01", "--server", "hv02", "-i", "eth1")
    assert proc.returncode == 0, proc.stderr
    assert "4" in proc.stdout
    status, body = await http("DELETE", f"{url}/v1/constraints/hv01/hv02?interface=eth1")
    assert status == 404 and "does not name 'eth1'" in body["message"]
    status, body = await http("DELETE", f"{url}/v1/constraints/hv01/hv02")
    assert status == 200 and body["constraints"] == [
        {"client": "hv01", "server": "hv03", "interfaces": ["rdma0", 6]}
    ]
    status, body = await http("DELETE", f"{url}/v1/constraints/hv01/hv02")
    assert status == 404
    status, plan = await http("GET", f"{url}/v1/plan?client=hv01&server=hv02")
    assert plan["class"] == "rdma" and plan["applied"]["constraint"] is None
    proc = cli(nats_server.url, "constraint", "remove", "--client", "hv01", "--server", "hv03")
    assert proc.returncode == 0 and "hv01 has no constraints left" in proc.stdout
    # The last one gone, the key is deleted.
    constraints = await nc.jetstream().key_value(subjects.CONSTRAINTS_BUCKET)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await constraints.get("hv01")


async def test_two_instances_change_one_key_without_losing_a_change(
    nats_server: NatsServer, nc: Client, services: list[Service]
) -> None:
    """Concurrent adds through two selectors to one client's key: compare-and-swap keeps them all."""
    kv = await inventory_bucket(nc)
    await kv.put("hv01", inventory("hv01", seed(1)))
    first = selector(nats_server.url, host="sel1").start(wait_listening=60)
    second = selector(nats_server.url, host="sel2").start(wait_listening=60)
    services += [first, second]
    for service in (first, second):
        await until(lambda s=service: ready(s), 10, "ready")

    servers = [f"srv{i:02d}" for i in range(24)]
    results = await asyncio.gather(
        *(
            http(
                "POST",
                f"{(first, second)[i % 2].url}/v1/constraints",
                {"client": "hv01", "server": server, "interfaces": ["eth1"]},
            )
            for i, server in enumerate(servers)
        )
    )
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200]
    constraints = await nc.jetstream().key_value(subjects.CONSTRAINTS_BUCKET)
    stored = msgpack.unpackb((await constraints.get("hv01")).value)
    assert sorted(c["server"] for c in stored["body"]["constraints"]) == servers
    # Each instance's view converges on the same list (its watcher follows the other's writes).
    for service in (first, second):

        async def complete(s: Service = service) -> bool:
            _, body = await http("GET", f"{s.url}/v1/constraints?client=hv01")
            return len(body["constraints"]) == len(servers)

        await until(complete, 5, "both instances see every constraint")
    conflicts = 0.0
    for s in (first, second):
        for line in (await _text(f"{s.url}/metrics")).splitlines():
            if line.startswith("ferry_selector_cas_conflicts_total"):
                conflicts += float(line.split()[-1])
    print(f"{len(servers)} concurrent adds through two instances: {conflicts:.0f} compare-and-swap retries")


async def test_migration_networks_kept_in_nats_across_restarts(
    nats_server: NatsServer, nc: Client, services: list[Service]
) -> None:
    kv = await inventory_bucket(nc)
    await kv.put("hv01", inventory("hv01", seed(1)))
    await kv.put("hv02", inventory("hv02", seed(2)))
    # A newer service already keeps its own section in hv01's settings.
    js = nc.jetstream()
    settings = await js.create_key_value(bucket=subjects.HOST_SETTINGS_BUCKET, history=5)
    await settings.put(
        "hv01",
        msgpack.packb(
            {"schema": "ferry.host-settings", "v": 1, "body": {"host": "hv01", "vm_migration": {"slots": 2}}}
        ),
    )
    service = selector(nats_server.url).start(wait_listening=60)
    services.append(service)
    await until(lambda: ready(service), 10, "ready")
    url = service.url

    status, body = await http("GET", f"{url}/v1/hosts/hv01/migration-networks")
    assert status == 200 and body == {
        "host": "hv01",
        "configured": False,
        "networks": [],
        "use_any_network": True,
    }
    status, body = await http(
        "PUT",
        f"{url}/v1/hosts/hv01/migration-networks",
        {"networks": [{"subnet": "10.0.2.9/24", "priority": 1}, {"subnet": "10.0.1.0/24", "priority": 2}]},
    )
    assert status == 200, body
    assert body["networks"] == [
        {"subnet": "10.0.2.0/24", "priority": 1},
        {"subnet": "10.0.1.0/24", "priority": 2},
    ]
    status, body = await http(
        "PUT", f"{url}/v1/hosts/hv01/migration-networks", {"networks": [{"subnet": "x"}]}
    )
    assert status == 400 and "subnet" in body["message"]
    status, body = await http("PUT", f"{url}/v1/hosts/bad%20host/migration-networks", {"networks": []})
    assert status == 400
    stored = HOST_SETTINGS.decode((await settings.get("hv01")).value)
    assert stored.extra_fields() == {"vm_migration": {"slots": 2}}  # kept through the change

    proc = cli(
        nats_server.url,
        "host",
        "migration-networks",
        "set",
        "hv02",
        "-n",
        "10.0.2.0/24",
        "-n",
        "10.0.4.0/24:1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "10.0.2.0/24 (priority 0), 10.0.4.0/24 (priority 1)" in proc.stdout

    # A new instance finds everything in NATS.
    assert service.stop() == 0
    service = selector(nats_server.url).start(wait_listening=60)
    services.append(service)
    await until(lambda: ready(service), 10, "ready again")
    status, plan = await http("GET", f"{service.url}/v1/plan?client=hv01&server=hv02&purpose=migration")
    assert [(c["local_name"], c["remote_name"]) for c in plan["channels"]] == [("eth2", "eth2")]
    assert plan["migration_priority"] == 1
    assert [n["subnet"] for n in plan["applied"]["server_migration"]["networks"]] == [
        "10.0.2.0/24",
        "10.0.4.0/24",
    ]
    proc = cli(nats_server.url, "host", "migration-networks", "show", "hv01", "--json")
    assert json.loads(proc.stdout)["configured"] is True

    # Cleared: the default (any network) again, and the other section still there.
    proc = cli(nats_server.url, "host", "migration-networks", "clear", "hv01")
    assert proc.returncode == 0 and "not set: the selector's default" in proc.stdout
    stored = HOST_SETTINGS.decode((await settings.get("hv01")).value)
    assert stored.migration is None and stored.extra_fields() == {"vm_migration": {"slots": 2}}
    proc = cli(nats_server.url, "host", "migration-networks", "set", "hv01")
    assert proc.returncode == 2


async def test_no_selector_running(nats_server: NatsServer) -> None:
    proc = cli(nats_server.url, "plan", "--client", "a", "--server", "b")
    assert proc.returncode == 1 and "no selector service answers on ferry.selector.plan" in proc.stderr
    proc = cli(nats_server.url, "plan", "--client", "a b", "--server", "b")
    assert proc.returncode == 2 and "client" in proc.stderr
