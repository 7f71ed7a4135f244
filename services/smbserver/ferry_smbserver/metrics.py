"""The smbserver's Prometheus metrics.

* every answered request, also those the core answers itself (NEGOTIATE, SESSION_SETUP,
  TREE_CONNECT, LOGOFF, ECHO, IOCTL, OPLOCK_BREAK), through smbcore's per-request hook
  (``ServerSettings.on_request``, :meth:`SmbMetrics.request_answered`): the time from the
  PDU's arrival to its final answer (an interim STATUS_PENDING is not an answer),
  ``ferry_smbserver_request_duration_seconds{command}``, and every status other than
  STATUS_SUCCESS, ``ferry_smbserver_errors_total{command,status}`` (so refused logons and
  denied tree connects are counted), except STATUS_MORE_PROCESSING_REQUIRED on a
  SESSION_SETUP, a step of every logon rather than a failure;
* file data per share: :class:`MeteredFiles` wraps the file service the core hands file
  operations to, and counts the bytes a READ returned or a WRITE wrote (a WRITE's count is in
  its response's body, which the request hook does not carry):
  ``ferry_smbserver_share_bytes_total{share,kind,direction}``;
* bytes per interface: each connection's counters (``bytes_sent``/``bytes_received`` of the
  core), attributed to the interface of its local address, sampled every second and at each
  scrape, and the rest when the connection ends (``ServerSettings.on_connection_closed``), so a
  connection shorter than a sampling period counts in full:
  ``ferry_smbserver_interface_bytes_total{interface,direction}``;
* sessions, channels, connections, opens, shares, advertised interfaces: read from the
  server's tables at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from smbcore.aio_server import SMBConnection, SMBServer
from smbcore.fileops import READ_RESPONSE_HEAD_SIZE, FileTimes, ReadRequest, WriteRequest
from smbcore.header import Command
from smbcore.messages import ShareType
from smbcore.ntstatus import NTStatus
from smbcore.pipes import ShareRouter
from smbcore.server import FileOperation, FileResult, RequestRecord, ServerConnection

from .advertise import Advertiser
from .connections import shells

log = logging.getLogger(__name__)

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
            "time from a request's arrival to its final answer, by SMB2 command (every command answered)",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "ferry_smbserver_errors_total",
            "requests answered with a status other than STATUS_SUCCESS, by command and NTSTATUS "
            "(not STATUS_MORE_PROCESSING_REQUIRED on SESSION_SETUP, a step of every logon)",
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

    def request_answered(self, record: RequestRecord) -> None:
        """smbcore's per-request hook (``ServerSettings.on_request``): latency and errors."""
        try:
            command = record.command.name
            self.request_duration.labels(command).observe(max(0.0, record.seconds))
            status = record.status
            if status == NTStatus.SUCCESS or (
                status == NTStatus.MORE_PROCESSING_REQUIRED and record.command == Command.SESSION_SETUP
            ):
                return
            self.errors.labels(command, NTStatus.name_of(status)).inc()
        except Exception:  # a metrics bug must not break the connection that answered
            log.exception("cannot record a request", extra={"command": str(record.command)})

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
    """The server's file service, with the bytes it moves counted per share (latency and
    errors come from :meth:`SmbMetrics.request_answered`, for every command)."""

    def __init__(self, inner: ShareRouter, metrics: SmbMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        result, create = await self._inner.run(op)
        if result.status != NTStatus.SUCCESS:
            return result, create
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


class InterfaceBytes:
    """Each connection's bytes, added to the totals of the interface its local address is on:
    sampled (:meth:`sample`) and, at its end, its final counters (:meth:`connection_closed`)."""

    def __init__(self, advertiser: Advertiser) -> None:
        self._advertiser = advertiser
        self._seen: dict[ServerConnection, tuple[str, int, int]] = {}
        #: (interface, direction) -> bytes.
        self.totals: dict[tuple[str, str], int] = {}

    def sample(self, server: SMBServer) -> None:
        """Add each live connection's bytes since the last sample to its interface's totals."""
        live = shells(server)
        for conn, shell in live.items():
            self._seen[conn] = self._account(conn, self._seen.get(conn) or self._first(shell))
        for conn in [c for c in self._seen if c not in live]:
            self._account(conn, self._seen.pop(conn))  # gone without being told: its last bytes

    def connection_closed(self, shell: SMBConnection) -> None:
        """smbcore's ``on_connection_closed``: the connection's final counters, then forget it."""
        try:
            previous = self._seen.pop(shell.conn) if shell.conn in self._seen else self._first(shell)
            self._account(shell.conn, previous)
        except Exception:  # a metrics bug must not break the server's connection teardown
            log.exception("cannot count a closed connection's bytes", extra={"peer": shell.peer})

    def _first(self, shell: SMBConnection) -> tuple[str, int, int]:
        """A connection not seen yet: its interface, nothing counted."""
        local = shell.local_address
        found = self._advertiser.lookup(local[0]) if local else None
        return found.interface if found else "unknown", 0, 0

    def _account(self, conn: ServerConnection, previous: tuple[str, int, int]) -> tuple[str, int, int]:
        interface, sent, received = previous
        now_sent, now_received = conn.bytes_sent, conn.bytes_received
        for direction, delta in (("sent", now_sent - sent), ("received", now_received - received)):
            if delta > 0:
                key = (interface, direction)
                self.totals[key] = self.totals.get(key, 0) + delta
        return interface, now_sent, now_received


class ServerCollector(Collector):
    """Gauges read from the server's tables, and the per-interface byte counters."""

    def __init__(
        self,
        server: SMBServer,
        advertiser: Advertiser,
        migration_shares: Callable[[], set[str]],
        interface_bytes: InterfaceBytes,
    ) -> None:
        self._server = server
        self._advertiser = advertiser
        self._migration_shares = migration_shares
        self._interface_bytes = interface_bytes

    def sample(self) -> None:
        self._interface_bytes.sample(self._server)

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
        for (interface, direction), value in sorted(self._interface_bytes.totals.items()):
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
