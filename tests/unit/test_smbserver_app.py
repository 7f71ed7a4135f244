"""The smbserver's application in-process, without NATS: Ferry's SMB client on loopback, and
what the HTTP views, the CLI and the metrics say about it."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from ferry_cli.smbviews import render_channels, render_shares
from ferry_smbserver.app import SERVICE, create_app
from ferry_smbserver.settings import SmbServerSettings
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from smbcore.aio_client import SMBClient
from smbcore.auth import UserDatabase
from smbcore.client_errors import SMBClientError, SMBConnectionError, SMBStatusError
from smbcore.ntstatus import NTStatus

from tests.support.procs import VENV_BIN, free_port

USER, PASSWORD = "alice", "Corr3ct-Horse"


@dataclass
class App:
    http: TestClient
    smb_port: int
    data: Path


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    users = UserDatabase(tmp_path / "users.db")
    users.add_user(USER, PASSWORD)
    for name in ("data", "admin", "pub"):
        (tmp_path / name).mkdir()
    settings = SmbServerSettings.model_validate(
        {
            "host": {"name": "hv-unit"},
            # Nothing listens there: the service works without NATS (not ready, though).
            "nats": {"url": f"nats://127.0.0.1:{free_port()}", "connect_timeout": 0.2},
            "smb": {"listen": ["127.0.0.1"], "port": 0, "users": str(tmp_path / "users.db")},
            "shares": {
                "data": {"path": str(tmp_path / "data")},
                "admin$": {"path": str(tmp_path / "admin")},
                "pub": {"path": str(tmp_path / "pub"), "guest_ok": True},
            },
            "migration": {"allowed_roots": [str(tmp_path / "vms")]},
            "advertise": {"source": "kernel", "include_loopback": True},
        }
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        port = client.app[SERVICE].listening[0][1]
        yield App(client, port, tmp_path / "data")
    finally:
        await client.close()


async def get(app: App, path: str, status: int = 200) -> Any:
    response = await app.http.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def metrics(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await app.http.get("/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_shares_hidden_only_when_asked(app: App) -> None:
    names = [s["name"] for s in (await get(app, "/v1/shares"))["shares"]]
    assert names == ["data", "IPC$", "pub"]
    shares = {s["name"]: s for s in (await get(app, "/v1/shares?hidden=1"))["shares"]}
    assert set(shares) == {"admin$", "data", "pub", "IPC$"}
    assert {n for n, s in shares.items() if s["guest_ok"]} == {"pub", "IPC$"}
    assert shares["admin$"]["hidden"] and not shares["admin$"]["migration"]
    assert shares["data"]["path"] == str(app.data) and shares["data"]["users"] is None
    assert (await get(app, "/v1/shares/ADMIN$"))["name"] == "admin$"
    await get(app, "/v1/shares/nope", 404)
    assert (await get(app, "/v1/migration-shares")) == {"shares": []}


async def test_an_anonymous_session_is_shown_as_such(app: App) -> None:
    smbclient = await asyncio.create_subprocess_exec(
        "smbclient", "//127.0.0.1/pub", "-p", str(app.smb_port), "-U", "%", "--configfile=/dev/null",
        "-m", "SMB3", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert smbclient.stdin is not None and smbclient.stdout is not None
    try:
        for _ in range(100):
            sessions = (await get(app, "/v1/sessions"))["sessions"]
            if sessions and sessions[0]["shares"]:
                break
            await asyncio.sleep(0.1)
        (view,) = sessions
        assert view["kind"] == "anonymous" and view["user"] is None and view["shares"] == ["pub"]
        assert not view["signing_required"] and not view["encrypt_data"]
    finally:
        smbclient.stdin.write(b"exit\n")
        await smbclient.stdin.drain()
        output = await asyncio.wait_for(smbclient.stdout.read(), 30)
        await smbclient.wait()
    assert smbclient.returncode == 0, output


async def test_sessions_channels_and_close(app: App) -> None:
    payload = bytes(range(256)) * 400
    client = await SMBClient.connect("127.0.0.1", app.smb_port)
    try:
        session = await client.login(USER, PASSWORD)
        tree = await session.connect_tree("data")
        f = await tree.open("file.bin", "w+")
        await f.write(0, payload)
        assert await f.read(0, len(payload)) == payload
        with pytest.raises(SMBStatusError) as err:
            await tree.open("missing.bin", "r")
        assert err.value.status == NTStatus.OBJECT_NAME_NOT_FOUND

        (view,) = (await get(app, "/v1/sessions"))["sessions"]
        assert view["user"] == USER and view["kind"] == "user" and view["client_address"] == "127.0.0.1"
        assert view["dialect"] == "3.1.1" and view["signing_required"]
        assert view["channels"] == 1 and view["opens"] == 1 and view["shares"] == ["data"]
        assert view["session_id_hex"] == f"0x{view['session_id']:016x}"

        (channel,) = (await get(app, "/v1/channels"))["channels"]
        assert channel["session_id"] == view["session_id"] and channel["user"] == USER
        assert channel["server_address"] == "127.0.0.1" and channel["server_port"] == app.smb_port
        assert channel["client_address"] == "127.0.0.1" and channel["client_port"] > 0
        assert channel["server_interface"] == "lo" and channel["server_interface_index"] == 1
        assert channel["bytes_received"] > len(payload) and channel["bytes_sent"] > len(payload)
        assert channel["transport"] == "tcp" and channel["client_interface_index"] is None
        assert (await get(app, f"/v1/channels?session={view['session_id_hex']}"))["channels"] == [channel]
        assert (await get(app, "/v1/channels?session=12345"))["channels"] == []
        await get(app, "/v1/channels?session=bogus", 400)

        # The CLI shows the same (it runs in another process: let the loop serve it meanwhile).
        url = str(app.http.make_url("")).rstrip("/")
        cli = await asyncio.to_thread(
            subprocess.run,
            [str(VENV_BIN / "ferry"), "smbserver", "channels", "--url", url, "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["channels"][0]["session_id"] == view["session_id"]
        table = await asyncio.to_thread(
            subprocess.run, [str(VENV_BIN / "ferry"), "smbserver", "sessions", "--url", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        assert USER in table.stdout and "3.1.1" in table.stdout
        out = io.StringIO()
        render_channels(await get(app, "/v1/channels"), Console(file=out, width=200))
        render_shares(await get(app, "/v1/shares?hidden=1"), Console(file=out, width=200))
        assert "127.0.0.1" in out.getvalue() and "admin$" in out.getvalue()

        samples = await metrics(app)
        labels = (("direction", "written"), ("kind", "configured"), ("share", "data"))
        assert samples[("ferry_smbserver_share_bytes_total", labels)] == len(payload)
        labels = (("direction", "read"), ("kind", "configured"), ("share", "data"))
        assert samples[("ferry_smbserver_share_bytes_total", labels)] == len(payload)
        assert samples[("ferry_smbserver_request_duration_seconds_count", (("command", "WRITE"),))] >= 1
        missing = (("command", "CREATE"), ("status", "STATUS_OBJECT_NAME_NOT_FOUND"))
        assert samples[("ferry_smbserver_errors_total", missing)] == 1
        assert samples[("ferry_smbserver_sessions", ())] == 1
        assert samples[("ferry_smbserver_channels", ())] == 1
        assert samples[("ferry_smbserver_opens", ())] == 1
        sent = samples[
            ("ferry_smbserver_interface_bytes_total", (("direction", "sent"), ("interface", "lo")))
        ]
        assert sent == channel["bytes_sent"] or sent > len(payload)

        # Close-SmbSession: the session and its open go, and the connection it alone used.
        cli = await asyncio.to_thread(
            subprocess.run,
            [str(VENV_BIN / "ferry"), "smbserver", "close-session", str(view["session_id"]), "--url", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert "closed (1 connection closed)" in cli.stdout
        assert (await get(app, "/v1/sessions"))["sessions"] == []
        with pytest.raises((SMBConnectionError, SMBStatusError)):
            await f.read(0, 10)
    finally:
        await client.close()
    missing_session = await app.http.delete("/v1/sessions/0x99")
    assert missing_session.status == 404
    gone = await asyncio.to_thread(
        subprocess.run,
        [str(VENV_BIN / "ferry"), "smbserver", "close-session", "0x99", "--url", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert gone.returncode == 1 and "no session 0x99" in gone.stderr


def count(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_core_answered_requests_are_timed_and_their_failures_counted(app: App) -> None:
    """NEGOTIATE, SESSION_SETUP and TREE_CONNECT never reach the file service: smbcore's
    request hook times them, and counts a refused logon and a denied tree connect."""
    errors, duration = "ferry_smbserver_errors_total", "ferry_smbserver_request_duration_seconds_count"
    before = await metrics(app)
    client = await SMBClient.connect("127.0.0.1", app.smb_port)
    try:
        with pytest.raises(SMBClientError) as refused:
            await client.login(USER, "wrong password")
        assert getattr(refused.value, "status", NTStatus.LOGON_FAILURE) == NTStatus.LOGON_FAILURE
        session = await client.login(USER, PASSWORD)
        with pytest.raises(SMBStatusError) as denied:
            await session.connect_tree("nope")
        assert denied.value.status == NTStatus.BAD_NETWORK_NAME
        await session.connect_tree("data")
    finally:
        await client.close()
    after = await metrics(app)

    def delta(name: str, **labels: str) -> float:
        return count(after, name, **labels) - count(before, name, **labels)

    assert delta(errors, command="SESSION_SETUP", status="STATUS_LOGON_FAILURE") == 1
    assert delta(errors, command="TREE_CONNECT", status="STATUS_BAD_NETWORK_NAME") == 1
    # Each logon's first round trip is a step, not a failure.
    assert delta(errors, command="SESSION_SETUP", status="STATUS_MORE_PROCESSING_REQUIRED") == 0
    assert delta(duration, command="NEGOTIATE") == 1
    assert delta(duration, command="SESSION_SETUP") == 4  # two logons, two legs each
    assert delta(duration, command="TREE_CONNECT") == 2
    buckets = {
        labels: value
        for (name, labels), value in after.items()
        if name == "ferry_smbserver_request_duration_seconds_bucket" and ("command", "NEGOTIATE") in labels
    }
    assert buckets[(("command", "NEGOTIATE"), ("le", "+Inf"))] >= 1


async def test_a_short_connection_counts_in_full_per_interface(app: App) -> None:
    """A connection that ends between two samples: its final counters, from smbcore's
    connection-closed hook, are in the interface's totals."""
    service = app.http.app[SERVICE]
    server = service.server
    ended: list[tuple[int, int]] = []
    told = server.settings.on_connection_closed
    assert told is not None

    def spy(shell: Any) -> None:
        told(shell)
        ended.append((shell.conn.bytes_sent, shell.conn.bytes_received))

    server.settings.on_connection_closed = spy
    before = await metrics(app)
    client = await SMBClient.connect("127.0.0.1", app.smb_port)
    try:
        await client.login(USER, PASSWORD)
    finally:
        await client.close()
    for _ in range(200):
        if ended and not server.connections:
            break
        await asyncio.sleep(0.01)
    ((sent, received),) = ended
    assert sent > 0 and received > 0
    after = await metrics(app)
    name = "ferry_smbserver_interface_bytes_total"
    for direction, moved in (("sent", sent), ("received", received)):
        grew = count(after, name, interface="lo", direction=direction) - count(
            before, name, interface="lo", direction=direction
        )
        assert grew == moved


async def test_closing_a_session_through_the_api(app: App) -> None:
    """DELETE /v1/sessions/{id}: smbcore's close_session ends the session on its connection,
    closes the connection it alone used and the API says how many."""
    client = await SMBClient.connect("127.0.0.1", app.smb_port)
    try:
        session = await client.login(USER, PASSWORD)
        tree = await session.connect_tree("data")
        f = await tree.open("held.bin", "w+")
        (view,) = (await get(app, "/v1/sessions"))["sessions"]
        assert view["opens"] == 1
        response = await app.http.delete(f"/v1/sessions/{view['session_id_hex']}")
        assert response.status == 200
        assert await response.json() == {"session_id": view["session_id"], "closed_connections": 1}
        assert (await get(app, "/v1/sessions"))["sessions"] == []
        assert (await get(app, "/v1/shares/data"))["opens"] == 0
        with pytest.raises((SMBConnectionError, SMBStatusError)):
            await f.read(0, 10)
        server = app.http.app[SERVICE].server
        for _ in range(200):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
    finally:
        await client.close()
    assert (await app.http.delete(f"/v1/sessions/{view['session_id']}")).status == 404


async def test_readiness_and_openapi(app: App) -> None:
    response = await app.http.get("/readyz")
    body = await response.json()
    assert response.status == 503  # no NATS
    assert body["checks"]["smb"]["ok"] and not body["checks"]["nats"]["ok"]
    assert not body["checks"]["leases"]["ok"]
    document = await get(app, "/openapi.json")
    assert {
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/shares",
        "/v1/channels",
        "/v1/interfaces",
    } <= set(document["paths"])
    assert "delete" in document["paths"]["/v1/sessions/{session_id}"]
    interfaces = await get(app, "/v1/interfaces")
    assert interfaces["source"] == "kernel"
    assert any(i["address"] == "127.0.0.1" and i["advertised"] for i in interfaces["interfaces"])
