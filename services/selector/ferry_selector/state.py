"""What the selector knows, mirrored from NATS: inventories, constraints, host settings.

Each bucket is followed by a KV watcher (see :mod:`.store`) that feeds this object; nothing
here does I/O. Values are kept decoded and ready for planning (an inventory as the
:class:`~smbcore.selection.Nic` tuple the rules take), so a plan costs no decoding.

Every entry carries its KV revision, and an older revision never replaces a newer one: a
change this instance wrote is applied at once (read-your-writes) and again, harmlessly, when
its watcher delivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ferry_hostnet import INVENTORY
from ferry_hostnet.netsettings import CONSTRAINTS, HOST_SETTINGS, HostConstraints, HostSettings
from ferry_runtime.codec import PayloadError, Schema
from pydantic import BaseModel
from smbcore.selection import Nic, nic_from_inventory

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class HostView:
    """One host's inventory, ready for the rules."""

    host: str
    collected_at: float
    nics: tuple[Nic, ...]

    @property
    def roce_without_pfc(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nics if n.roce_without_pfc)

    def has_interface(self, ref: int | str) -> bool:
        return any((n.index == ref) if isinstance(ref, int) else (n.name == ref) for n in self.nics)


def host_view(data: bytes) -> HostView:
    """Decode a ``ferry.inventory`` value; :class:`PayloadError` if it is not one."""
    inventory = INVENTORY.decode(data)
    try:
        nics = tuple(nic_from_inventory(i.model_dump(mode="json")) for i in inventory.interfaces)
    except ValueError as exc:
        raise PayloadError(f"ferry.inventory of {inventory.host}: {exc}") from None
    return HostView(inventory.host, inventory.collected_at, nics)


class Mirror(Generic[V]):
    """One bucket's keys and decoded values, with their revisions."""

    def __init__(self, bucket: str, decode: Callable[[bytes], V]) -> None:
        self.bucket = bucket
        self._decode = decode
        self._values: dict[str, tuple[int, V]] = {}
        #: The revision of the last delete seen per key, so that a late put cannot resurrect it.
        self._deleted: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> V | None:
        found = self._values.get(key)
        return None if found is None else found[1]

    def items(self) -> list[tuple[str, V]]:
        return [(k, v) for k, (_, v) in self._values.items()]

    def keys(self) -> list[str]:
        return list(self._values)

    def revision(self, key: str) -> int:
        """The revision of the key's value, or of its deletion; 0 when never seen."""
        found = self._values.get(key)
        return found[0] if found is not None else self._deleted.get(key, 0)

    def put(self, key: str, revision: int, data: bytes) -> bool:
        """Apply a value; False if it is not newer than what is held, or unreadable (logged)."""
        if revision <= self.revision(key):
            return False
        try:
            value = self._decode(data)
        except PayloadError as exc:
            log.warning(
                "unreadable KV value ignored", extra={"bucket": self.bucket, "key": key, "error": str(exc)}
            )
            return False
        return self.put_value(key, revision, value)

    def put_value(self, key: str, revision: int, value: V) -> bool:
        """Apply a decoded value (one this instance just wrote, or :meth:`put`'s)."""
        if revision <= self.revision(key):
            return False
        self._values[key] = (revision, value)
        self._deleted.pop(key, None)
        return True

    def retain(self, keys: set[str]) -> None:
        """Forget the values of every key not in ``keys`` (a reload did not find them)."""
        for key in [k for k in self._values if k not in keys]:
            self._deleted[key] = self._values.pop(key)[0]

    def delete(self, key: str, revision: int) -> bool:
        """Apply a deletion (a delete or purge marker, or a TTL expiry); True if a value went."""
        if revision <= self.revision(key):
            return False
        existed = self._values.pop(key, None) is not None
        self._deleted[key] = revision
        return existed


def _decoder(schema: Schema[M]) -> Callable[[bytes], M]:
    return schema.decode


class ClusterState:
    """The three mirrors the planner reads."""

    def __init__(self) -> None:
        self.inventories: Mirror[HostView] = Mirror("inventory", host_view)
        self.constraints: Mirror[HostConstraints] = Mirror("constraints", _decoder(CONSTRAINTS))
        self.host_settings: Mirror[HostSettings] = Mirror("host-settings", _decoder(HOST_SETTINGS))

    def host(self, name: str) -> HostView | None:
        return self.inventories.get(name)

    def roce_without_pfc(self) -> int:
        """RoCE interfaces with PFC off or unknown, in every inventory held (for the gauge)."""
        return sum(len(view.roce_without_pfc) for _, view in self.inventories.items())
