"""The inventory of a namespace built here matches what the kernel says (ip -j addr, sysfs)."""

from __future__ import annotations

import json

from tests.support.netns import Lab, Namespace
from tests.support.procs import VENV_BIN


def build_host(ns: Namespace) -> None:
    # Pair 1: up, addresses, four receive queues on each end.
    ns.ip("link", "add", "fast0", "numrxqueues", "4", "numtxqueues", "4", "type", "veth",
          "peer", "name", "fast0p", "numrxqueues", "4", "numtxqueues", "4")  # fmt: skip
    ns.ip("addr", "add", "198.18.10.1/24", "dev", "fast0")
    ns.ip("addr", "add", "2001:db8:10::1/64", "dev", "fast0", "nodad")
    ns.ip("link", "set", "fast0", "mtu", "9000")
    ns.ip("link", "set", "fast0p", "mtu", "9000")
    ns.ip("link", "set", "fast0", "up")
    ns.ip("link", "set", "fast0p", "up")
    # Pair 2: one RX queue, an address, left down.
    ns.ip("link", "add", "slow0", "type", "veth", "peer", "name", "slow0p")
    ns.ip("addr", "add", "198.18.11.1/25", "dev", "slow0")


def kernel_view(ns: Namespace) -> dict[str, dict[str, object]]:
    """What ip(8) and sysfs say about each interface, independently of Ferry's code."""
    view: dict[str, dict[str, object]] = {}
    for link in ns.ip_json("addr", "show"):
        name = link["ifname"]
        if name == "lo":
            continue
        queues = ns.run(["ls", f"/sys/class/net/{name}/queues"], check=True).stdout.split()
        speed = ns.run(["cat", f"/sys/class/net/{name}/speed"], check=False)
        view[name] = {
            "ifindex": link["ifindex"],
            "mac": link["address"],
            "mtu": link["mtu"],
            "oper_state": link["operstate"].lower(),
            "admin_up": "UP" in link["flags"],
            "addresses": sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])),
            "rx_queues": sum(1 for q in queues if q.startswith("rx-")),
            "speed_bps": int(speed.stdout) * 1_000_000
            if speed.returncode == 0 and int(speed.stdout) > 0
            else None,
        }
    return view


def test_inventory_matches_kernel(lab: Lab) -> None:
    ns = lab.add_namespace("inv")
    build_host(ns)
    proc = ns.run([str(VENV_BIN / "ferry"), "interfaces", "--json"], check=True)
    inventory = json.loads(proc.stdout)
    ours = {
        i["name"]: {
            "ifindex": i["ifindex"],
            "mac": i["mac"],
            "mtu": i["mtu"],
            "oper_state": i["oper_state"],
            "admin_up": i["admin_up"],
            "addresses": sorted(f"{a['address']}/{a['prefix_len']}" for a in i["addresses"]),
            "rx_queues": i["rx_queues"],
            "speed_bps": i["speed_bps"],
        }
        for i in inventory["interfaces"]
    }
    assert ours == kernel_view(ns)
    # The facts the test built, stated plainly.
    by_name = {i["name"]: i for i in inventory["interfaces"]}
    assert set(by_name) == {"fast0", "fast0p", "slow0", "slow0p"}
    assert by_name["fast0"]["rx_queues"] == 4 and by_name["fast0"]["rss_capable"] is True
    assert by_name["slow0"]["rx_queues"] == 1 and by_name["slow0"]["rss_capable"] is False
    assert by_name["slow0"]["oper_state"] == "down" and by_name["slow0"]["admin_up"] is False
    assert by_name["fast0"]["oper_state"] == "up" and by_name["fast0"]["mtu"] == 9000
    assert by_name["fast0"]["kind"] == "veth"
    assert by_name["slow0"]["addresses"] == [
        {"family": 4, "address": "198.18.11.1", "prefix_len": 25, "scope": "global"}
    ]
    assert {"family": 6, "address": "2001:db8:10::1", "prefix_len": 64, "scope": "global"} in by_name[
        "fast0"
    ]["addresses"]
    # veth has no RDMA device, so none is reported and PFC is not applicable.
    assert all(i["rdma_kind"] is None and i["pfc_enabled"] is None for i in inventory["interfaces"])


def test_loopback_only_with_all(lab: Lab) -> None:
    ns = lab.add_namespace("lo")
    without = json.loads(ns.run([str(VENV_BIN / "ferry"), "interfaces", "--json"], check=True).stdout)
    with_all = json.loads(
        ns.run([str(VENV_BIN / "ferry"), "interfaces", "--json", "--all"], check=True).stdout
    )
    assert without["interfaces"] == []
    assert [i["name"] for i in with_all["interfaces"]] == ["lo"]
    assert with_all["interfaces"][0]["loopback"] is True
