"""Temporary hidden migration shares: created on a source host's request, gone with their lease.

A share ``<SOURCE>.<ID>$`` is rooted at ``<destination>/.ferry-staging/<SOURCE>.<ID>/`` and
open to ``host$<SOURCE>`` only (see :mod:`ferry_runtime.migration_shares` for the contract).
Its lease is a timer here; when it runs out (no renewal), or the migrator removes the share,
the share leaves the server (its tree connects end, its opens close) and the staging folder
is deleted, unless a removal asks to keep it for the target's migrator to adopt.

Requests for one migration (source, id) are handled one at a time, in arrival order; those
for different migrations run side by side. Creating is idempotent: the same migration with the
same destination again is a renewal.

Every lease is also written to the KV bucket ``ferry-smbserver-leases``: a restarted smbserver
serves again the shares whose lease still runs, and deletes the staging folders of those whose
lease ran out while it was down. A share is never created without its record (no NATS, no
share); a record whose deletion failed is retried until NATS takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import nats.errors
import nats.js.errors
from ferry_runtime import subjects
from ferry_runtime.bus import Bus, BusError
from ferry_runtime.codec import PayloadError, Schema
from ferry_runtime.migration_shares import (
    STAGING_DIR,
    CreateShare,
    MigrationShare,
    RemoveShare,
    RenewShare,
    ShareKey,
    ShareRemoved,
    staging_name,
)
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict
from smbcore.auth import UserDatabase, UserDatabaseError
from smbcore.messages import ShareType
from smbcore.server import Share

from .metrics import SmbMetrics
from .settings import MigrationOptions

log = logging.getLogger(__name__)

#: Attempts at deleting a staging folder (a write still landing can refill it once).
_RMTREE_ATTEMPTS = 3


class ShareError(Exception):
    """A request that cannot be granted: an HTTP-like status and a message for the requester."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LeaseRecord(BaseModel):
    """A migration share as the lease bucket keeps it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    host: str
    source: str
    migration_id: str
    share: str
    account: str
    destination: str
    path: str
    encrypt: bool
    lease_seconds: float
    expires_at: float
    created_at: float


LEASE = Schema("ferry.smbserver.lease", 1, LeaseRecord)


class StoreUnavailable(Exception):
    """The lease bucket cannot be reached."""


class LeaseStore(Protocol):
    async def put(self, record: LeaseRecord) -> None: ...

    async def delete(self, record: LeaseRecord) -> None: ...

    async def load(self) -> list[LeaseRecord]: ...


def _token(name: str) -> str:
    """A host name as one KV key token (its dots would split it)."""
    return name.replace(".", "=")


class KvLeaseStore:
    """Leases in the KV bucket, keyed ``<host>.<source>.<migration id>``."""

    def __init__(self, bus: Bus, host: str, replicas: int = 1) -> None:
        self._bus = bus
        self._host = host
        self._replicas = replicas
        self._kv: KeyValue | None = None

    def key(self, record: LeaseRecord) -> str:
        return f"{_token(self._host)}.{_token(record.source)}.{record.migration_id}"

    @contextlib.asynccontextmanager
    async def _bucket(self) -> AsyncIterator[KeyValue]:
        try:
            if self._kv is None:
                self._kv = await self._bus.key_value(
                    subjects.SMBSERVER_LEASES_BUCKET, replicas=self._replicas
                )
            yield self._kv
        except (BusError, nats.errors.Error, TimeoutError) as exc:
            raise StoreUnavailable(f"lease bucket unavailable: {type(exc).__name__}: {exc}") from exc

    async def put(self, record: LeaseRecord) -> None:
        async with self._bucket() as kv:
            await kv.put(self.key(record), LEASE.encode(record))

    async def delete(self, record: LeaseRecord) -> None:
        async with self._bucket() as kv:
            await kv.purge(self.key(record))

    async def load(self) -> list[LeaseRecord]:
        prefix = f"{_token(self._host)}."
        records = []
        async with self._bucket() as kv:
            try:
                keys = [k for k in await kv.keys() if k.startswith(prefix)]
            except nats.js.errors.NoKeysError:
                keys = []
            for key in keys:
                try:
                    entry = await kv.get(key)
                except nats.js.errors.NotFoundError:
                    continue  # removed meanwhile
                if not entry.value:
                    continue
                try:
                    records.append(LEASE.decode(entry.value))
                except PayloadError as exc:
                    log.warning("unreadable lease record", extra={"key": key, "error": str(exc)})
        return records


@dataclass(eq=False)
class Lease:
    record: LeaseRecord
    deadline: float  # the loop's clock
    timer: asyncio.TimerHandle | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.record.source, self.record.migration_id


@dataclass(eq=False)
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ShareTable(Protocol):
    """What of the SMB server the leases change (an :class:`~smbcore.aio_server.SMBServer`)."""

    def add_share(self, share: Share) -> None: ...

    def remove_share(self, name: str) -> Share | None: ...

    def get_share(self, name: str) -> Share | None: ...


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _is_directory(path: Path) -> bool:
    """A directory itself, not a link to one."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


class MigrationShares:
    def __init__(
        self,
        host: str,
        options: MigrationOptions,
        table: ShareTable,
        store: LeaseStore,
        users: UserDatabase,
        metrics: SmbMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._options = options
        self._table = table
        self._store = store
        self._users = users
        self._metrics = metrics
        self._clock = clock
        self._leases: dict[tuple[str, str], Lease] = {}
        self._locks: dict[tuple[str, str], _KeyLock] = {}
        self._to_delete: dict[tuple[str, str], LeaseRecord] = {}
        self._restored = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- reading -------------------------------------------------------------------------------

    @property
    def restored(self) -> bool:
        return self._restored.is_set()

    def names(self) -> set[str]:
        """The migration shares' names, lower case."""
        return {lease.record.share.lower() for lease in self._leases.values()}

    def record_of(self, share: str) -> LeaseRecord | None:
        for lease in self._leases.values():
            if lease.record.share.lower() == share.lower():
                return lease.record
        return None

    def shares(self) -> list[MigrationShare]:
        return [self._reply(lease.record, False) for lease in self._leases.values()]

    def _reply(self, record: LeaseRecord, created: bool) -> MigrationShare:
        return MigrationShare(
            host=self._host,
            share=record.share,
            unc=f"\\\\{self._host}\\{record.share}",
            source=record.source,
            migration_id=record.migration_id,
            account=record.account,
            destination=record.destination,
            path=record.path,
            encrypt=record.encrypt,
            lease_seconds=record.lease_seconds,
            expires_at=record.expires_at,
            created=created,
        )

    # -- serializing per migration -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _serialized(self, key: tuple[str, str]) -> AsyncIterator[None]:
        entry = self._locks.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    async def _wait_restored(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._restored.wait(), timeout)
        except TimeoutError:
            raise ShareError(503, "the smbserver is still restoring its leases from NATS; retry") from None

    def _lease_seconds(self, requested: float) -> float:
        return min(max(requested, self._options.min_lease), self._options.max_lease)

    # -- requests ------------------------------------------------------------------------------

    async def create(self, request: CreateShare) -> MigrationShare:
        await self._wait_restored()
        key = (request.source, request.migration_id)
        async with self._serialized(key):
            try:
                return await self._create(request)
            except ShareError:
                self._metrics.migration_share_events.labels("refused").inc()
                raise

    async def _create(self, request: CreateShare) -> MigrationShare:
        self._check_account(request)
        destination = await asyncio.to_thread(self._allowed_destination, request.destination)
        seconds = self._lease_seconds(request.lease_seconds)
        existing = self._leases.get((request.source, request.migration_id))
        if existing is not None:
            if existing.record.destination != str(destination):
                raise ShareError(
                    409,
                    f"migration {request.migration_id} from {request.source} already has share "
                    f"{existing.record.share} at {existing.record.destination}, not {destination}",
                )
            record = await self._extend(existing, seconds)
            self._metrics.migration_share_events.labels("repeated").inc()
            return self._reply(record, False)
        if self._table.get_share(request.share) is not None:
            raise ShareError(409, f"a share named {request.share} already exists on {self._host}")
        staging, made = await asyncio.to_thread(self._make_staging, destination, request)
        now = self._clock()
        record = LeaseRecord(
            host=self._host,
            source=request.source,
            migration_id=request.migration_id,
            share=request.share,
            account=request.account,
            destination=str(destination),
            path=str(staging),
            encrypt=self._options.encrypt,
            lease_seconds=seconds,
            expires_at=now + seconds,
            created_at=now,
        )
        try:
            await self._store.put(record)
        except StoreUnavailable as exc:
            if made:
                await asyncio.to_thread(self._delete_staging, record)
            raise ShareError(503, f"cannot record the lease ({exc}); no share created") from None
        self._serve(record, seconds)
        self._metrics.migration_share_events.labels("created").inc()
        log.info(
            "migration share created",
            extra={"share": record.share, "path": record.path, "account": record.account, "lease": seconds},
        )
        return self._reply(record, True)

    async def renew(self, request: RenewShare) -> MigrationShare:
        await self._wait_restored()
        key = (request.source, request.migration_id)
        async with self._serialized(key):
            lease = self._leases.get(key)
            if lease is None:
                self._metrics.migration_share_events.labels("refused").inc()
                raise ShareError(
                    404,
                    f"no share for migration {request.migration_id} from {request.source} on "
                    f"{self._host} (its lease ran out, or it was removed)",
                )
            record = await self._extend(lease, self._lease_seconds(request.lease_seconds))
            self._metrics.migration_share_events.labels("renewed").inc()
            return self._reply(record, False)

    async def remove(self, request: RemoveShare) -> ShareRemoved:
        await self._wait_restored()
        key = (request.source, request.migration_id)
        async with self._serialized(key):
            lease = self._leases.get(key)
            if lease is None:
                return ShareRemoved(share=request.share, removed=False, staging_removed=False)
            staging_removed = await self._end(lease, keep_staging=request.keep_staging)
            self._metrics.migration_share_events.labels("removed").inc()
            log.info(
                "migration share removed",
                extra={
                    "share": request.share,
                    "reason": request.reason or "removed",
                    "kept": request.keep_staging,
                },
            )
            return ShareRemoved(share=request.share, removed=True, staging_removed=staging_removed)

    # -- checks and folders --------------------------------------------------------------------

    def _check_account(self, request: ShareKey) -> None:
        if not self._options.require_account:
            return
        try:
            self._users.refresh()
        except UserDatabaseError as exc:
            raise ShareError(503, f"cannot read the user database: {exc}") from None
        account = self._users.get(request.account)
        if account is None:
            raise ShareError(
                403,
                f"no account {request.account} on {self._host}: add the source host's identity with "
                f"`ferry smbserver user add '{request.account}' --users {self._users.path}`",
            )
        if account.disabled:
            raise ShareError(403, f"the account {request.account} is disabled on {self._host}")

    def _allowed_destination(self, destination: str) -> Path:
        """The destination with its links resolved, if it lies under an allowed root."""
        path = Path(destination)
        if ".." in path.parts:
            raise ShareError(400, f"destination {destination}: no '..' allowed")
        if STAGING_DIR in path.parts:
            raise ShareError(400, f"destination {destination}: inside a staging folder")
        roots = self._options.allowed_roots
        if not roots:
            raise ShareError(403, f"{self._host} accepts no migration shares (no [migration] allowed_roots)")
        real = _real(path)
        for root in roots:
            real_root = _real(root)
            if real == real_root or real.is_relative_to(real_root):
                return real
        raise ShareError(
            403, f"destination {destination} is not under an allowed root of {self._host}: {', '.join(roots)}"
        )

    def _make_staging(self, destination: Path, request: CreateShare) -> tuple[Path, bool]:
        """``<destination>/.ferry-staging/<SOURCE>.<ID>/``, made if missing; True if made now."""
        try:
            destination.mkdir(mode=0o750, parents=True, exist_ok=True)
            container = destination / STAGING_DIR
            container.mkdir(mode=0o700, exist_ok=True)
            staging = container / staging_name(request.source, request.migration_id)
            made = not staging.exists()
            staging.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ShareError(
                500, f"cannot make the staging folder in {destination}: {exc.strerror}"
            ) from None
        for folder in (destination, container, staging):
            if not _is_directory(folder):
                raise ShareError(500, f"{folder} is not a folder (a link?)")
        return staging, made

    def _staging_ok(self, record: LeaseRecord) -> bool:
        """The record's path is a staging folder of its migration under an allowed root."""
        path = Path(record.path)
        expected = Path(record.destination) / STAGING_DIR / staging_name(record.source, record.migration_id)
        if path != expected or ".." in path.parts:
            return False
        real_container = _real(path.parent)
        return real_container.name == STAGING_DIR and any(
            real_container.is_relative_to(_real(root)) for root in self._options.allowed_roots
        )

    def _delete_staging(self, record: LeaseRecord) -> bool:
        """Delete the staging folder (and the container if it is left empty); True if gone."""
        path = Path(record.path)
        if not self._staging_ok(record):
            log.warning(
                "not deleting a staging folder outside the allowed roots", extra={"path": record.path}
            )
            return False
        for attempt in range(_RMTREE_ATTEMPTS):
            if not path.exists() and not path.is_symlink():
                break
            try:
                if _is_directory(path):
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                if attempt == _RMTREE_ATTEMPTS - 1:
                    log.error(
                        "cannot delete a staging folder", extra={"path": record.path, "error": str(exc)}
                    )
                    return False
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only if no other migration's folder is in it
        return True

    # -- serving and ending --------------------------------------------------------------------

    def _serve(self, record: LeaseRecord, seconds: float) -> None:
        self._table.add_share(
            Share(
                record.share,
                ShareType.DISK,
                encrypt=record.encrypt,
                users=frozenset({record.account.lower()}),
                hidden=True,
                path=record.path,
            )
        )
        self._metrics.share_added(record.share)
        loop = asyncio.get_running_loop()
        lease = Lease(record, loop.time() + seconds)
        self._leases[lease.key] = lease
        self._arm(lease)

    def _arm(self, lease: Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
        loop = asyncio.get_running_loop()
        lease.timer = loop.call_at(lease.deadline, self._on_timer, lease)

    def _on_timer(self, lease: Lease) -> None:
        lease.timer = None
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._expire(lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, lease: Lease) -> None:
        async with self._serialized(lease.key):
            if self._leases.get(lease.key) is not lease:
                return  # removed meanwhile
            if lease.deadline > asyncio.get_running_loop().time():
                self._arm(lease)  # renewed meanwhile
                return
            try:
                await self._end(lease, keep_staging=False)
            except Exception:
                log.exception("ending an expired migration share failed", extra={"share": lease.record.share})
                return
            self._metrics.migration_share_events.labels("expired").inc()
            log.warning(
                "migration share lease ran out",
                extra={"share": lease.record.share, "source": lease.record.source},
            )

    async def _extend(self, lease: Lease, seconds: float) -> LeaseRecord:
        now = self._clock()
        record = lease.record.model_copy(update={"lease_seconds": seconds, "expires_at": now + seconds})
        lease.record = record
        lease.deadline = asyncio.get_running_loop().time() + seconds
        self._arm(lease)
        try:
            await self._store.put(record)
        except StoreUnavailable as exc:
            # The share's lease runs here; the record only matters after a restart.
            log.warning("cannot record a renewed lease", extra={"share": record.share, "error": str(exc)})
        return record

    async def _end(self, lease: Lease, *, keep_staging: bool) -> bool:
        """The share leaves the server (trees end, opens close), then its folder and record go."""
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        self._leases.pop(lease.key, None)
        self._table.remove_share(lease.record.share)
        self._metrics.share_removed(lease.record.share)
        removed = False
        if not keep_staging:
            removed = await asyncio.to_thread(self._delete_staging, lease.record)
        await self._forget(lease.record)
        return removed

    async def _forget(self, record: LeaseRecord) -> None:
        try:
            await self._store.delete(record)
        except StoreUnavailable as exc:
            log.warning(
                "cannot delete a lease record; will retry", extra={"share": record.share, "error": str(exc)}
            )
            self._to_delete[(record.source, record.migration_id)] = record
        else:
            self._to_delete.pop((record.source, record.migration_id), None)

    # -- restart and upkeep ----------------------------------------------------------------

    async def restore(self) -> None:
        """Serve again the shares whose lease still runs; clean up after the others."""
        records = await self._store.load()
        now = self._clock()
        for record in records:
            key = (record.source, record.migration_id)
            async with self._serialized(key):
                if key in self._leases:
                    continue
                remaining = record.expires_at - now
                if remaining > 0 and self._staging_ok(record) and _is_directory(Path(record.path)):
                    self._serve(record, remaining)
                    self._metrics.migration_share_events.labels("restored").inc()
                    log.info(
                        "migration share restored", extra={"share": record.share, "lease_left": remaining}
                    )
                    continue
                await asyncio.to_thread(self._delete_staging, record)
                await self._forget(record)
                self._metrics.migration_share_events.labels("cleaned").inc()
                log.info(
                    "stale migration share cleaned up", extra={"share": record.share, "path": record.path}
                )
        self._restored.set()

    async def maintain(self, connected: Callable[[], bool]) -> None:
        """Restore once NATS is there; then retry record deletions NATS was not there for."""
        while not self._closed:
            if connected():
                if not self._restored.is_set():
                    try:
                        await self.restore()
                    except StoreUnavailable as exc:
                        log.warning("cannot read the leases yet", extra={"error": str(exc)})
                for key, record in list(self._to_delete.items()):
                    if key in self._leases:  # created again meanwhile: its own record stands
                        self._to_delete.pop(key, None)
                        continue
                    await self._forget(record)
            await asyncio.sleep(self._options.maintenance_interval if self._restored.is_set() else 0.5)

    async def close(self) -> None:
        """Stop the timers; the shares stop with the server, their records stay for a restart."""
        self._closed = True
        for lease in self._leases.values():
            if lease.timer is not None:
                lease.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
