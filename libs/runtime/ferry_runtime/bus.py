"""The NATS bus of a service: connection with retries, traced request/reply, JetStream KV.

A service starts serving HTTP before NATS is reachable: :meth:`Bus.start` connects in
the background (retrying forever) and :attr:`Bus.connected` feeds ``/readyz``.
Responders registered with :meth:`Bus.serve` are subscribed as soon as the connection
is up; nats-py re-subscribes them after a reconnect.

Every request has a timeout and tells "no responders" from "timed out".  Responders
answer errors with a ``Ferry-Status`` header and an :data:`~ferry_runtime.codec.ERROR_REPLY`
body, which the requester raises as :class:`RemoteError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind, Status, StatusCode

from .codec import ERROR_REPLY, ErrorReply, PayloadError
from .config import NatsSettings
from .metrics import RuntimeMetrics
from .tracing import Telemetry

log = logging.getLogger(__name__)

STATUS_HEADER = "Ferry-Status"


class BusError(Exception):
    """A bus operation failed; subclasses say how."""


class NotConnected(BusError):
    """The bus has no connection to NATS (yet, or any more)."""


class NoResponders(BusError):
    """Nobody listens on the subject (the service is down or not deployed)."""


class RequestTimeout(BusError):
    """A responder exists but did not answer in time."""


class RemoteError(BusError):
    """The responder answered with an error."""

    def __init__(self, subject: str, status: int, message: str) -> None:
        super().__init__(f"{subject}: {status} {message}")
        self.subject = subject
        self.status = status
        self.message = message


class HandlerError(Exception):
    """Raised by a responder to answer a request with an error status (like an HTTP error)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """A request as a responder sees it."""

    subject: str
    data: bytes
    headers: Mapping[str, str]


Handler = Callable[[Request], Awaitable[bytes]]


class Bus:
    def __init__(
        self,
        settings: NatsSettings,
        name: str,
        telemetry: Telemetry,
        metrics: RuntimeMetrics,
    ) -> None:
        self._settings = settings
        self._name = name
        self._telemetry = telemetry
        self._metrics = metrics
        self._nc: Client | None = None
        self._connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._responders: list[tuple[str, str | None, str, Handler]] = []
        self._closing = False
        self._stopping = asyncio.Event()
        self._last_error: str | None = None

    # -- connection --------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect(), name="nats-connect")

    async def _connect(self) -> None:
        attempt = 0

        async def on_error(exc: Exception) -> None:
            nonlocal attempt
            attempt += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            if attempt == 1 or attempt % 30 == 0:
                log.warning(
                    "NATS not reachable, retrying", extra={"error": self._last_error, "attempt": attempt}
                )

        async def on_disconnect() -> None:
            self._metrics.nats_connected.set(0)
            if not self._closing:
                log.warning("NATS connection lost, reconnecting")

        async def on_reconnect() -> None:
            self._metrics.nats_connected.set(1)
            self._metrics.nats_reconnects.inc()
            log.info("NATS reconnected", extra={"url": self.connected_url})

        # nats-py's own first-connection loop cannot be cancelled (it swallows CancelledError
        # while cleaning up a failed attempt), so the first connection is retried here, one
        # attempt at a time, and automatic reconnection is switched on once connected.
        while not self._closing:
            nc = Client()
            try:
                await nc.connect(
                    servers=list(self._settings.url),
                    name=self._name,
                    # nats-py annotates these as int but takes seconds as float (asyncio timeouts).
                    connect_timeout=cast(int, self._settings.connect_timeout),
                    reconnect_time_wait=cast(int, self._settings.reconnect_wait),
                    max_reconnect_attempts=1,  # try each URL twice, then raise NoServersError
                    allow_reconnect=False,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
                break
            except (OSError, nats.errors.Error, TimeoutError):
                # error_cb has recorded and logged why.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._settings.reconnect_wait)
        else:
            return
        if self._closing:
            await nc.close()
            return
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        for subject, queue, pattern, handler in self._responders:
            await self._subscribe(subject, queue, pattern, handler)
        self._metrics.nats_connected.set(1)
        self._connected.set()
        log.info("NATS connected", extra={"url": self.connected_url})

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def connected_url(self) -> str | None:
        if self._nc is None or self._nc.connected_url is None:
            return None
        return self._nc.connected_url.geturl()

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for the first connection; :class:`NotConnected` if ``timeout`` passes first."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise NotConnected(f"no NATS connection after {timeout}s ({self._last_error})") from None

    def _client(self) -> Client:
        if self._nc is None or not self._nc.is_connected:
            raise NotConnected(f"not connected to NATS ({self._last_error or 'connecting'})")
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        return self._client().jetstream(timeout=self._settings.request_timeout)

    async def close(self) -> None:
        """Drain (let in-flight handlers finish, flush publishes), then close; bounded in time."""
        self._closing = True
        self._stopping.set()
        if self._connect_task is not None and not self._connect_task.done():
            # Never cancel nats-py mid-connect (it is not cancel-safe): the loop ends after
            # the attempt under way, which connect_timeout bounds.
            limit = 2 * self._settings.connect_timeout * len(self._settings.url) + 1
            done, _ = await asyncio.wait({self._connect_task}, timeout=limit)
            if not done:
                log.warning("NATS connection attempt did not end in time")
        nc = self._nc
        if nc is None:
            return
        if nc.is_connected:
            try:
                await asyncio.wait_for(nc.drain(), self._settings.drain_timeout)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("NATS drain did not finish", extra={"error": repr(exc)})
        if not nc.is_closed:
            await nc.close()
        self._metrics.nats_connected.set(0)

    # -- messaging ---------------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes) -> None:
        headers: dict[str, str] = {}
        with self._telemetry.span(
            f"publish {subject}", SpanKind.PRODUCER, attributes={"messaging.destination": subject}
        ):
            self._telemetry.inject(headers)
            await self._client().publish(subject, data, headers=headers)

    async def request(self, subject: str, data: bytes, timeout: float | None = None) -> bytes:
        """Send a request and return the reply's payload.

        Raises :class:`NoResponders`, :class:`RequestTimeout`, :class:`RemoteError` or
        :class:`NotConnected`.
        """
        timeout = self._settings.request_timeout if timeout is None else timeout
        headers: dict[str, str] = {}
        with self._telemetry.span(
            f"request {subject}", SpanKind.CLIENT, attributes={"messaging.destination": subject}
        ) as span:
            self._telemetry.inject(headers)
            try:
                msg = await self._client().request(subject, data, timeout=timeout, headers=headers)
            except nats.errors.NoRespondersError:
                span.set_status(Status(StatusCode.ERROR, "no responders"))
                raise NoResponders(f"no service answers on {subject}") from None
            except nats.errors.TimeoutError:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                raise RequestTimeout(f"no answer on {subject} within {timeout}s") from None
            status = (msg.headers or {}).get(STATUS_HEADER)
            if status is not None:
                try:
                    err: ErrorReply = ERROR_REPLY.decode(msg.data)
                    code, message = err.status, err.message
                except PayloadError:
                    code, message = int(status) if status.isdigit() else 500, "unreadable error reply"
                span.set_status(Status(StatusCode.ERROR, message))
                raise RemoteError(subject, code, message)
            return bytes(msg.data)

    async def serve(
        self, subject: str, handler: Handler, *, queue: str | None = None, pattern: str | None = None
    ) -> None:
        """Answer requests on ``subject`` (now, or once connected). ``pattern`` labels metrics."""
        entry = (subject, queue, pattern or subject, handler)
        self._responders.append(entry)
        if self._nc is not None:
            await self._subscribe(*entry)

    async def _subscribe(self, subject: str, queue: str | None, pattern: str, handler: Handler) -> None:
        async def on_message(msg: Msg) -> None:
            headers = dict(msg.headers or {})
            started = time.monotonic()
            with self._telemetry.span(
                f"handle {pattern}",
                SpanKind.SERVER,
                parent_headers=headers,
                attributes={"messaging.destination": msg.subject},
            ) as span:
                reply_headers: dict[str, str] | None = None
                try:
                    reply = await handler(Request(msg.subject, bytes(msg.data), headers))
                    outcome = "ok"
                except HandlerError as exc:
                    reply, outcome = (
                        ERROR_REPLY.encode(ErrorReply(status=exc.status, message=exc.message)),
                        "error",
                    )
                    reply_headers = {STATUS_HEADER: str(exc.status)}
                    span.set_status(Status(StatusCode.ERROR, exc.message))
                except Exception as exc:  # a bug in the handler: answer 500, keep serving
                    log.exception("NATS handler failed", extra={"subject": msg.subject})
                    reply, outcome = (
                        ERROR_REPLY.encode(ErrorReply(status=500, message=f"internal error: {exc}")),
                        "error",
                    )
                    reply_headers = {STATUS_HEADER: "500"}
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                self._metrics.nats_handled.labels(pattern, outcome).inc()
                span.set_attribute("ferry.duration_s", time.monotonic() - started)
                if msg.reply:
                    with contextlib.suppress(BusError, nats.errors.Error):
                        await self._client().publish(msg.reply, reply, headers=reply_headers)

        assert self._nc is not None
        await self._nc.subscribe(subject, queue=queue or "", cb=on_message)

    # -- JetStream key-value ----------------------------------------------------------------

    async def key_value(
        self,
        bucket: str,
        *,
        ttl: float | None = None,
        history: int = 1,
        limit_marker_ttl: float | None = None,
        replicas: int = 1,
        create: bool = True,
    ) -> KeyValue:
        """The bucket, created with these settings if it does not exist yet (and ``create``)."""
        js = self.jetstream
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                raise
        try:
            return await js.create_key_value(
                bucket=bucket, ttl=ttl, history=history, limit_marker_ttl=limit_marker_ttl, replicas=replicas
            )
        except nats.js.errors.BadRequestError:
            # Another instance created it between our two calls.
            return await js.key_value(bucket)
