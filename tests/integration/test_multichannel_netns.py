"""Multichannel over real links: two namespaced hosts joined by 2 and 4 shaped veth pairs.

Ferry's client (``ferry smb put``) copies a file to Ferry's server and to Samba's smbd, both
advertising every link's address with its speed and RSS; the links' byte counters
(``ip -s link`` in the client's namespace) must show each link carrying a fair share, and the
copy's SHA-256 must match. Samba's smbclient, which has no Multichannel, is the baseline: all
its bytes cross the one link it connected on. A link taken down in the middle of a copy must
not fail the copy, and once it is up again the client must use it again.

Sizes and rates keep this file to well under a minute of copying: links are shaped to
200 Mbit/s (25 MB/s) in each direction, copies are 32-96 MiB.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.support.multihost import Counters, TwoHosts, ferry_server, smbclient_put, two_hosts
from tests.support.samba import SAMBA_PASSWORD, SAMBA_USER, multichannel_options, samba_server

RATE_MBIT = 200
MIB = 1 << 20
USER = "mc"
PASSWORD = "Multi-Channel-2024"
SHARE = "data"
#: Each link must carry at least this fraction of an even share of the copy's bytes.
FAIR = 0.5


@dataclass(frozen=True)
class Target:
    kind: str
    address: str
    share: str
    folder: Path
    user: str
    password: str


@contextlib.contextmanager
def target(kind: str, hosts: TwoHosts, tmp: Path) -> Iterator[Target]:
    """Ferry's server or Samba's smbd in the server's namespace, on port 445 of every link."""
    address = hosts.links[0].server_address
    if kind == "ferry":
        with ferry_server(hosts, tmp, user=USER, password=PASSWORD, share=SHARE) as ferry:
            yield Target(kind, address, SHARE, ferry.share_dir, USER, PASSWORD)
            ferry.check_alive()
    else:
        options = multichannel_options(hosts.server_addresses, int(hosts.rate_mbit * 1_000_000))
        with samba_server(
            tmp, shares={SHARE: {}}, options=options, netns=hosts.server, host=address, port=445
        ) as smbd:
            yield Target(kind, address, SHARE, smbd.shares[SHARE], SAMBA_USER, SAMBA_PASSWORD)
            smbd.check_alive()


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MIB):
            chunk = os.urandom(MIB)
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sent(before: dict[int, Counters], after: dict[int, Counters]) -> dict[int, int]:
    """Bytes each link's client end sent between two readings."""
    return {index: (after[index] - before[index]).tx_bytes for index in after}


@pytest.fixture
def hosts2() -> Iterator[TwoHosts]:
    require_root()
    with two_hosts(2, rate_mbit=RATE_MBIT) as hosts:
        yield hosts


@pytest.mark.parametrize("kind", ["ferry", "samba"])
def test_smbclient_crosses_one_link(kind: str, hosts2: TwoHosts, tmp_path: Path) -> None:
    """The baseline and a check of the harness: smbclient (single channel) sends everything on
    the link it connected on, none on the other, and the copy arrives whole."""
    size = 32 * MIB
    digest = random_file(tmp_path / "source.bin", size)
    with target(kind, hosts2, tmp_path) as t:
        before = hosts2.counters()
        smbclient_put(hosts2, tmp_path / "source.bin", t.address, t.share, "copy.bin",
                      user=t.user, password=t.password, timeout=120)  # fmt: skip
        per_link = sent(before, hosts2.counters())
        assert sha256(t.folder / "copy.bin") == digest
    assert per_link[1] >= size, per_link
    assert per_link[2] < 64 * 1024, per_link  # at most stray neighbour or TCP traffic
