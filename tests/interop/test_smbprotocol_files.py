"""The smbprotocol package's high-level client (smbclient module) doing file work on Ferry's server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import smbclient
from smbprotocol.exceptions import SMBOSError

from tests.support.smbserver import PASSWORD, USER, smb_server

MiB = 1 << 20


@pytest.fixture(scope="module", params=[False, True], ids=["signed", "encrypted"])
def share(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("smbprotocol-files")
    with smb_server(root) as running:
        smbclient.register_session(
            running.host, username=USER, password=PASSWORD, port=running.port, encrypt=request.param
        )
        try:
            yield rf"\\{running.host}\data", root / "data", running.port
        finally:
            smbclient.delete_session(running.host, port=running.port)


def test_open_read_write_stat_listdir_rename_remove(share: tuple[str, Path, int]) -> None:
    unc, root, port = share
    smbclient.mkdir(rf"{unc}\dir", port=port)
    with smbclient.open_file(rf"{unc}\dir\a.txt", mode="w", port=port) as f:
        f.write("hello over SMB\n")
    with smbclient.open_file(rf"{unc}\dir\a.txt", mode="a", port=port) as f:
        f.write("and more\n")
    with smbclient.open_file(rf"{unc}\dir\a.txt", mode="r", port=port) as f:
        assert f.read() == "hello over SMB\nand more\n"
    assert (root / "dir" / "a.txt").read_text() == "hello over SMB\nand more\n"
    st = smbclient.stat(rf"{unc}\dir\a.txt", port=port)
    assert st.st_size == len("hello over SMB\nand more\n")
    assert sorted(smbclient.listdir(rf"{unc}\dir", port=port)) == ["a.txt"]
    smbclient.rename(rf"{unc}\dir\a.txt", rf"{unc}\dir\b.txt", port=port)
    assert sorted(smbclient.listdir(rf"{unc}\dir", port=port)) == ["b.txt"]
    with pytest.raises(SMBOSError):
        smbclient.rmdir(rf"{unc}\dir", port=port)  # not empty
    smbclient.remove(rf"{unc}\dir\b.txt", port=port)
    smbclient.rmdir(rf"{unc}\dir", port=port)
    assert not (root / "dir").exists()
    with pytest.raises(SMBOSError):
        smbclient.stat(rf"{unc}\nothing-here", port=port)
    with pytest.raises(SMBOSError):
        smbclient.open_file(rf"{unc}\..\..\etc\passwd", port=port)


def test_256_mib_round_trip(share: tuple[str, Path, int]) -> None:
    unc, root, port = share
    data = os.urandom(256 * MiB)
    with smbclient.open_file(rf"{unc}\big.bin", mode="wb", port=port) as f:
        for i in range(0, len(data), 8 * MiB):
            f.write(data[i : i + 8 * MiB])
    with smbclient.open_file(rf"{unc}\big.bin", mode="rb", port=port) as f:
        back = f.read()
    expected = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(back).hexdigest() == expected
    assert hashlib.sha256((root / "big.bin").read_bytes()).hexdigest() == expected
    smbclient.remove(rf"{unc}\big.bin", port=port)
