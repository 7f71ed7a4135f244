#!/usr/bin/env python3
"""Multichannel over real links: how close Ferry's client gets to the sum of the links' rates.

Two hosts in network namespaces are joined by 1, 2 and 4 veth pairs, each its own subnet, each
shaped with a token bucket (tc tbf) at the same rate on both ends (``--rate``, 200 Mbit/s by
default, which this 2-vCPU VM drives on four links at once with plain TCP at 0.95 of the
sum). For each number of links, the server namespace runs Ferry's server
(``ferry smbserver serve``, every link's address advertised with the link's rate and RSS),
then Samba's smbd (``server multi channel support = yes``, ``interfaces`` listing each link's
address with ``speed=`` and ``capability=RSS``, bound to those addresses); on each, from the
client namespace:

- Ferry's client, ``ferry smb put FILE //ADDR/SHARE/NAME --json`` (Multichannel), and
- Samba's smbclient, ``smbclient //ADDR/SHARE -c "put ..."`` (one connection: it has no
  Multichannel), for comparison,

copy the same random file (``--size``, 512 MiB by default), ``--repeat`` times. Each copy's
SHA-256 on the server's disk is checked, and the per-link byte counters (``ip -s -j link`` in
the client namespace) show how the bytes spread over the links.

Figures: MB/s (10**6 bytes/s) is the file size over the transfer time the client itself reports
(Ferry's summary line; smbclient's "average" rate), the median of the repeats; "wall MB/s"
uses the whole command's time instead (process start, connect and session setup included).
"sum of rates" is the links' total shaped rate in MB/s, and efficiency = MB/s / sum of rates.
The rate counts Ethernet, IP and TCP headers, so a single TCP stream can at most reach about
0.95 of it with 1500-byte frames; the goal for Ferry is efficiency >= 0.9 with 4 links.

Run as root (namespaces), with Samba's smbd and smbclient installed. Everything the script
makes (namespaces, processes, the temporary folder) is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine, make_random_file, sha256  # noqa: E402  (scripts/, next to this one)

from tests.support.multihost import (  # noqa: E402  (the test hosts live with the tests)
    Counters,
    TwoHosts,
    ferry_put,
    ferry_server,
    smbclient_put,
    two_hosts,
)
from tests.support.netns import sweep  # noqa: E402
from tests.support.samba import SAMBA_PASSWORD, SAMBA_USER, multichannel_options, samba_server  # noqa: E402

SHARE = "bench"
FERRY_USER = "bench"
FERRY_PASSWORD = "Ferry-Bench-2024"
REMOTE = "bench.bin"
MIB = 1 << 20
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
CLIENTS = ("ferry", "smbclient")
SERVERS = ("ferry", "samba")
LABELS = {"ferry": "Ferry's client", "smbclient": "smbclient (1 channel)"}
SERVER_LABELS = {"ferry": "Ferry's server", "samba": "Samba's smbd"}


class BenchError(Exception):
    """A copy failed or arrived different: the run is invalid."""


@dataclass
class Row:
    links: int
    client: str
    server: str
    rate_mbit: float
    seconds: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    spread: list[dict[int, int]] = field(default_factory=list)
    channels: set[int] = field(default_factory=set)

    def mb_per_s(self, size: int) -> float:
        return size / statistics.median(self.seconds) / 1e6

    def wall_mb_per_s(self, size: int) -> float:
        return size / statistics.median(self.wall) / 1e6

    @property
    def sum_of_rates(self) -> float:
        """MB/s."""
        return self.links * self.rate_mbit / 8

    def shares(self) -> str:
        """Each link's part of the bytes sent, from the last run, in percent."""
        last = self.spread[-1]
        total = sum(last.values()) or 1
        return "/".join(f"{100 * last[i] / total:.0f}" for i in sorted(last))


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 1G, got {text!r}")
    return int(match[1]) * SIZE_UNITS[match[2].upper()]


def parse_links(text: str) -> list[int]:
    try:
        links = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a list like 1,2,4, got {text!r}") from None
    if not links or any(not 1 <= n <= 16 for n in links):
        raise argparse.ArgumentTypeError("link counts must be 1..16")
    return links


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    folder: Path
    user: str
    password: str
    check_alive: Callable[[], None]


@contextlib.contextmanager
def start_server(name: str, hosts: TwoHosts, tmp: Path) -> Iterator[Target]:
    address = hosts.links[0].server_address
    if name == "ferry":
        with ferry_server(hosts, tmp, user=FERRY_USER, password=FERRY_PASSWORD, share=SHARE) as server:
            yield Target(name, address, server.share_dir, FERRY_USER, FERRY_PASSWORD, server.check_alive)
    else:
        options = multichannel_options(hosts.server_addresses, int(hosts.rate_mbit * 1_000_000))
        with samba_server(
            tmp, shares={SHARE: {}}, options=options, netns=hosts.server, host=address, port=445
        ) as smbd:
            yield Target(name, address, smbd.shares[SHARE], SAMBA_USER, SAMBA_PASSWORD, smbd.check_alive)


def copy(client: str, hosts: TwoHosts, target: Target, source: Path, digest: str, row: Row) -> str:
    """One copy of ``source`` to ``target``; checked, recorded in ``row``; a one-line report."""
    copied = target.folder / REMOTE
    copied.unlink(missing_ok=True)
    size = source.stat().st_size
    before = hosts.counters()
    try:
        if client == "ferry":
            result = ferry_put(hosts, source, target.address, SHARE, REMOTE,
                               user=target.user, password=target.password)  # fmt: skip
            seconds, wall = result.seconds, result.wall_seconds
            row.channels.add(result.channels)
            extra = f", {result.channels} channels"
        else:
            sc = smbclient_put(hosts, source, target.address, SHARE, REMOTE,
                               user=target.user, password=target.password)  # fmt: skip
            seconds = size / sc.reported_bytes_per_s if sc.reported_bytes_per_s else sc.wall_seconds
            wall, extra = sc.wall_seconds, ""
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{client} -> {target.name}, {len(hosts.links)} link(s): {exc}") from None
    after = hosts.counters()
    target.check_alive()
    if sha256(copied) != digest:
        raise BenchError(f"{client} -> {target.name}: the copy's SHA-256 differs from the source")
    copied.unlink()
    sent: dict[int, int] = {i: (after[i] - before.get(i, Counters(0, 0))).tx_bytes for i in after}
    row.seconds.append(seconds)
    row.wall.append(wall)
    row.spread.append(sent)
    per_link = " ".join(f"{sent[i] / 1e6:.0f}" for i in sorted(sent))
    return (
        f"{size / seconds / 1e6:7.1f} MB/s ({seconds:6.2f} s; wall {wall:6.2f} s){extra}; "
        f"MB sent per link: {per_link}"
    )


def measure(args: argparse.Namespace, tmp: Path, source: Path, digest: str) -> list[Row]:
    rows: list[Row] = []
    for links in args.links:
        with two_hosts(links, rate_mbit=args.rate) as hosts:
            print(f"{links} link(s) of {args.rate:g} Mbit/s: {hosts.client.name} -> {hosts.server.name}")
            for server in args.server:
                with start_server(server, hosts, tmp / f"{server}-{links}") as target:
                    for client in args.client:
                        row = Row(links, client, server, args.rate)
                        rows.append(row)
                        for run in range(args.repeat):
                            report = copy(client, hosts, target, source, digest, row)
                            print(
                                f"  {client:9} -> {server:5} run {run + 1}/{args.repeat}: {report}",
                                flush=True,
                            )
    return rows


def tables(rows: Sequence[Row], size: int) -> tuple[str, str]:
    header = ("links", "client", "server", "MB/s", "wall MB/s", "sum of rates", "efficiency", "% per link")
    cells = [
        (
            str(r.links),
            LABELS[r.client],
            SERVER_LABELS[r.server],
            f"{r.mb_per_s(size):.1f}",
            f"{r.wall_mb_per_s(size):.1f}",
            f"{r.sum_of_rates:.1f}",
            f"{r.mb_per_s(size) / r.sum_of_rates:.2f}",
            r.shares(),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in (header, *cells)) for i in range(len(header))]
    text = "\n".join(
        "  ".join(
            c.ljust(w) if i in (1, 2, 7) else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in (header, *cells)
    )
    markdown = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|---:|---|---|---:|---:|---:|---:|---|",
            *("| " + " | ".join(c) + " |" for c in cells),
        ]
    )
    return text, markdown


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Multichannel over 1, 2 and 4 shaped links between two namespaced hosts: "
        "Ferry's client to Ferry's server and to Samba's smbd, and Samba's smbclient for "
        "comparison. Run as root.",
        epilog="MB/s are 10**6 bytes per second, the median of --repeat copies.",
    )
    p.add_argument("--size", type=parse_size, default=512 * MIB, help="file size (default 512M)")
    p.add_argument("--links", type=parse_links, default=[1, 2, 4], help="link counts (default 1,2,4)")
    p.add_argument("--rate", type=float, default=200.0, help="each link's rate in Mbit/s (default 200)")
    p.add_argument("--repeat", type=int, default=1, help="copies per row (default 1)")
    p.add_argument("--client", choices=CLIENTS, action="append", help="only this client (repeatable)")
    p.add_argument("--server", choices=SERVERS, action="append", help="only this server (repeatable)")
    p.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.client = args.client or list(CLIENTS)
    args.server = args.server or list(SERVERS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_multichannel: run as root (it builds network namespaces)", file=sys.stderr)
        return 2
    sweep()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-mc-", dir=args.tmp) as name:
        tmp = Path(name)
        source = tmp / "source.bin"
        print(f"temporary folder {tmp}; making a {args.size // MIB} MiB random file", flush=True)
        digest = make_random_file(source, args.size)
        try:
            rows = measure(args, tmp, source, digest)
        except BenchError as exc:
            print(f"bench_multichannel: {exc}", file=sys.stderr)
            return 1
    print()
    for key, value in machine().items():
        print(f"{key:10} {value}")
    print(f"{'command':10} {' '.join(['scripts/bench_multichannel.py', *(argv or sys.argv[1:])])}")
    print(f"{'setup':10} {args.size // MIB} MiB, links of {args.rate:g} Mbit/s (tbf on both ends), "
          f"median of {args.repeat}")  # fmt: skip
    text, markdown = tables(rows, args.size)
    print()
    print(text)
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
