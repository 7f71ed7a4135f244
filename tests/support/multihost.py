"""Two test hosts joined by several shaped links, always torn down.

:func:`two_hosts` builds a *client* and a *server* network namespace and joins them with N veth
pairs, each its own subnet (link *i* is ``198.19.<i>.0/24``, client ``.1``, server ``.2``; the
``198.19.0.0/16`` half of the benchmarking range is used by nothing else in the tests), and
shapes both ends of every pair with a token bucket (``tc qdisc ... tbf``), so each link carries
at most its rate in each direction, like a NIC of that speed. Both ends of a pair are created
directly in their namespaces, so nothing is added to the root namespace and deleting the two
namespaces removes everything; their names carry :data:`~tests.support.netns.PREFIX`, so
:func:`~tests.support.netns.sweep` removes what a killed run leaves.

Per-link byte counters come from ``ip -s -j link`` inside each namespace; a link is taken down
and up with ``ip link set`` inside the client's namespace (the server's end then loses its
carrier, as with a pulled cable).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.netns import PREFIX, Namespace, claim, release, short_id
from tests.support.procs import VENV_BIN

FERRY = VENV_BIN / "ferry"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Link i's subnet is 198.19.<i>.0/24 (i from 1).
SUBNET = "198.19.{index}.0/24"
CLIENT_HOST = 1
SERVER_HOST = 2

#: A rate two vCPUs drive on four links at once with room to spare (see docs/benchmarks.md).
DEFAULT_RATE_MBIT = 200
#: Bucket size: at least one 64 KiB GSO segment (tbf would otherwise split or drop them) and
#: about 5 ms of traffic at 200 Mbit/s, enough to absorb timer slack on a busy VM.
DEFAULT_BURST = 128 * 1024
#: How long a packet may wait in the bucket's queue before tbf drops it; it sets the queue
#: length (rate x latency), i.e. how much TCP can keep in flight without a loss.
DEFAULT_LATENCY_MS = 20


@dataclass(frozen=True)
class Link:
    """One veth pair: the same name in both namespaces, its own /24."""

    index: int
    name: str
    client_address: str
    server_address: str
    prefix_len: int = 24


@dataclass(frozen=True)
class Counters:
    """Bytes a link's client end has sent and received (``ip -s link``'s stats64)."""

    tx_bytes: int
    rx_bytes: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.tx_bytes - other.tx_bytes, self.rx_bytes - other.rx_bytes)


@dataclass
class TwoHosts:
    """A client and a server namespace and the links between them."""

    client: Namespace
    server: Namespace
    rate_mbit: float
    burst: int = DEFAULT_BURST
    latency_ms: float = DEFAULT_LATENCY_MS
    links: list[Link] = field(default_factory=list)

    @property
    def rate_bytes(self) -> float:
        """One link's shaped rate in bytes per second."""
        return self.rate_mbit * 1e6 / 8

    @property
    def server_addresses(self) -> list[str]:
        return [link.server_address for link in self.links]

    def link(self, index: int) -> Link:
        for link in self.links:
            if link.index == index:
                return link
        raise KeyError(f"no link {index}")

    def counters(self) -> dict[int, Counters]:
        """Each link's byte counters at its client end, by link index."""
        stats = {s["ifname"]: s["stats64"] for s in self.client.ip_json("-s", "link", "show")}
        return {
            link.index: Counters(stats[link.name]["tx"]["bytes"], stats[link.name]["rx"]["bytes"])
            for link in self.links
        }

    def set_rate(self, rate_mbit: float) -> None:
        """Shape every link, both ends, to ``rate_mbit`` from now on (traffic keeps flowing)."""
        for link in self.links:
            for ns in (self.client, self.server):
                shape(ns, link.name, rate_mbit, self.burst, self.latency_ms)
        self.rate_mbit = rate_mbit

    def set_link(self, index: int, up: bool) -> None:
        """``ip link set LINK up|down`` in the client's namespace."""
        self.client.ip("link", "set", self.link(index).name, "up" if up else "down")

    def wait_link_up(self, index: int, timeout: float = 10.0) -> None:
        """Until both ends of link ``index`` are operationally up (carrier on both sides)."""
        link = self.link(index)
        deadline = time.monotonic() + timeout
        while True:
            states = [
                ns.ip_json("link", "show", "dev", link.name)[0]["operstate"]
                for ns in (self.client, self.server)
            ]
            if states == ["UP", "UP"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"link {link.name} not up after {timeout}s: {states}")
            time.sleep(0.05)

    def established(self, index: int, port: int = 445) -> int:
        """TCP connections the client has established over link ``index`` to ``port``."""
        link = self.link(index)
        argv = ["ss", "-Htn", "state", "established", "src", link.client_address, "dst",
                f"{link.server_address}:{port}"]  # fmt: skip
        return len(self.client.run(argv, check=True).stdout.splitlines())

    def run_client(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.client.run(argv, **kwargs)

    def run_server(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.server.run(argv, **kwargs)

    def qdiscs(self) -> dict[str, list[dict[str, Any]]]:
        """``tc -j qdisc show`` of each namespace, for checks and reports."""
        return {
            ns.name: json.loads(ns.run(["tc", "-j", "qdisc", "show"], check=True).stdout or "[]")
            for ns in (self.client, self.server)
        }


def shape(ns: Namespace, dev: str, rate_mbit: float, burst: int, latency_ms: float) -> None:
    """Replace ``dev``'s root qdisc with a token bucket of ``rate_mbit``."""
    ns.ip("link", "set", dev, "txqueuelen", "1000")
    argv = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit",
            "burst", str(burst), "latency", f"{latency_ms}ms"]  # fmt: skip
    proc = ns.run(argv, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns.name}: {proc.stderr.strip()}")


def add_link(client: Namespace, server: Namespace, index: int) -> Link:
    name = f"mc{index}"
    client.ip("link", "add", name, "type", "veth", "peer", "name", name, "netns", server.name)
    base = SUBNET.format(index=index).rsplit(".", 1)[0]
    link = Link(index, name, f"{base}.{CLIENT_HOST}", f"{base}.{SERVER_HOST}")
    for ns, address in ((client, link.client_address), (server, link.server_address)):
        # nodad/no IPv6 noise: only the traffic the test makes crosses the link.
        ns.run(["sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"], check=True)
        ns.ip("addr", "add", f"{address}/{link.prefix_len}", "dev", name)
        ns.ip("link", "set", name, "up")
    return link


@contextlib.contextmanager
def two_hosts(
    links: int,
    *,
    rate_mbit: float = DEFAULT_RATE_MBIT,
    burst: int = DEFAULT_BURST,
    latency_ms: float = DEFAULT_LATENCY_MS,
    sysctls: Mapping[str, str] | None = None,
    tag: str | None = None,
) -> Iterator[TwoHosts]:
    """A client and a server namespace joined by ``links`` shaped veth pairs; deleted on exit.

    ``sysctls`` are set in both namespaces (e.g. TCP buffer sizes).
    """
    if not 1 <= links <= 254:
        raise ValueError(f"links must be 1..254, got {links}")
    tag = tag or short_id()
    client = Namespace(f"{PREFIX}-mcc-{tag}")
    server = Namespace(f"{PREFIX}-mcs-{tag}")
    claim(tag)
    try:
        client.create()
        server.create()
        hosts = TwoHosts(client, server, rate_mbit, burst, latency_ms)
        for ns in (client, server):
            for key, value in (sysctls or {}).items():
                ns.run(["sysctl", "-qw", f"{key}={value}"], check=True)
        hosts.links += [add_link(client, server, index) for index in range(1, links + 1)]
        hosts.set_rate(rate_mbit)
        for link in hosts.links:
            hosts.wait_link_up(link.index)
        yield hosts
    finally:
        server.delete()
        client.delete()
        release(tag)


def listening(ns: Namespace, address: str, port: int) -> bool:
    """Whether something in ``ns`` accepts TCP connections on ``address:port`` (or any address)."""
    out = ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
    locals_ = {line.split()[3] for line in out.splitlines() if len(line.split()) > 3}
    return bool(locals_ & {f"{address}:{port}", f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"})


@dataclass
class FerryServer:
    """``ferry smbserver serve`` running in the server's namespace."""

    process: subprocess.Popen[str]
    port: int
    share: str
    share_dir: Path
    log: Path
    user: str
    password: str

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"ferry smbserver exited with status {code}:\n{self.log_tail()}")


@contextlib.contextmanager
def ferry_server(
    hosts: TwoHosts,
    tmp: Path,
    *,
    user: str,
    password: str,
    share: str = "data",
    port: int = 445,
    rss: bool = True,
    encrypt: bool = False,
) -> Iterator[FerryServer]:
    """Ferry's SMB server in ``hosts.server``, listening on every address there and advertising
    each link's server address with the link's shaped rate (and RSS with ``rss``); stopped after."""
    base = tmp / "ferry-server"
    share_dir = base / share
    share_dir.mkdir(parents=True)
    users = base / "users.db"
    env = {**os.environ, "FERRY_SMB_PASSWORD": password}
    subprocess.run([str(FERRY), "smbserver", "user", "add", user, "--users", str(users)],
                   env=env, check=True, capture_output=True, timeout=60)  # fmt: skip
    speed = f"{int(hosts.rate_mbit * 1_000_000)}"
    argv = ["ip", "netns", "exec", hosts.server.name, str(FERRY), "smbserver", "serve",
            "--listen", f"0.0.0.0:{port}", "--share", f"{share}={share_dir}",
            "--users", str(users)]  # fmt: skip
    for link in hosts.links:
        argv += [
            "--interface",
            f"{link.server_address},speed={speed}{',rss' if rss else ''},ifindex={link.index}",
        ]
    if encrypt:
        argv.append("--encrypt")
    log = base / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)  # fmt: skip
    server = FerryServer(process, port, share, share_dir, log, user, password)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(hosts.server, "0.0.0.0", port):
            server.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"ferry smbserver did not listen on {port}:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group made for ``process`` (start_new_session), then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass(frozen=True)
class SmbclientResult:
    wall_seconds: float
    #: The average rate smbclient printed for the transfer itself ("average N kb/s", KiB/s).
    reported_bytes_per_s: float | None
    output: str


SMBCLIENT_AVERAGE = re.compile(r"\(average ([\d.]+) kb/s\)")


def smbclient_put(
    hosts: TwoHosts,
    local: Path,
    address: str,
    share: str,
    remote: str,
    *,
    user: str,
    password: str,
    port: int = 445,
    timeout: float = 600,
) -> SmbclientResult:
    """Samba's smbclient in the client's namespace puts ``local`` to ``//address/share/remote``
    (one connection: smbclient has no Multichannel)."""
    argv = ["smbclient", f"//{address}/{share}", "-p", str(port), "-m", "SMB3", "--configfile=/dev/null",
            "-U", f"{user}%{password}", "-c", f'put "{local}" "{remote}"']  # fmt: skip
    start = time.perf_counter()
    proc = hosts.run_client(argv, check=False, timeout=timeout)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "NT_STATUS" in output:
        raise RuntimeError(f"smbclient put failed ({proc.returncode}):\n{output}")
    average = SMBCLIENT_AVERAGE.search(output)
    return SmbclientResult(elapsed, float(average[1]) * 1024 if average else None, output)


@dataclass(frozen=True)
class PutResult:
    """What ``ferry smb put`` reported, and the command's wall-clock time."""

    size: int
    seconds: float
    channels: int
    wall_seconds: float
    report: dict[str, Any]

    @property
    def mb_per_s(self) -> float:
        return self.size / self.wall_seconds / 1e6


SUMMARY = re.compile(r"put (\d+) bytes in ([\d.]+) s, ([\d.]+) MB/s, (\d+) channels?")


def ferry_put_argv(
    local: Path,
    address: str,
    share: str,
    remote: str,
    *,
    user: str,
    port: int = 445,
    max_channels: int | None = None,
    multichannel: bool = True,
) -> list[str]:
    """``ferry smb put LOCAL //ADDRESS:PORT/SHARE/REMOTE --user USER --json [...]``."""
    argv = [str(FERRY), "smb", "put", str(local), f"//{address}:{port}/{share}/{remote}", "--user", user,
            "--json"]  # fmt: skip
    if max_channels is not None:
        argv += ["--max-channels", str(max_channels)]
    if not multichannel:
        argv.append("--no-multichannel")
    return argv


def parse_put(returncode: int, stdout: str, stderr: str, wall: float) -> PutResult:
    """The JSON summary ``ferry smb put --json`` ends with (``bytes``, ``seconds``, ``channels``,
    ``channel_list``, ``failures``, ``replayed``, ``rebinds``, ...)."""
    if returncode != 0:
        raise RuntimeError(f"ferry smb put failed ({returncode}):\n{stdout}{stderr}")
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"ferry smb put printed no JSON summary:\n{stdout}{stderr}") from None
    return PutResult(report["bytes"], report["seconds"], report["channels"], wall, report)


def ferry_put(
    hosts: TwoHosts,
    local: Path,
    address: str,
    share: str,
    remote: str,
    *,
    user: str,
    password: str,
    port: int = 445,
    max_channels: int | None = None,
    multichannel: bool = True,
    timeout: float = 600,
) -> PutResult:
    """Ferry's client in the client's namespace puts ``local`` to ``//address:port/share/remote``."""
    argv = ferry_put_argv(local, address, share, remote, user=user, port=port, max_channels=max_channels,
                          multichannel=multichannel)  # fmt: skip
    start = time.perf_counter()
    proc = hosts.client.run(argv, env={**os.environ, "FERRY_SMB_PASSWORD": password}, timeout=timeout)
    return parse_put(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)
