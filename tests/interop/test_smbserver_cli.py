"""`ferry smbserver serve` and `ferry smbserver user` as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from smbprotocol import exceptions as smbexc
from smbprotocol.connection import Connection
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tests.support.procs import VENV_BIN, free_port, wait_port

FERRY = str(VENV_BIN / "ferry")


def ferry(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("FERRY_SMB_PASSWORD", None)
    if password is not None:
        env["FERRY_SMB_PASSWORD"] = password
    return subprocess.run([FERRY, *args], capture_output=True, text=True, env=env, timeout=30, check=False)


def test_user_database_commands(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    assert (
        ferry("smbserver", "user", "add", "carol", "--users", str(db), password="Pa55-word").returncode == 0
    )
    assert (
        ferry("smbserver", "user", "add", "dave", "--users", str(db), password="An0ther-one").returncode == 0
    )
    dup = ferry("smbserver", "user", "add", "CAROL", "--users", str(db), password="x-Pa55-word")
    assert dup.returncode == 1 and "carol" in dup.stderr.lower()
    assert ferry("smbserver", "user", "list", "--users", str(db)).stdout.split() == ["carol", "dave"]
    assert ferry("smbserver", "user", "remove", "dave", "--users", str(db)).returncode == 0
    missing = ferry("smbserver", "user", "remove", "dave", "--users", str(db))
    assert missing.returncode == 1 and "dave" in missing.stderr
    text = db.read_text()
    assert "Pa55-word" not in text and "An0ther-one" not in text
    assert oct(db.stat().st_mode & 0o777) == "0o600"


def test_serve_then_connect(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    assert (
        ferry("smbserver", "user", "add", "carol", "--users", str(db), password="Pa55-word").returncode == 0
    )
    share = tmp_path / "share"
    share.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [FERRY, "smbserver", "serve", "--listen", f"127.0.0.1:{port}", "--share", f"data={share}",
         "--users", str(db), "--encrypt"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_port("127.0.0.1", port)
        conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        conn.connect(timeout=10)
        session = Session(conn, "carol", "Pa55-word")
        session.connect()
        assert session.encrypt_data
        TreeConnect(session, r"\\127.0.0.1\data").connect()
        with pytest.raises(smbexc.BadNetworkName):
            TreeConnect(session, r"\\127.0.0.1\other").connect()
        conn.disconnect()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"serving SMB on 127.0.0.1:{port}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--share", "data=/nonexistent/folder"], "is not a folder"),
        (["--share", "data"], "expected NAME=PATH"),
        (["--share", "data=/tmp", "--listen", "nope"], "expected HOST:PORT"),
        (["--share", "data=/tmp", "--interface", "not-an-ip"], "not an IP address"),
        (["--share", "data=/tmp", "--guest", "pub"], "--guest names no --share: pub"),
        (["--share", "pub=/tmp", "--guest", "pub", "--encrypt"], "exclude each other"),
    ],
)
def test_serve_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = ferry("smbserver", "serve", "--users", str(tmp_path / "u.db"), *args)
    assert result.returncode == 2 and message in result.stderr


def test_serve_without_users(tmp_path: Path) -> None:
    result = ferry("smbserver", "serve", "--users", str(tmp_path / "u.db"), "--share", f"d={tmp_path}")
    assert result.returncode == 2 and "has no users" in result.stderr


def test_serve_a_guest_share_without_users(tmp_path: Path) -> None:
    """Like `smbd -F` with `guest ok`: a quick public share, no accounts needed."""
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "hello.txt").write_text("hello\n")
    port = free_port()
    proc = subprocess.Popen(
        [FERRY, "smbserver", "serve", "--listen", f"127.0.0.1:{port}", "--share", f"pub={tmp_path / 'pub'}",
         "--users", str(tmp_path / "none.db"), "--guest", "pub", "--interface", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_port("127.0.0.1", port)
        got = subprocess.run(
            ["smbclient", "//127.0.0.1/pub", "-p", str(port), "-N", "--configfile=/dev/null", "-m", "SMB3",
             "-c", f"get hello.txt {tmp_path / 'got.txt'}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert got.returncode == 0, got.stdout + got.stderr
        assert (tmp_path / "got.txt").read_text() == "hello\n"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "pub=" in out and "(guests allowed)" in out
