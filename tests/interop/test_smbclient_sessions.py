"""Samba's smbclient against Ferry's server: authentication, signing and encryption on each dialect.

(File commands come with the filesystem backend; these tests stop at the tree connect.)"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import require_tool
from tests.support.smbserver import PASSWORD, USER, RunningServer, smb_server

SMBCLIENT = shutil.which("smbclient")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_tool(SMBCLIENT, "smbclient")
    with smb_server(tmp_path_factory.mktemp("smbclient")) as running:
        yield running


def smbclient(server: RunningServer, share: str, *args: str, user: str = USER, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    assert SMBCLIENT is not None
    return subprocess.run(
        [SMBCLIENT, f"//{server.host}/{share}", "-p", str(server.port), "-U", f"{user}%{password}",
         "--configfile=/dev/null", *args, "-c", "exit"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("dialect", ["SMB3_00", "SMB3_02", "SMB3_11"])
@pytest.mark.parametrize("protection", ["sign", "encrypt"])
def test_connects(server: RunningServer, dialect: str, protection: str) -> None:
    result = smbclient(server, "data", "-m", dialect, f"--client-protection={protection}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_encrypted_share(server: RunningServer) -> None:
    result = smbclient(server, "secret", "-m", "SMB3")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("share", "user", "password", "status"),
    [
        ("data", USER, "wrong", "NT_STATUS_LOGON_FAILURE"),
        ("data", "mallory", "x", "NT_STATUS_LOGON_FAILURE"),
        ("nosuchshare", USER, PASSWORD, "NT_STATUS_BAD_NETWORK_NAME"),
        ("alice_only", "bob", "Batt3ry-Staple", "NT_STATUS_ACCESS_DENIED"),
        # No share allows guests here: anonymous and guest logons fail at SESSION_SETUP.
        ("data", "", "", "NT_STATUS_LOGON_FAILURE"),
        ("data", "guest", "", "NT_STATUS_LOGON_FAILURE"),
    ],
)
def test_refusals(server: RunningServer, share: str, user: str, password: str, status: str) -> None:
    result = smbclient(server, share, "-m", "SMB3", user=user, password=password)
    assert result.returncode != 0
    assert status in result.stdout + result.stderr
