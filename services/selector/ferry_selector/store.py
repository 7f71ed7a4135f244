"""The selector's NATS side of its state: KV watchers that keep :class:`.ClusterState` current,
and compare-and-swap writers for constraints and host settings.

* ``ferry-inventory`` belongs to discovery, which creates it with its TTL: the selector never
  creates it, and waits (retrying) until it exists. An expired inventory arrives as a marker
  and leaves the state.
* ``ferry-constraints`` and ``ferry-host-settings`` are created by whoever needs them first.
* Every change is a read-modify-write of one key with the revision read (``create`` when the
  key is absent or deleted, ``update(last=...)`` otherwise, ``delete(last=...)`` to drop it);
  a concurrent writer makes it start over, up to ``cas_attempts`` times, then answer 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
from ferry_hostnet.netsettings import (
    CONSTRAINTS,
    HOST_SETTINGS,
    HostConstraints,
    HostSettings,
)
from ferry_runtime import subjects
from ferry_runtime.bus import Bus, BusError, HandlerError
from ferry_runtime.codec import PayloadError, Schema
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from .settings import SelectorOptions
from .state import ClusterState, Mirror

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
_T = TypeVar("_T")

#: Errors of a NATS or JetStream operation that a retry may cure.
TRANSIENT = (BusError, nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)

#: JetStream's "wrong last sequence" API errors (a compare-and-swap lost the race).
_WRONG_LAST_SEQUENCE = (10071, 10164)


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kv_updates = Counter(
            "ferry_selector_kv_updates_total",
            "KV values applied from the watchers, by bucket and operation",
            ["bucket", "op"],
            registry=registry,
        )
        self.cas_conflicts = Counter(
            "ferry_selector_cas_conflicts_total",
            "compare-and-swap writes that lost to a concurrent writer (and were retried)",
            ["bucket"],
            registry=registry,
        )
        self.watch_restarts = Counter(
            "ferry_selector_watch_restarts_total",
            "KV watchers restarted after an error",
            ["bucket"],
            registry=registry,
        )


@dataclass
class _Follow:
    bucket: str
    mirror: Mirror[object]
    create: bool
    loaded: bool = False
    detail: str = "not started"
    task: asyncio.Task[None] | None = None


class Store:
    def __init__(
        self, bus: Bus, state: ClusterState, options: SelectorOptions, metrics: StoreMetrics
    ) -> None:
        self._bus = bus
        self._state = state
        self._options = options
        self._metrics = metrics
        self._follows = [
            _Follow(subjects.INVENTORY_BUCKET, state.inventories, create=False),  # type: ignore[arg-type]
            _Follow(subjects.CONSTRAINTS_BUCKET, state.constraints, create=True),  # type: ignore[arg-type]
            _Follow(subjects.HOST_SETTINGS_BUCKET, state.host_settings, create=True),  # type: ignore[arg-type]
        ]
        self._kv: dict[str, KeyValue] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- readiness ----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Every bucket's contents have been read once (the state is as current as NATS)."""
        return all(f.loaded for f in self._follows)

    def readiness(self) -> tuple[bool, str]:
        return self.loaded, "; ".join(f"{f.bucket}: {f.detail}" for f in self._follows)

    # -- watchers -----------------------------------------------------------------------------

    async def start(self) -> None:
        for follow in self._follows:
            follow.task = asyncio.create_task(self._follow(follow), name=f"watch {follow.bucket}")

    async def stop(self) -> None:
        for follow in self._follows:
            if follow.task is not None:
                follow.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow.task

    async def _open(self, bucket: str, create: bool) -> KeyValue:
        kv = self._kv.get(bucket)
        if kv is None:
            kv = await self._bus.key_value(
                bucket,
                history=self._options.kv_history,
                replicas=self._options.kv_replicas,
                create=create,
            )
            self._kv[bucket] = kv
        return kv

    async def _follow(self, follow: _Follow) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self._options.retry_interval)
            first = False
            try:
                await self._bus.wait_connected()
                try:
                    kv = await self._open(follow.bucket, follow.create)
                except nats.js.errors.BucketNotFoundError:
                    follow.detail = "waiting for the bucket (no discovery service has published yet)"
                    continue
                watcher = await kv.watchall()
                follow.detail = "loading" if not follow.loaded else "reloading"
                seen: set[str] | None = set()
                try:
                    async for entry in watcher:
                        if entry is None:  # the bucket's current values are all in
                            if seen is not None:
                                # Keys that vanished while no watcher ran (their markers gone too).
                                follow.mirror.retain(seen)
                                seen = None
                            follow.loaded = True
                            follow.detail = f"{len(follow.mirror)} keys"
                            log.info(
                                "bucket loaded", extra={"bucket": follow.bucket, "keys": len(follow.mirror)}
                            )
                            continue
                        if seen is not None:
                            seen.add(entry.key)
                        self._apply(follow, entry)
                finally:
                    with contextlib.suppress(*TRANSIENT):
                        await watcher.stop()  # type: ignore[no-untyped-call]
                # The watcher stops only when told to; reaching here means it was stopped under us.
                follow.detail = "watcher stopped; restarting"
            except TRANSIENT as exc:
                follow.detail = f"error: {type(exc).__name__}: {exc}; retrying"
                self._metrics.watch_restarts.labels(follow.bucket).inc()
                self._kv.pop(follow.bucket, None)
                log.warning(
                    "KV watcher failed, restarting",
                    extra={"bucket": follow.bucket, "error": f"{type(exc).__name__}: {exc}"},
                )

    def _apply(self, follow: _Follow, entry: KeyValue.Entry) -> None:
        revision = entry.revision or 0
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            follow.mirror.delete(entry.key, revision)
            self._metrics.kv_updates.labels(follow.bucket, "delete").inc()
        else:
            follow.mirror.put(entry.key, revision, entry.value)
            self._metrics.kv_updates.labels(follow.bucket, "put").inc()
        if follow.loaded:
            follow.detail = f"{len(follow.mirror)} keys"

    # -- compare-and-swap writes ----------------------------------------------------------------

    async def modify_constraints(
        self, host: str, change: Callable[[HostConstraints | None], HostConstraints | None]
    ) -> HostConstraints | None:
        return await self._modify(
            subjects.CONSTRAINTS_BUCKET, CONSTRAINTS, self._state.constraints, host, change
        )

    async def modify_host_settings(
        self, host: str, change: Callable[[HostSettings | None], HostSettings | None]
    ) -> HostSettings | None:
        def stamped(current: HostSettings | None) -> HostSettings | None:
            new = change(current)
            return None if new is None else new.model_copy(update={"updated_at": time.time()})

        return await self._modify(
            subjects.HOST_SETTINGS_BUCKET, HOST_SETTINGS, self._state.host_settings, host, stamped
        )

    async def _modify(
        self,
        bucket: str,
        schema: Schema[M],
        mirror: Mirror[M],
        key: str,
        change: Callable[[M | None], M | None],
    ) -> M | None:
        """Read the key, apply ``change`` (which may raise :class:`HandlerError`), write it back if
        nothing changed it meanwhile; None deletes the key. Returns what was written."""
        kv = await self._call(self._open(bucket, create=True))
        # Changes to one key through this instance go one at a time: only other instances'
        # writes can make a compare-and-swap lose, and then a short random pause spreads the retries.
        async with self._locks.setdefault((bucket, key), asyncio.Lock()):
            return await self._modify_locked(kv, bucket, schema, mirror, key, change)

    async def _modify_locked(
        self,
        kv: KeyValue,
        bucket: str,
        schema: Schema[M],
        mirror: Mirror[M],
        key: str,
        change: Callable[[M | None], M | None],
    ) -> M | None:
        for attempt in range(self._options.cas_attempts):
            if attempt:
                await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
            current, revision = await self._call(self._read(kv, schema, key))
            new = change(current)
            try:
                if new is None:
                    if current is not None:
                        await self._call(kv.delete(key, last=revision))
                        mirror.delete(key, revision + 1)
                    return None
                data = schema.encode(new)
                if current is None:
                    written = await self._call(kv.create(key, data))
                else:
                    written = await self._call(kv.update(key, data, last=revision))
            except nats.js.errors.KeyWrongLastSequenceError:
                self._metrics.cas_conflicts.labels(bucket).inc()
                continue
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    self._metrics.cas_conflicts.labels(bucket).inc()
                    continue
                raise HandlerError(503, f"{bucket}: {exc}") from None
            mirror.put_value(key, written, new)
            return new
        raise HandlerError(
            409, f"{bucket}/{key} kept changing under this update ({self._options.cas_attempts} tries); retry"
        )

    @staticmethod
    async def _read(kv: KeyValue, schema: Schema[M], key: str) -> tuple[M | None, int]:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        try:
            return schema.decode(entry.value), entry.revision or 0
        except PayloadError as exc:
            raise HandlerError(500, f"{key}: stored value unreadable: {exc}") from None

    @staticmethod
    async def _call(op: Awaitable[_T]) -> _T:
        """A KV operation; a NATS that is down or slow becomes a 503 answer."""
        try:
            return await op
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError, HandlerError):
            raise
        except TRANSIENT as exc:
            raise HandlerError(503, f"NATS: {type(exc).__name__}: {exc}") from None
