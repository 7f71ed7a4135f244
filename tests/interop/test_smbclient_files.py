"""Samba's smbclient doing file work on Ferry's server, signed and encrypted, checked on disk."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.smbserver import PASSWORD, USER, RunningServer, smb_server

SMBCLIENT = shutil.which("smbclient")
GiB = 1 << 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    require_tool(SMBCLIENT, "smbclient")
    root = tmp_path_factory.mktemp("smbclient-files")
    with smb_server(root) as running:
        yield running, root / "data"


def run(server: RunningServer, commands: str, *args: str) -> str:
    assert SMBCLIENT is not None
    result = subprocess.run(
        [SMBCLIENT, f"//{server.host}/data", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
         "--configfile=/dev/null", "-m", "SMB3", *args, "-c", commands],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "NT_STATUS" not in output, output
    return output


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("protection", ["sign", "encrypt"])
def test_everyday_commands(server: tuple[RunningServer, Path], tmp_path: Path, protection: str) -> None:
    srv, root = server
    local = tmp_path / "note.txt"
    local.write_text("ferry carries VMs\n")
    out = run(
        srv,
        f"mkdir d-{protection}; cd d-{protection}; put {local} note.txt; mkdir sub; "
        f"rename note.txt renamed.txt; ls; get renamed.txt {tmp_path / 'back.txt'}; rmdir sub",
        f"--client-protection={protection}",
    )
    assert "renamed.txt" in out and "sub" in out
    assert (tmp_path / "back.txt").read_text() == "ferry carries VMs\n"
    assert (root / f"d-{protection}" / "renamed.txt").read_text() == "ferry carries VMs\n"
    assert not (root / f"d-{protection}" / "sub").exists()
    run(srv, f"del d-{protection}\\renamed.txt; rmdir d-{protection}", f"--client-protection={protection}")
    assert not (root / f"d-{protection}").exists()


@pytest.mark.parametrize("protection", ["sign", "encrypt"])
def test_one_gib_round_trip(server: tuple[RunningServer, Path], tmp_path: Path, protection: str) -> None:
    srv, root = server
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for _ in range(GiB // (16 << 20)):
            f.write(os.urandom(16 << 20))
    back = tmp_path / "big.back"
    out = run(
        srv,
        f"put {source} big-{protection}.bin; get big-{protection}.bin {back}",
        f"--client-protection={protection}",
    )
    print(out)
    expected = sha256(source)
    assert sha256(root / f"big-{protection}.bin") == expected
    assert sha256(back) == expected
    (root / f"big-{protection}.bin").unlink()
