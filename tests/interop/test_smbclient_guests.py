"""Samba's smbclient as an anonymous (null) and a guest client of Ferry's server: only a share
that allows guests takes them; IPC$ then lists the shares to them (`smbclient -L -N`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from smbcore.messages import ShareType
from smbcore.server import Share

from tests.conftest import require_tool
from tests.support.smbserver import RunningServer, smb_server

SMBCLIENT = shutil.which("smbclient")

#: smbclient's ways of logging on without an account: -N (its login name with no password, then
#: anonymous), -U % (anonymous at once), and the guest account with any password.
LOGONS = {"no-password": ["-N"], "anonymous": ["-U", "%"], "guest": ["-U", "guest%any thing"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_tool(SMBCLIENT, "smbclient")
    tmp = tmp_path_factory.mktemp("guests")
    for name in ("pub", "data"):
        (tmp / name).mkdir()
    shares = {
        "pub": Share("pub", path=str(tmp / "pub"), guest_ok=True),
        "data": Share("data", path=str(tmp / "data")),
        "IPC$": Share("IPC$", ShareType.PIPE, guest_ok=True),
    }
    with smb_server(tmp, shares=shares) as running:
        yield running


def smbclient(server: RunningServer, share: str, logon: list[str], *commands: str, dialect: str = "SMB3"):  # type: ignore[no-untyped-def]
    assert SMBCLIENT is not None
    return subprocess.run(
        [SMBCLIENT, f"//{server.host}/{share}", "-p", str(server.port), *logon, "--configfile=/dev/null",
         "-m", dialect, "-c", "; ".join(commands) or "exit"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("logon", LOGONS)
@pytest.mark.parametrize("dialect", ["SMB2_10", "SMB3_00", "SMB3_11"])
def test_guest_share_round_trip(server: RunningServer, tmp_path: Path, logon: str, dialect: str) -> None:
    payload = os.urandom(3 << 20)
    (tmp_path / "up.bin").write_bytes(payload)
    name = f"{logon}-{dialect}.bin"
    result = smbclient(
        server, "pub", LOGONS[logon], f"lcd {tmp_path}", f"put up.bin {name}", f"get {name} down.bin", "ls",
        dialect=dialect,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert name in result.stdout
    assert hashlib.sha256((tmp_path / "down.bin").read_bytes()).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("logon", LOGONS)
def test_other_shares_refuse_guests(server: RunningServer, logon: str) -> None:
    result = smbclient(server, "data", LOGONS[logon], "ls")
    assert result.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in result.stdout + result.stderr


def test_anonymous_share_listing(server: RunningServer) -> None:
    assert SMBCLIENT is not None
    result = subprocess.run(
        [SMBCLIENT, "-L", f"//{server.host}", "-p", str(server.port), "-N", "--configfile=/dev/null"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    listed = {
        line.split()[0] for line in result.stdout.splitlines() if line.startswith("\t") and line.split()
    }
    assert {"pub", "data", "IPC$"} <= listed, result.stdout + result.stderr


def test_a_client_that_requires_signing_refuses_a_guest_session(server: RunningServer) -> None:
    """A guest session has no key to sign with; a client insisting on signing must not go on."""
    assert smbclient(server, "pub", LOGONS["guest"], "ls").returncode == 0
    strict = smbclient(server, "pub", [*LOGONS["guest"], "--client-protection=sign"], "ls")
    assert strict.returncode != 0
