"""What FSCTL_QUERY_NETWORK_INTERFACE_INFO tells clients: this host's live interfaces.

The list follows the inventory the discovery service keeps in the KV bucket
``ferry-inventory`` (and announces on ``ferry.inventory.changed.<host>``), so a link going
down, an address appearing or an RDMA NIC arriving changes what clients are told at their
next query. Without NATS, or while this host has no inventory there, the kernel is read
directly (``ferry_hostnet``), every ``refresh_interval``. Operator overrides
(``[interfaces.<name>]``) apply last: speed, RSS, RDMA, or not advertised at all.

Every local address is also kept with its interface (advertised or not), so that a channel's
server address names its interface, index, speed and capabilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Literal

import nats.errors
import nats.js.errors
from ferry_hostnet import INVENTORY, Inventory
from ferry_hostnet.collect import collect_inventory
from ferry_runtime import subjects
from ferry_runtime.bus import Bus, BusError, Request
from ferry_runtime.codec import PayloadError
from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo

from .settings import AdvertiseOptions, AdvertiseOverride

log = logging.getLogger(__name__)

Source = Literal["discovery", "kernel", "none"]


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """One address of one of this host's interfaces, as advertised (after overrides)."""

    interface: str
    ifindex: int
    address: str
    speed_bps: int
    rss: bool
    rdma: bool
    advertised: bool

    def info(self) -> NetworkInterfaceInfo:
        caps = (InterfaceCapability.RSS if self.rss else 0) | (InterfaceCapability.RDMA if self.rdma else 0)
        return NetworkInterfaceInfo(self.ifindex, int(caps), self.speed_bps, self.address)


def normalize_address(address: str) -> str:
    """An address as the inventory writes it (IPv4-mapped IPv6 as IPv4, no zone)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def local_addresses(
    inventory: Inventory,
    overrides: dict[str, AdvertiseOverride],
    *,
    include_loopback: bool,
    default_speed: int,
) -> list[LocalAddress]:
    """Every address of the inventory with what is advertised for it; advertised are the
    global and site-scope addresses of interfaces that are up (and not loopback unless asked),
    and not switched off by an override."""
    result = []
    for iface in sorted(inventory.interfaces, key=lambda i: i.ifindex):
        o = overrides.get(iface.name, AdvertiseOverride())
        speed = o.speed or iface.speed_bps or default_speed
        rss = iface.rss_capable if o.rss is None else o.rss
        rdma = iface.rdma_capable if o.rdma is None else o.rdma
        usable = iface.is_up and o.advertise and (include_loopback or not iface.loopback)
        for address in iface.addresses:
            scoped = address.scope in ("global", "site") or (include_loopback and iface.loopback)
            result.append(
                LocalAddress(
                    iface.name,
                    iface.ifindex,
                    normalize_address(address.address),
                    speed,
                    rss,
                    rdma,
                    usable and scoped,
                )
            )
    return result


class Advertiser:
    """Keeps the advertised list current; :meth:`interfaces` is what the SMB server asks."""

    def __init__(
        self,
        host: str,
        options: AdvertiseOptions,
        overrides: dict[str, AdvertiseOverride],
        bus: Bus | None,
    ) -> None:
        self._host = host
        self._options = options
        self._overrides = overrides
        self._bus = bus
        self._addresses: list[LocalAddress] = []
        self._by_address: dict[str, LocalAddress] = {}
        self._advertised: list[NetworkInterfaceInfo] = []
        self.source: Source = "none"
        self.collected_at: float | None = None
        self.updated_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the server and the views read ---------------------------------------------------

    def interfaces(self) -> list[NetworkInterfaceInfo]:
        """The FSCTL_QUERY_NETWORK_INTERFACE_INFO answer (a fresh list at each query)."""
        return list(self._advertised)

    @property
    def addresses(self) -> list[LocalAddress]:
        return list(self._addresses)

    def lookup(self, address: str) -> LocalAddress | None:
        return self._by_address.get(normalize_address(address))

    # -- updating ------------------------------------------------------------------------------

    def apply(self, inventory: Inventory, source: Source) -> bool:
        """Take this inventory; True if what clients are told changed."""
        addresses = local_addresses(
            inventory,
            self._overrides,
            include_loopback=self._options.include_loopback,
            default_speed=self._options.default_speed,
        )
        advertised = [a.info() for a in addresses if a.advertised]
        changed = advertised != self._advertised
        self._addresses = addresses
        self._by_address = {a.address: a for a in addresses}
        self._advertised = advertised
        if changed or source != self.source:
            log.info(
                "advertised interfaces",
                extra={
                    "source": source,
                    "addresses": [f"{a.interface}:{a.address}" for a in addresses if a.advertised],
                },
            )
        self.source = source
        self.collected_at = inventory.collected_at
        self.updated_at = time.time()
        return changed

    async def read_kernel(self) -> Inventory:
        return await asyncio.to_thread(collect_inventory, self._host, {}, {}, include_loopback=True)

    async def read_discovery(self) -> Inventory | None:
        """This host's inventory from the KV bucket, None when there is none (or no NATS)."""
        if self._bus is None or not self._bus.connected:
            return None
        try:
            kv = await self._bus.key_value(subjects.INVENTORY_BUCKET, create=False)
            entry = await kv.get(self._host)
        except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
            return None
        except (BusError, nats.errors.Error, TimeoutError) as exc:
            log.debug("cannot read the inventory from KV", extra={"error": repr(exc)})
            return None
        if not entry.value:  # the delete marker the bucket's TTL left
            return None
        try:
            return INVENTORY.decode(entry.value)
        except PayloadError as exc:
            log.warning("unreadable inventory in KV", extra={"error": str(exc)})
            return None

    async def refresh(self) -> None:
        source = self._options.source
        if source in ("auto", "discovery"):
            inventory = await self.read_discovery()
            if inventory is not None:
                self.apply(inventory, "discovery")
                return
            if source == "discovery":
                if self.source == "none":
                    log.warning("no inventory for this host from discovery yet")
                return
        try:
            self.apply(await self.read_kernel(), "kernel")
        except OSError as exc:
            log.error("cannot read the interfaces from the kernel", extra={"error": str(exc)})

    async def _on_changed(self, request: Request) -> bytes:
        """``ferry.inventory.changed.<host>``: discovery saw a change; take it at once."""
        if self._options.source == "kernel":
            return b""
        try:
            inventory = INVENTORY.decode(request.data)
        except PayloadError as exc:
            log.warning("unreadable inventory change", extra={"error": str(exc)})
            return b""
        if inventory.host == self._host:
            self.apply(inventory, "discovery")
        return b""

    def poke(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Read once now (the kernel, unless only discovery may be used), then keep following."""
        if self._options.source != "discovery":
            try:
                self.apply(await self.read_kernel(), "kernel")
            except OSError as exc:
                log.error("cannot read the interfaces from the kernel", extra={"error": str(exc)})
        if self._bus is not None:
            await self._bus.serve(
                subjects.inventory_changed(self._host),
                self._on_changed,
                pattern=f"{subjects.INVENTORY_CHANGED_PREFIX}.<host>",
            )
        self._task = asyncio.create_task(self._run(), name="advertise-interfaces")

    async def _run(self) -> None:
        connected: asyncio.Task[object] | None = None
        if self._bus is not None:
            connected = asyncio.create_task(self._bus.wait_connected())
        try:
            while True:
                await self.refresh()
                wake = asyncio.create_task(self._wake.wait())
                waiting: set[asyncio.Task[object]] = {wake}
                if connected is not None and not connected.done():
                    waiting.add(connected)
                await asyncio.wait(
                    waiting, timeout=self._options.refresh_interval, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                self._wake.clear()
        finally:
            if connected is not None:
                connected.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
