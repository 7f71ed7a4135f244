"""The smbprotocol package (an independent SMB client) against Ferry's server: negotiate,
authenticate, sign, encrypt, tree connect; and the errors it must get."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from smbcore.server import ServerPolicy
from smbprotocol import exceptions as smbexc
from smbprotocol.connection import Connection
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tests.support.smbserver import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER, RunningServer, smb_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with smb_server(tmp_path_factory.mktemp("smb")) as running:
        yield running


def connect(server: RunningServer, dialect: int = 0x0311, *, user: str = USER, password: str = PASSWORD,
            encrypt: bool = False) -> tuple[Connection, Session]:  # fmt: skip
    conn = Connection(uuid.uuid4(), server.host, server.port)
    conn.connect(dialect=dialect, timeout=10)
    session = Session(conn, user, password, require_encryption=encrypt)
    try:
        session.connect()
    except Exception:
        conn.disconnect()
        raise
    return conn, session


@pytest.mark.parametrize("dialect", [0x0300, 0x0302, 0x0311])
@pytest.mark.parametrize("encrypt", [False, True], ids=["signed", "encrypted"])
def test_session_tree_echo_logoff(server: RunningServer, dialect: int, encrypt: bool) -> None:
    conn, session = connect(server, dialect, encrypt=encrypt)
    try:
        assert conn.dialect == dialect
        assert session.signing_required or session.encrypt_data
        assert session.encrypt_data is encrypt
        tree = TreeConnect(session, rf"\\{server.host}\data")
        tree.connect()  # 3.0/3.0.2: smbprotocol also runs FSCTL_VALIDATE_NEGOTIATE_INFO here
        secret = TreeConnect(session, rf"\\{server.host}\secret")
        secret.connect()
        assert secret.encrypt_data  # the share demands encryption; smbprotocol then encrypts for it
        conn.echo(sid=session.session_id)
        secret.disconnect()
        tree.disconnect()
        session.disconnect()
    finally:
        conn.disconnect()


def test_wrong_password_unknown_user_then_still_serving(server: RunningServer) -> None:
    with pytest.raises(smbexc.LogonFailure):
        connect(server, password="wrong")
    with pytest.raises(smbexc.LogonFailure):
        connect(server, user="mallory", password="whatever")
    conn, session = connect(server, user=OTHER_USER, password=OTHER_PASSWORD)
    session.disconnect()
    conn.disconnect()


def test_unknown_share_and_share_of_another_user(server: RunningServer) -> None:
    conn, session = connect(server, user=OTHER_USER, password=OTHER_PASSWORD)
    try:
        with pytest.raises(smbexc.BadNetworkName):
            TreeConnect(session, rf"\\{server.host}\nosuchshare").connect()
        with pytest.raises(smbexc.AccessDenied):
            TreeConnect(session, rf"\\{server.host}\alice_only").connect()
    finally:
        conn.disconnect()


def test_encrypt_all_policy(tmp_path: Path) -> None:
    with smb_server(tmp_path, policy=ServerPolicy(encrypt_all=True)) as running:
        conn, session = connect(running, 0x0311)
        try:
            assert session.encrypt_data  # the server set SMB2_SESSION_FLAG_ENCRYPT_DATA
            TreeConnect(session, rf"\\{running.host}\data").connect()
        finally:
            conn.disconnect()


def _raw(server: RunningServer, payload: bytes) -> bytes:
    """Send raw bytes on a fresh connection; return what the server sends before closing."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param((64 * 1024 * 1024).to_bytes(4, "big"), id="oversized-length"),
        pytest.param(b"\x00\x00\x01\x00" + b"\xfeSMB" + bytes(20), id="truncated-pdu"),
        pytest.param(b"\x00\x00\x00\x40" + bytes(64), id="not-smb2"),
        pytest.param(b"\x00\x00\x00\x44\xfeSMB" + bytes(64), id="garbage-header"),
        pytest.param(b"\x85\x00\x00\x00", id="netbios-keepalive-type"),
        pytest.param(b"\x00\x00\x00\x23\xffSMBr" + bytes(30), id="smb1-negotiate"),
    ],
)
def test_hostile_bytes_close_only_that_connection(server: RunningServer, payload: bytes) -> None:
    assert _raw(server, payload) == b""  # closed, nothing answered
    conn, session = connect(server)  # the server carries on
    session.disconnect()
    conn.disconnect()
