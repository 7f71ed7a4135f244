"""The smbserver's views of a real Multichannel session: Ferry's client opens one session over
two namespaced links (tests/support/multihost.py) to ``ferry-smbserver``; the sessions and
channels the API and the CLI report must be that session and those connections, each with its
own addresses, interface and bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from smbcore.auth import UserDatabase

from tests.conftest import require_root
from tests.support.multihost import TwoHosts, listening, two_hosts
from tests.support.procs import VENV_BIN, Service

USER, PASSWORD = "host$hv-mc", "Multi-Channel-2024"
SHARE = "data"
SMB_PORT = 445
SIZE = 24 << 20

#: Runs in the client's namespace: one Multichannel session, a file written through it, the
#: channels printed as JSON; it holds the session until told to go (a line on stdin).
CLIENT = """
import asyncio, json, os, sys
from smbcore.aio_multichannel import MultichannelClient
from ferry_cli.smb import kernel_reachability, local_interfaces

async def main(host, port, user, password, share, size):
    mc = await MultichannelClient.connect(
        host, int(port), user=user, password=password,
        local_interfaces=local_interfaces, reachable=kernel_reachability(),
    )
    try:
        tree = await mc.connect_tree(share)
        await mc.wait_for_channels(2, 20)
        data = os.urandom(int(size))
        f = await tree.open("mc.bin", "w")
        await f.write(0, data)
        await f.close()
        report = {"session_id": mc.session.session_id, "channels": [c.to_dict() for c in mc.channels]}
        print(json.dumps(report), flush=True)
        sys.stdin.readline()
    finally:
        await mc.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    require_root()
    with two_hosts(2) as made:
        yield made


def ifindexes(hosts: TwoHosts) -> dict[str, int]:
    return {link["ifname"]: link["ifindex"] for link in hosts.server.ip_json("link", "show")}


def link_speed(hosts: TwoHosts, name: str) -> int:
    """The server end's speed as its kernel reports it (veth: 10000 Mb/s), in bit/s."""
    proc = hosts.run_server(["cat", f"/sys/class/net/{name}/speed"], check=True)
    return int(proc.stdout) * 1_000_000


def cli(hosts: TwoHosts, url: str, *args: str) -> Any:
    """``ferry smbserver ... --json`` in the server's namespace (where the API listens)."""
    proc = hosts.run_server([str(VENV_BIN / "ferry"), "smbserver", *args, "--url", url, "--json"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def metrics(hosts: TwoHosts, url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's /metrics, read in the server's namespace (where the API listens)."""
    fetch = "import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1]).read().decode())"
    proc = hosts.run_server([sys.executable, "-c", fetch, f"{url}/metrics"], timeout=30)
    assert proc.returncode == 0, proc.stderr
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(proc.stdout)
        for sample in family.samples
    }


def test_views_match_a_multichannel_session_over_two_links(hosts: TwoHosts, tmp_path: Path) -> None:
    (tmp_path / SHARE).mkdir()
    UserDatabase(tmp_path / "users.db").add_user(USER, PASSWORD)
    env = {
        "FERRY_HOST__NAME": "hv-mc-server",
        "FERRY_NATS__URL": "nats://127.0.0.1:1",  # no NATS: the kernel's interfaces are advertised
        "FERRY_NATS__CONNECT_TIMEOUT": "0.2",
        "FERRY_HTTP__HOST": "127.0.0.1",
        "FERRY_HTTP__PORT": "0",
        "FERRY_SMB__PORT": str(SMB_PORT),
        "FERRY_SMB__USERS": str(tmp_path / "users.db"),
        f"FERRY_SHARES__{SHARE}__PATH": str(tmp_path / SHARE),
        "FERRY_ADVERTISE__SOURCE": "kernel",
        "FERRY_LOGGING__FORMAT": "json",
    }
    server = Service([str(VENV_BIN / "ferry-smbserver")], env=env, netns=hosts.server.name).start()
    client: subprocess.Popen[str] | None = None
    try:
        assert server.url is not None and listening(hosts.server, "0.0.0.0", SMB_PORT)
        link1, link2 = hosts.links
        client = hosts.client.popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                link1.server_address,
                str(SMB_PORT),
                USER,
                PASSWORD,
                SHARE,
                str(SIZE),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        )
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        if not line:
            client.wait(10)
            raise AssertionError(f"the client failed:\n{client.stderr.read() if client.stderr else ''}")
        report = json.loads(line)
        mine = {(c["local"], c["local_port"], c["remote"], c["remote_port"]) for c in report["channels"]}
        assert {remote for _, _, remote, _ in mine} == {link1.server_address, link2.server_address}

        (session,) = cli(hosts, server.url, "sessions")["sessions"]
        assert session["session_id"] == report["session_id"]
        assert session["user"] == USER and session["channels"] == 2
        assert session["client_address"] in {link1.client_address, link2.client_address}
        assert session["dialect"] == "3.1.1" and session["shares"] == [SHARE]

        channels = cli(hosts, server.url, "channels")["channels"]
        seen = {
            (c["client_address"], c["client_port"], c["server_address"], c["server_port"]) for c in channels
        }
        assert seen == mine  # the same connections, both ends
        index = ifindexes(hosts)
        speeds = {link.name: link_speed(hosts, link.name) for link in hosts.links}
        for channel in channels:
            link = link1 if channel["server_address"] == link1.server_address else link2
            assert channel["session_id"] == report["session_id"]
            assert channel["server_interface"] == link.name
            assert channel["server_interface_index"] == index[link.name]
            assert channel["server_link_speed_bps"] == speeds[link.name]
            assert channel["server_interface_advertised"] is True
            assert channel["server_rdma_capable"] is False and channel["transport"] == "tcp"
        # Both channels carried the file's WRITEs; together at least all of it.
        received = [c["bytes_received"] for c in channels]
        assert all(r > SIZE // 8 for r in received), received
        assert sum(received) >= SIZE
        assert (tmp_path / SHARE / "mc.bin").stat().st_size == SIZE

        # Closing the session from the API ends both channels.
        closed = cli(hosts, server.url, "close-session", str(report["session_id"]))
        assert closed["closed_connections"] == 2
        assert cli(hosts, server.url, "sessions")["sessions"] == []

        # Each link's interface counted at least its channel's bytes (the final counters come
        # from smbcore's connection-closed hook); the core's answers are timed per command.
        samples = metrics(hosts, server.url)
        for channel in channels:
            link = link1 if channel["server_address"] == link1.server_address else link2
            labels = (("direction", "received"), ("interface", link.name))
            assert samples[("ferry_smbserver_interface_bytes_total", labels)] >= channel["bytes_received"]
        for command in ("NEGOTIATE", "SESSION_SETUP", "TREE_CONNECT", "IOCTL", "WRITE"):
            assert samples[("ferry_smbserver_request_duration_seconds_count", (("command", command),))] >= 1
        assert not any(
            name == "ferry_smbserver_errors_total" and ("command", "SESSION_SETUP") in labels
            for name, labels in samples
        )
    finally:
        if client is not None:
            if client.stdin is not None:
                client.stdin.close()
            try:
                client.wait(20)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        server.stop()
