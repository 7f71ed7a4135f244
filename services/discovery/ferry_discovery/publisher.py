"""Keeping the host's inventory current: read the kernel on netlink events and on a timer,
put it into the KV bucket (which also renews its TTL), announce changes.

Reading and publishing are independent: the HTTP API serves the latest reading even while
NATS is unreachable, and the first publish happens as soon as the bus connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ferry_hostnet import INVENTORY, Inventory
from ferry_hostnet.collect import collect_inventory
from ferry_hostnet.watch import NetlinkWatcher
from ferry_runtime import subjects
from ferry_runtime.bus import Bus, BusError
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry, Counter, Gauge

from .settings import DiscoverySettings

log = logging.getLogger(__name__)


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reads = Counter(
            "ferry_discovery_reads_total", "kernel reads of the interfaces", registry=registry
        )
        self.publishes = Counter(
            "ferry_discovery_publishes_total",
            "inventory writes to KV, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.changes = Counter("ferry_discovery_changes_total", "inventory changes seen", registry=registry)
        self.interfaces = Gauge(
            "ferry_discovery_interfaces", "interfaces in the inventory", registry=registry
        )
        self.last_publish = Gauge(
            "ferry_discovery_last_publish_timestamp_seconds",
            "UNIX time of the last successful publish",
            registry=registry,
        )


class InventoryPublisher:
    def __init__(self, settings: DiscoverySettings, bus: Bus, metrics: PublisherMetrics) -> None:
        self._settings = settings
        self._bus = bus
        self._metrics = metrics
        self._options = settings.discovery
        self._labels = {
            k: v
            for k, v in (
                ("site", settings.host.site),
                ("row", settings.host.row),
                ("rack", settings.host.rack),
            )
            if v
        }
        self.current: Inventory | None = None
        self._published: Inventory | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watcher = NetlinkWatcher()
        self._kv: KeyValue | None = None

    @property
    def host(self) -> str:
        return self._settings.host.name

    @property
    def published(self) -> bool:
        return self._published is not None

    async def read(self) -> Inventory:
        inventory = await asyncio.to_thread(
            collect_inventory,
            self.host,
            self._labels,
            dict(self._settings.interfaces),
            include_loopback=self._options.include_loopback,
        )
        self._metrics.reads.inc()
        self._metrics.interfaces.set(len(inventory.interfaces))
        if not inventory.same_as(self.current):
            if self.current is not None:
                self._metrics.changes.inc()
                log.info("interfaces changed", extra={"host": self.host})
            self.current = inventory
        return inventory

    async def start(self) -> None:
        await self.read()
        self._watcher.start()
        self._watch_task = asyncio.create_task(self._watch(), name="netlink-watch")
        self._task = asyncio.create_task(self._run(), name="inventory-publisher")

    async def stop(self) -> None:
        for task in (self._watch_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher.close()

    def poke(self) -> None:
        """Read and publish now (also used by netlink events)."""
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            await self._watcher.changed()
            await asyncio.sleep(self._options.debounce)
            self.poke()

    async def _run(self) -> None:
        connected = asyncio.create_task(self._bus.wait_connected())
        try:
            while True:
                wake = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {wake, connected} if not connected.done() else {wake},
                    timeout=self._options.refresh_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake.cancel()
                self._wake.clear()
                try:
                    inventory = await self.read()
                except OSError as exc:
                    log.error("cannot read interfaces", extra={"error": str(exc)})
                    continue
                if self._bus.connected:
                    await self._publish(inventory)
        finally:
            connected.cancel()

    async def _publish(self, inventory: Inventory) -> None:
        changed = not inventory.same_as(self._published)
        try:
            if self._kv is None:
                self._kv = await self._bus.key_value(
                    subjects.INVENTORY_BUCKET,
                    ttl=self._options.inventory_ttl,
                    limit_marker_ttl=self._options.inventory_ttl,
                    replicas=self._options.kv_replicas,
                )
            await self._kv.put(self.host, INVENTORY.encode(inventory))
            if changed:
                await self._bus.publish(subjects.inventory_changed(self.host), INVENTORY.encode(inventory))
        except (BusError, NatsError, JetStreamError, TimeoutError) as exc:
            self._metrics.publishes.labels("error").inc()
            log.warning("cannot publish inventory", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self._metrics.publishes.labels("ok").inc()
        self._metrics.last_publish.set(time.time())
        if changed:
            log.info(
                "inventory published", extra={"host": self.host, "interfaces": len(inventory.interfaces)}
            )
        self._published = inventory
