"""Multichannel over real links: two namespaced hosts joined by 2 and 4 shaped veth pairs.

Ferry's client (``ferry smb put``) copies a file to Ferry's server and to Samba's smbd, both
advertising every link's address with its speed and RSS; the links' byte counters
(``ip -s link`` in the client's namespace) must show each link carrying a fair share, and the
copy's SHA-256 must match. Samba's smbclient, which has no Multichannel, is the baseline: all
its bytes cross the one link it connected on. A link taken down in the middle of a copy must
not fail the copy, and once it is up again the client must use it again.

Sizes and rates keep the copies short: links are shaped to 200 Mbit/s (25 MB/s) in each
direction and copies are 32-128 MiB, a second or two each. The link-down tests take longer by
nature: the client notices a pulled link only when its TCP connection times out (the client's
dead-peer timeout, 30 s at most; about 10 s here), so their links run at 20 Mbit/s until
the channel is back, so that the copy (160 MiB) is still running then, and at 200 Mbit/s for
the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.support.multihost import (
    Counters,
    TwoHosts,
    ferry_put,
    ferry_put_argv,
    ferry_server,
    parse_put,
    smbclient_put,
    two_hosts,
)
from tests.support.samba import SAMBA_PASSWORD, SAMBA_USER, multichannel_options, samba_server

RATE_MBIT = 200
MIB = 1 << 20
USER = "mc"
PASSWORD = "Multi-Channel-2024"
SHARE = "data"
#: Each link must carry at least this fraction of an even share of the copy's bytes.
FAIR = 0.5
TARGETS = ["ferry", "samba"]
FAILOVER_RATE_MBIT = 20
FAILOVER_SIZE = 160 * MIB
#: Bytes that show a link carries the copy (ARP and stray packets are far fewer).
MOVING = 2_000_000


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


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s: {what}")
        time.sleep(0.2)


def sent(before: dict[int, Counters], after: dict[int, Counters]) -> dict[int, int]:
    """Bytes each link's client end sent between two readings."""
    return {index: (after[index] - before[index]).tx_bytes for index in after}


@pytest.fixture
def hosts2() -> Iterator[TwoHosts]:
    require_root()
    with two_hosts(2, rate_mbit=RATE_MBIT) as hosts:
        yield hosts


@pytest.mark.parametrize("kind", TARGETS)
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


@pytest.mark.parametrize("links", [2, 4])
@pytest.mark.parametrize("kind", TARGETS)
def test_ferry_client_uses_every_link(kind: str, links: int, tmp_path: Path) -> None:
    """One channel per link, each link carries a fair share of the bytes, the copy is whole."""
    require_root()
    size = 32 * MIB * links
    digest = random_file(tmp_path / "source.bin", size)
    with two_hosts(links, rate_mbit=RATE_MBIT) as hosts, target(kind, hosts, tmp_path) as t:
        before = hosts.counters()
        result = ferry_put(hosts, tmp_path / "source.bin", t.address, t.share, "copy.bin",
                           user=t.user, password=t.password, timeout=180)  # fmt: skip
        per_link = sent(before, hosts.counters())
        assert sha256(t.folder / "copy.bin") == digest
        pairs = {(link.client_address, link.server_address) for link in hosts.links}
    assert result.size == size
    assert result.channels == links, result.report
    assert {(c["local"], c["remote"]) for c in result.report["channel_list"]} == pairs
    assert result.report["failures"] == 0, result.report
    even = size / links
    assert all(n >= FAIR * even for n in per_link.values()), (per_link, even)
    assert sum(per_link.values()) >= size


@pytest.mark.parametrize("kind", TARGETS)
def test_link_down_mid_copy_and_back(kind: str, tmp_path: Path) -> None:
    """Link 2 goes down mid-copy: the copy goes on over link 1 and arrives whole; once link 2
    is up again the client opens a channel over it again and sends on it."""
    require_root()
    digest = random_file(tmp_path / "source.bin", FAILOVER_SIZE)
    with two_hosts(2, rate_mbit=FAILOVER_RATE_MBIT) as hosts, target(kind, hosts, tmp_path) as t:
        argv = ferry_put_argv(tmp_path / "source.bin", t.address, t.share, "copy.bin", user=t.user)
        started = time.perf_counter()
        proc = hosts.client.popen(argv, env={"FERRY_SMB_PASSWORD": t.password},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            start = hosts.counters()

            def since(mark: dict[int, Counters]) -> dict[int, int]:
                return sent(mark, hosts.counters())

            def running() -> bool:
                return proc.poll() is None

            wait_until(lambda: not running() or min(since(start).values()) >= MOVING, 60,
                       "both links carry the copy")  # fmt: skip
            assert running(), "the copy ended before the link went down"
            hosts.set_link(2, up=False)
            down = hosts.counters()
            wait_until(lambda: not running() or hosts.established(2) == 0, 90,
                       "the client's connection over link 2 is gone")  # fmt: skip
            assert running(), "the copy ended before the client gave up the channel over link 2"
            on_one_link = since(down)
            hosts.set_link(2, up=True)
            hosts.wait_link_up(2)
            up = hosts.counters()
            wait_until(lambda: not running() or since(up)[2] >= MOVING, 60,
                       "the client sends over link 2 again")  # fmt: skip
            back = since(up)
            reconnected = hosts.established(2)
            hosts.set_rate(RATE_MBIT)  # the rest, quickly
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        result = parse_put(proc.returncode, stdout, stderr, time.perf_counter() - started)
        assert sha256(t.folder / "copy.bin") == digest
    assert on_one_link[1] >= MOVING, on_one_link  # the copy went on over link 1
    assert back[2] >= MOVING, ("no channel over link 2 after it came back", back, result.report)
    assert reconnected >= 1
    assert result.size == FAILOVER_SIZE
    assert result.report["failures"] >= 1 and result.report["rebinds"] >= 1, result.report
