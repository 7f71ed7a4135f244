"""For the selector's tests: inventories as discovery publishes them, and selector processes."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import aiohttp
from ferry_hostnet import INVENTORY, Address, Interface, Inventory

from tests.support.procs import VENV_BIN, Service

G = 10**9


def iface(
    name: str,
    index: int,
    address: str | None,
    *,
    speed: int = 10 * G,
    queues: int = 8,
    rdma: str | None = None,
    pfc: bool | None = None,
    up: bool = True,
) -> Interface:
    addresses = []
    if address is not None:
        ip = ipaddress.ip_interface(address)
        addresses.append(Address(family=ip.version, address=str(ip.ip), prefix_len=ip.network.prefixlen))
    return Interface(
        name=name,
        ifindex=index,
        mtu=9000,
        oper_state="up" if up else "down",
        admin_up=up,
        addresses=addresses,
        speed_bps=speed,
        rx_queues=queues,
        rss_capable=queues > 1,
        rdma_kind=rdma,  # type: ignore[arg-type]
        pfc_enabled=pfc,
    )


#: The seed host: 1 Gb RSS, 2 x 10 Gb RSS, 10 Gb RoCE (PFC on), 10 Gb iWARP; subnet 10.0.<i>.0/24 each.
SEED: dict[str, dict[str, Any]] = {
    "eth0": {"index": 2, "speed": 1 * G},
    "eth1": {"index": 3},
    "eth2": {"index": 4},
    "rdma0": {"index": 5, "rdma": "roce", "pfc": True},
    "rdma1": {"index": 6, "rdma": "iwarp"},
}


def seed(last: int, **changes: dict[str, Any]) -> list[Interface]:
    """The seed host with address 10.0.<i>.<last> on interface i, ``changes`` per interface."""
    out = []
    for subnet, (name, options) in enumerate(SEED.items()):
        merged = {**options, **changes.get(name, {})}
        index = int(merged.pop("index"))
        out.append(iface(name, index, f"10.0.{subnet}.{last}/24", **merged))
    return out


def inventory(host: str, interfaces: list[Interface]) -> bytes:
    return INVENTORY.encode(Inventory(host=host, interfaces=interfaces, collected_at=time.time()))


def selector(nats_url: str, host: str = "sel", http_host: str = "127.0.0.1", **extra_env: str) -> Service:
    """A ``ferry-selector`` process (not started)."""
    env = {
        "FERRY_HOST__NAME": host,
        "FERRY_NATS__URL": nats_url,
        "FERRY_NATS__RECONNECT_WAIT": "0.2",
        "FERRY_NATS__CONNECT_TIMEOUT": "1",
        "FERRY_HTTP__HOST": http_host,
        "FERRY_HTTP__PORT": "0",
        "FERRY_SELECTOR__RETRY_INTERVAL": "0.2",
        "FERRY_LOGGING__FORMAT": "json",
        **extra_env,
    }
    return Service([str(VENV_BIN / "ferry-selector")], env=env)


async def http(method: str, url: str, body: object | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r,
    ):
        return r.status, await r.json(content_type=None)
