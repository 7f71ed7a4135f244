"""The smbserver's Prometheus metrics.

Measured here, from outside smbcore:

* file operations (CREATE, READ, WRITE, CLOSE, QUERY_*, SET_INFO, LOCK, IOCTL on files,
  CHANGE_NOTIFY, FLUSH): :class:`MeteredFiles` wraps the file service the core hands them to,
  so it sees each one's command, share, status and duration, and the bytes a READ returned
  or a WRITE wrote: ``ferry_smbserver_request_duration_seconds{command}``,
  ``ferry_smbserver_errors_total{command,status}``,
  ``ferry_smbserver_share_bytes_total{share,kind,direction}``;
* bytes per interface: each connection's counters (``bytes_sent``/``bytes_received`` of the
  core), attributed to the interface of its local address, sampled every second and at each
  scrape (a connection's last bytes are counted when it is seen gone):
  ``ferry_smbserver_interface_bytes_total{interface,direction}``;
* sessions, channels, connections, opens, shares, advertised interfaces: read from the
  server's tables at each scrape.

The commands the core answers itself (NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT,
TREE_DISCONNECT, ECHO, CANCEL, OPLOCK_BREAK, the connection's own IOCTLs) are not timed,
and their failures (a refused logon, a tree connect denied) not counted: that needs a
per-request hook in smbcore (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from smbcore.aio_server import SMBServer
from smbcore.fileops import READ_RESPONSE_HEAD_SIZE, FileTimes, ReadRequest, WriteRequest
from smbcore.messages import ShareType
from smbcore.ntstatus import NTStatus
from smbcore.pipes import ShareRouter
from smbcore.server import FileOperation, FileResult, ServerConnection

from .advertise import Advertiser
from .connections import local_address, shells

#: From 50 µs (a cached QUERY_INFO) to 10 s (an 8 MiB WRITE on a slow disk).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip

#: Seconds the per-share series of a removed migration share stay (a few scrapes).
SHARE_SERIES_RETENTION = 300.0


class SmbMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.share_bytes = Counter(
            "ferry_smbserver_share_bytes_total",
            "file data read or written through SMB, by share (kind: configured, migration, pipe)",
            ["share", "kind", "direction"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "ferry_smbserver_request_duration_seconds",
            "time from a file operation reaching the file service to its answer, by SMB2 command",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "ferry_smbserver_errors_total",
            "file operations answered with a status other than STATUS_SUCCESS, by command and NTSTATUS",
            ["command", "status"],
            registry=registry,
        )
        self.migration_share_events = Counter(
            "ferry_smbserver_migration_share_events_total",
            "migration share requests and lease ends, by event "
            "(created, repeated, renewed, removed, expired, refused, restored, cleaned)",
            ["event"],
            registry=registry,
        )
        self._migration_shares: Callable[[], set[str]] = set
        self._forget: dict[str, asyncio.TimerHandle] = {}

    def set_migration_shares(self, names: Callable[[], set[str]]) -> None:
        self._migration_shares = names

    def share_kind(self, name: str, share_type: int) -> str:
        if share_type == ShareType.PIPE:
            return "pipe"
        return "migration" if name.lower() in self._migration_shares() else "configured"

    def share_added(self, name: str) -> None:
        handle = self._forget.pop(name, None)
        if handle is not None:
            handle.cancel()

    def share_removed(self, name: str, retention: float = SHARE_SERIES_RETENTION) -> None:
        """Drop a migration share's series after ``retention`` (migration ids never repeat)."""

        def forget() -> None:
            self._forget.pop(name, None)
            for direction in ("read", "written"):
                with contextlib.suppress(KeyError):
                    self.share_bytes.remove(name, "migration", direction)

        with contextlib.suppress(RuntimeError):  # no running loop: keep the series
            self._forget[name] = asyncio.get_running_loop().call_later(retention, forget)


class MeteredFiles:
    """The server's file service, measured (see the module docstring)."""

    def __init__(self, inner: ShareRouter, metrics: SmbMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        started = time.perf_counter()
        command = op.command.name
        try:
            result, create = await self._inner.run(op)
        except BaseException:
            self._metrics.errors.labels(command, NTStatus.name_of(NTStatus.UNSUCCESSFUL)).inc()
            raise
        finally:
            self._metrics.request_duration.labels(command).observe(time.perf_counter() - started)
        status = result.status
        if status != NTStatus.SUCCESS:
            self._metrics.errors.labels(command, NTStatus.name_of(status)).inc()
        else:
            request = op.request
            if isinstance(request, ReadRequest):
                moved, direction = max(0, len(result.body) - READ_RESPONSE_HEAD_SIZE), "read"
            elif isinstance(request, WriteRequest):
                moved, direction = _written(result.body), "written"
            else:
                return result, create
            kind = self._metrics.share_kind(op.share.name, op.share.share_type)
            self._metrics.share_bytes.labels(op.share.name, kind, direction).inc(moved)
        return result, create

    def release(self, handle: object) -> None:
        self._inner.release(handle)

    def cancel(self, op_id: int) -> None:
        self._inner.cancel(op_id)


def _written(body: bytes | bytearray) -> int:
    """Count of a WRITE response (MS-SMB2 2.2.22)."""
    return int.from_bytes(body[4:8], "little") if len(body) >= 8 else 0


class ServerCollector(Collector):
    """Gauges read from the server's tables, and the per-interface byte counters."""

    def __init__(
        self,
        server: SMBServer,
        advertiser: Advertiser,
        migration_shares: Callable[[], set[str]],
    ) -> None:
        self._server = server
        self._advertiser = advertiser
        self._migration_shares = migration_shares
        self._seen: dict[ServerConnection, tuple[str, int, int]] = {}
        self._bytes: dict[tuple[str, str], int] = {}

    def sample(self) -> None:
        """Add each connection's bytes since the last sample to its interface's totals."""
        live = shells(self._server)
        for conn, shell in live.items():
            previous = self._seen.get(conn)
            if previous is None:
                local = local_address(shell)
                found = self._advertiser.lookup(local[0]) if local else None
                previous = (found.interface if found else "unknown", 0, 0)
            self._seen[conn] = self._account(conn, previous)
        for conn in [c for c in self._seen if c not in live]:
            self._account(conn, self._seen.pop(conn))  # its last bytes, then forget it

    def _account(self, conn: ServerConnection, previous: tuple[str, int, int]) -> tuple[str, int, int]:
        interface, sent, received = previous
        now_sent, now_received = conn.bytes_sent, conn.bytes_received
        for direction, delta in (("sent", now_sent - sent), ("received", now_received - received)):
            if delta > 0:
                key = (interface, direction)
                self._bytes[key] = self._bytes.get(key, 0) + delta
        return interface, now_sent, now_received

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        self.sample()
        state = self._server.state
        sessions = list(state.sessions.values())
        interface_bytes = CounterMetricFamily(
            "ferry_smbserver_interface_bytes",
            "SMB2 bytes sent and received on connections that came in on each of this host's "
            "interfaces (framing excluded; 'unknown' when the local address is in no interface)",
            labels=["interface", "direction"],
        )
        for (interface, direction), value in sorted(self._bytes.items()):
            interface_bytes.add_metric([interface, direction], value)
        yield interface_bytes
        yield GaugeMetricFamily("ferry_smbserver_sessions", "sessions", value=len(sessions))
        yield GaugeMetricFamily(
            "ferry_smbserver_channels",
            "channels (connections bound to a session) over all sessions",
            value=sum(len(s.channels) for s in sessions),
        )
        yield GaugeMetricFamily(
            "ferry_smbserver_connections", "TCP connections", value=len(self._server.connections)
        )
        yield GaugeMetricFamily("ferry_smbserver_opens", "open files and pipes", value=len(state.opens))
        migration = self._migration_shares()
        shares = GaugeMetricFamily("ferry_smbserver_shares", "shares served, by kind", labels=["kind"])
        counts = {"configured": 0, "migration": 0, "pipe": 0}
        for key, share in list(state.shares.items()):
            if share.share_type == ShareType.PIPE:
                counts["pipe"] += 1
            else:
                counts["migration" if key in migration else "configured"] += 1
        for kind, count in counts.items():
            shares.add_metric([kind], count)
        yield shares
        advertised = GaugeMetricFamily(
            "ferry_smbserver_advertised_interfaces",
            "addresses in the FSCTL_QUERY_NETWORK_INTERFACE_INFO answer, by where the list came from",
            labels=["source"],
        )
        advertised.add_metric([self._advertiser.source], len(self._advertiser.interfaces()))
        yield advertised


async def sample_forever(collector: ServerCollector, interval: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval)
        collector.sample()
