"""The seed's scenarios through the real selector: inventories published by real discovery
instances in network namespaces, plans read over HTTP and over NATS.

Each scenario has its own pair of hosts (namespaces): a client and a server joined by five veth
pairs with four queues each (RSS), one subnet per pair (10.0.<i>.1 and .2/24), named and set
up like the seed: eth0 1 Gb, eth1 and eth2 10 Gb, rdma0 10 Gb RoCE with PFC, rdma1 10 Gb
iWARP (speeds and RDMA from discovery's operator overrides, as veths have none). Every host
also has ``uplink``, a one-queue veth to the bridge where nats-server listens, so it is a
10 Gb non-RSS interface on one shared subnet and appears in every plan.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
import pytest
from ferry_hostnet import INVENTORY
from ferry_hostnet.selector_api import PLAN, PLAN_REQUEST, PlanRequest
from ferry_runtime import subjects
from nats.aio.client import Client
from smbcore.selection import Constraint, MigrationNetwork, MigrationSettings, Purpose, nic_from_inventory
from smbcore.selection import select_channels as smbcore_select

from tests.conftest import require_root
from tests.support.netns import Lab, Namespace
from tests.support.procs import VENV_BIN, NatsServer, Service
from tests.support.selector import http, selector

LINKS = ("eth0", "eth1", "eth2", "rdma0", "rdma1")
SEED_OVERRIDES: dict[str, dict[str, str]] = {
    "eth0": {"SPEED": "1G"},
    "rdma0": {"RDMA": "roce", "PFC": "true"},
    "rdma1": {"RDMA": "iwarp"},
}
NO_RDMA = {"rdma0": {"RDMA": "none"}, "rdma1": {"RDMA": "none"}}

TC, SC, UR, CO = "type_class", "speed_class", "unreachable", "constrained_out"
NMN, MP, RWP = "not_migration_network", "migration_priority", "roce_without_pfc"
PICKED = None


@dataclass
class Scenario:
    #: discovery overrides on top of the seed's: interface -> {KEY: value}
    client: dict[str, dict[str, str]]
    server: dict[str, dict[str, str]]
    #: (local, remote, transport, connections), in plan order
    channels: list[tuple[str, str, str, int]]
    local: dict[str, str | None]
    remote: dict[str, str | None]
    purpose: str = "smb"
    #: the client's constraint for the server (``"@eth2"`` is eth2's ifindex, read from its inventory)
    constraint: list[str] | None = None
    migration: list[dict[str, Any]] | None = None
    warnings: int = 0


SCENARIOS: dict[str, Scenario] = {
    "seed": Scenario(
        {},
        {},
        [("rdma0", "rdma0", "rdma", 2), ("rdma1", "rdma1", "rdma", 2)],
        {"eth0": TC, "eth1": TC, "eth2": TC, "rdma0": PICKED, "rdma1": PICKED, "uplink": TC},
        {"eth0": TC, "eth1": TC, "eth2": TC, "rdma0": PICKED, "rdma1": PICKED, "uplink": TC},
    ),
    "rdma-disabled": Scenario(
        NO_RDMA,
        {},
        [(n, n, "tcp", 4) for n in ("eth1", "eth2", "rdma0", "rdma1")],
        {"eth0": SC, "eth1": PICKED, "eth2": PICKED, "rdma0": PICKED, "rdma1": PICKED, "uplink": TC},
        {"eth0": SC, "eth1": PICKED, "eth2": PICKED, "rdma0": PICKED, "rdma1": PICKED, "uplink": TC},
    ),
    "constraint": Scenario(
        {},
        {},
        [("eth1", "eth1", "tcp", 4), ("eth2", "eth2", "tcp", 4)],
        {"eth0": CO, "eth1": PICKED, "eth2": PICKED, "rdma0": CO, "rdma1": CO, "uplink": CO},
        {"eth0": UR, "eth1": PICKED, "eth2": PICKED, "rdma0": UR, "rdma1": UR, "uplink": UR},
        constraint=["eth1", "@eth2"],
    ),
    "mixed-speeds": Scenario(
        {**NO_RDMA, "eth2": {"SPEED": "25G"}},
        {**NO_RDMA, "eth2": {"SPEED": "25G"}},
        [("eth2", "eth2", "tcp", 4)],
        {"eth0": SC, "eth1": SC, "eth2": PICKED, "rdma0": SC, "rdma1": SC, "uplink": TC},
        {"eth0": SC, "eth1": SC, "eth2": PICKED, "rdma0": SC, "rdma1": SC, "uplink": TC},
    ),
    "migration-networks": Scenario(
        {},
        {},
        [("eth2", "eth2", "tcp", 4)],
        {"eth0": NMN, "eth1": MP, "eth2": PICKED, "rdma0": NMN, "rdma1": NMN, "uplink": NMN},
        {"eth0": UR, "eth1": UR, "eth2": PICKED, "rdma0": UR, "rdma1": UR, "uplink": UR},
        purpose="migration",
        migration=[{"subnet": "10.0.2.0/24", "priority": 1}, {"subnet": "10.0.1.0/24", "priority": 2}],
    ),
    "roce-without-pfc": Scenario(
        {"rdma0": {"RDMA": "roce", "PFC": ""}},  # no PFC override: veths have no DCB, so unknown
        {},
        [("rdma1", "rdma1", "rdma", 2)],
        {"eth0": TC, "eth1": TC, "eth2": TC, "rdma0": RWP, "rdma1": PICKED, "uplink": TC},
        {"eth0": TC, "eth1": TC, "eth2": TC, "rdma0": TC, "rdma1": PICKED, "uplink": TC},
    ),
}


@dataclass
class Pair:
    client: str
    server: str
    client_ns: Namespace
    server_ns: Namespace


@dataclass
class World:
    lab: Lab
    nats: NatsServer
    selector: Service
    pairs: dict[str, Pair] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)


def link_pairs(client: Namespace, server: Namespace) -> None:
    for i, name in enumerate(LINKS):
        client.ip(
            "link", "add", name, "numrxqueues", "4", "numtxqueues", "4", "type", "veth",
            "peer", "name", name, "netns", server.name, "numrxqueues", "4", "numtxqueues", "4",
        )  # fmt: skip
        for ns, last in ((client, 1), (server, 2)):
            ns.ip("addr", "add", f"10.0.{i}.{last}/24", "dev", name)
            ns.ip("link", "set", name, "up")


def discovery(
    host: str, ns: Namespace, address: str, nats_url: str, overrides: dict[str, dict[str, str]]
) -> Service:
    env = {
        "FERRY_HOST__NAME": host,
        "FERRY_NATS__URL": nats_url,
        "FERRY_NATS__RECONNECT_WAIT": "0.2",
        "FERRY_HTTP__HOST": address,
        "FERRY_HTTP__PORT": "0",
        "FERRY_DISCOVERY__REFRESH_INTERVAL": "2",
        "FERRY_DISCOVERY__INVENTORY_TTL": "30",
        "FERRY_DISCOVERY__DEBOUNCE": "0.05",
        "FERRY_LOGGING__FORMAT": "json",
    }
    for name in LINKS:
        merged = {**SEED_OVERRIDES.get(name, {}), **overrides.get(name, {})}
        for key, value in merged.items():
            if value:
                env[f"FERRY_INTERFACES__{name}__{key}"] = value
    return Service([str(VENV_BIN / "ferry-discovery")], env=env, netns=ns.name)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_root()
    lab = Lab()
    services: list[Service] = []
    server: NatsServer | None = None
    try:
        lab.setup_bridge()
        server = NatsServer(tmp_path_factory.mktemp("selector-nats"), host=lab.gateway).start()
        pairs: dict[str, Pair] = {}
        for key, scenario in SCENARIOS.items():
            client_ns, client_address = lab.add_host(f"{key[:6]}c")
            server_ns, server_address = lab.add_host(f"{key[:6]}s")
            link_pairs(client_ns, server_ns)
            pair = Pair(f"{key}-c-{lab.tag}", f"{key}-s-{lab.tag}", client_ns, server_ns)
            pairs[key] = pair
            for host, ns, address, overrides in (
                (pair.client, client_ns, client_address, scenario.client),
                (pair.server, server_ns, server_address, scenario.server),
            ):
                services.append(discovery(host, ns, address, server.url, overrides).start(wait_listening=0))
        sel = selector(server.url, FERRY_SELECTOR__ROCE_WITHOUT_PFC="exclude").start(wait_listening=0)
        services.append(sel)
        # Thirteen Python processes starting at once on a small machine: give them time.
        deadline = time.monotonic() + 90
        for service in services:
            while service.url is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert service.url is not None, f"{service.argv[0]} did not start listening:\n{service.text}"
        yield World(lab, server, sel, pairs, services)
    finally:
        for service in services:
            service.stop()
        if server is not None:
            server.stop()
        lab.teardown()


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.fixture
async def loaded(world: World) -> World:
    """Every host's inventory held by the selector, each with its five links and uplink."""
    names = {h for p in world.pairs.values() for h in (p.client, p.server)}

    async def all_in() -> bool:
        status, body = await http("GET", f"{world.selector.url}/v1/hosts")
        if status != 200:
            return False
        held = {h["host"]: h["interfaces"] for h in body["hosts"]}
        return all(held.get(n) == len(LINKS) + 1 for n in names)

    await until(all_in, 60, "every inventory in the selector")
    return world


@pytest.fixture
async def nc(world: World) -> AsyncIterator[Client]:
    client = await nats.connect(world.nats.url)
    try:
        yield client
    finally:
        await client.close()


async def inventory_nics(nc: Client, host: str) -> tuple[Any, ...]:
    kv = await nc.jetstream().key_value(subjects.INVENTORY_BUCKET)
    inventory = INVENTORY.decode((await kv.get(host)).value)
    return tuple(nic_from_inventory(i.model_dump(mode="json")) for i in inventory.interfaces)


def summary(plan: dict[str, Any]) -> tuple[list[tuple[str, str, str, int]], dict[str, Any], dict[str, Any]]:
    channels = [
        (c["local_name"], c["remote_name"], c["transport"], c["connections"]) for c in plan["channels"]
    ]
    local = {d["name"]: d["reason"] for d in plan["decisions"] if d["side"] == "local"}
    remote = {d["name"]: d["reason"] for d in plan["decisions"] if d["side"] == "remote"}
    return channels, local, remote


@pytest.mark.parametrize("key", SCENARIOS)
async def test_scenario_over_http_and_nats(key: str, loaded: World, nc: Client) -> None:
    scenario = SCENARIOS[key]
    pair = loaded.pairs[key]
    url = loaded.selector.url
    client_nics = await inventory_nics(nc, pair.client)
    server_nics = await inventory_nics(nc, pair.server)

    constraint: list[str | int] | None = None
    if scenario.constraint is not None:
        index = {n.name: n.index for n in client_nics}
        constraint = [index[r[1:]] if r.startswith("@") else r for r in scenario.constraint]
        status, body = await http(
            "POST",
            f"{url}/v1/constraints",
            {"client": pair.client, "server": pair.server, "interfaces": ["eth7"]},
        )
        assert status == 422 and "no interface 'eth7'" in body["message"]
        status, body = await http(
            "POST",
            f"{url}/v1/constraints",
            {"client": pair.client, "server": pair.server, "interfaces": constraint},
        )
        assert status == 200, body
    if scenario.migration is not None:
        status, body = await http(
            "PUT", f"{url}/v1/hosts/{pair.client}/migration-networks", {"networks": scenario.migration}
        )
        assert status == 200, body

    status, plan = await http(
        "GET", f"{url}/v1/plan?client={pair.client}&server={pair.server}&purpose={scenario.purpose}"
    )
    assert status == 200, plan
    channels, local, remote = summary(plan)
    print(f"\n{key}: {plan['class']} {plan['connections']} connections: {channels}")
    assert channels == scenario.channels
    assert local == scenario.local
    assert remote == scenario.remote
    assert len(plan["warnings"]) == scenario.warnings

    # Over NATS, the same plan.
    request = PlanRequest(client=pair.client, server=pair.server, purpose=scenario.purpose)  # type: ignore[arg-type]
    reply = await nc.request(subjects.SELECTOR_PLAN, PLAN_REQUEST.encode(request), timeout=5)
    assert PLAN.decode(reply.data).model_dump(mode="json", by_alias=True) == plan

    # And smbcore's rules over the inventories in KV give it too (the service adds no rule).
    expected = smbcore_select(
        client_nics,
        server_nics,
        server=pair.server,
        purpose=Purpose(scenario.purpose),
        constraints=[Constraint(pair.server, tuple(constraint))] if constraint else (),
        migration=MigrationSettings(
            tuple(MigrationNetwork(m["subnet"], m["priority"]) for m in scenario.migration)
        )
        if scenario.migration
        else None,
    ).to_dict()
    assert summary(expected) == (channels, local, remote)


async def test_roce_without_pfc_counted_and_warn_policy(loaded: World) -> None:
    pair = loaded.pairs["roce-without-pfc"]
    metrics = await _text(f"{loaded.selector.url}/metrics")
    assert "ferry_selector_roce_without_pfc_interfaces 1.0" in metrics.splitlines()
    _, hosts = await http("GET", f"{loaded.selector.url}/v1/hosts")
    flagged = {h["host"]: h["roce_without_pfc"] for h in hosts["hosts"] if h["roce_without_pfc"]}
    assert flagged == {pair.client: ["rdma0"]}

    # A selector with the warn policy uses it for RDMA, and says so.
    warn = selector(loaded.nats.url, host="warn", FERRY_SELECTOR__ROCE_WITHOUT_PFC="warn")
    warn.start(wait_listening=60)
    loaded.services.append(warn)

    async def ready() -> bool:
        return (await http("GET", f"{warn.url}/readyz"))[0] == 200

    await until(ready, 15, "warn selector ready")
    status, plan = await http("GET", f"{warn.url}/v1/plan?client={pair.client}&server={pair.server}")
    assert status == 200
    channels, local, _ = summary(plan)
    assert channels == [("rdma0", "rdma0", "rdma", 2), ("rdma1", "rdma1", "rdma", 2)]
    assert local["rdma0"] is None and plan["applied"]["roce_without_pfc"] == "warn"
    assert plan["warnings"] == [
        "local rdma0: RoCE without PFC (PFC unknown) is used for RDMA: expect losses under congestion"
    ]
    assert warn.stop() == 0


async def test_migration_falls_back_when_a_link_goes_down(loaded: World) -> None:
    """The priority-1 link goes down in the client's namespace: discovery publishes it, and the
    next migration plan uses priority 2; SMB plans ignore migration networks."""
    pair = loaded.pairs["migration-networks"]
    url = loaded.selector.url
    status, _ = await http(
        "PUT",
        f"{url}/v1/hosts/{pair.client}/migration-networks",
        {"networks": SCENARIOS["migration-networks"].migration},
    )
    assert status == 200
    status, plan = await http("GET", f"{url}/v1/plan?client={pair.client}&server={pair.server}")
    assert plan["class"] == "rdma"  # an SMB plan: migration networks do not apply
    pair.client_ns.ip("link", "set", "eth2", "down")
    try:

        async def fell_back() -> bool:
            _, plan = await http(
                "GET", f"{url}/v1/plan?client={pair.client}&server={pair.server}&purpose=migration"
            )
            return plan["migration_priority"] == 2

        await until(fell_back, 15, "migration plan on priority 2")
        _, plan = await http(
            "GET", f"{url}/v1/plan?client={pair.client}&server={pair.server}&purpose=migration"
        )
        channels, local, _ = summary(plan)
        assert channels == [("eth1", "eth1", "tcp", 4)]
        assert local["eth2"] == "down" and local["eth1"] is None
        # The CLI shows the same plan.
        proc = subprocess.run(
            [str(VENV_BIN / "ferry"), "plan", "--client", pair.client, "--server", pair.server,
             "--purpose", "migration", "--json", "--nats", loaded.nats.url],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert summary(json.loads(proc.stdout))[0] == channels
    finally:
        pair.client_ns.ip("link", "set", "eth2", "up")


async def _text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return await r.text()
