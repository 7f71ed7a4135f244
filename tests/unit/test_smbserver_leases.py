"""Migration shares and their leases (ferry_smbserver.leases), against a real SMB server's share
table and an in-memory lease store; the NATS and SMB ends are in tests/integration."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ferry_runtime.migration_shares import CreateShare, RemoveShare, RenewShare
from ferry_smbserver.app import ServerShares, configured_shares
from ferry_smbserver.leases import LeaseRecord, MigrationShares, ShareError, StoreUnavailable
from ferry_smbserver.metrics import SmbMetrics
from ferry_smbserver.settings import MigrationOptions, SmbServerSettings
from prometheus_client import CollectorRegistry
from smbcore.aio_server import ServerSettings, SMBServer
from smbcore.auth import ServerAuthenticator, UserDatabase

HOST = "hv02"


def exists(path: str | Path) -> bool:
    return Path(path).exists()


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], LeaseRecord] = {}
        self.down = False
        self.puts = 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("NATS is down (test)")

    async def put(self, record: LeaseRecord) -> None:
        await asyncio.sleep(0)
        self._check()
        self.puts += 1
        self.records[(record.source, record.migration_id)] = record

    async def delete(self, record: LeaseRecord) -> None:
        await asyncio.sleep(0)
        self._check()
        self.records.pop((record.source, record.migration_id), None)

    async def load(self) -> list[LeaseRecord]:
        self._check()
        return list(self.records.values())


@dataclass
class Rig:
    shares: MigrationShares
    server: SMBServer
    store: MemoryStore
    root: Path
    users: UserDatabase
    metrics: SmbMetrics


def make_rig(tmp_path: Path, store: MemoryStore | None = None, **options: object) -> Rig:
    root = tmp_path / "vms"
    root.mkdir(exist_ok=True)
    users = UserDatabase(tmp_path / "users.db")
    if not users.has_user("host$hv01"):
        users.add_user("host$hv01", "s3cret-hv01")
    server = SMBServer(
        ServerSettings(
            shares=configured_shares(SmbServerSettings()),
            authenticator_factory=lambda: ServerAuthenticator(users),
            initial_token=ServerAuthenticator.initial_token(),
        )
    )
    metrics = SmbMetrics(CollectorRegistry())
    store = store or MemoryStore()
    migration = MigrationOptions.model_validate({"allowed_roots": [str(root)], "min_lease": 0.05, **options})
    shares = MigrationShares(HOST, migration, ServerShares(server), store, users, metrics)
    return Rig(shares, server, store, root, users, metrics)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = make_rig(tmp_path)
    await rig.shares.restore()
    yield rig
    await rig.shares.close()


def create(rig: Rig, migration_id: str = "m1", lease: float = 30.0, dest: str | None = None) -> CreateShare:
    return CreateShare(
        source="hv01",
        migration_id=migration_id,
        destination=dest or str(rig.root / "web01"),
        lease_seconds=lease,
    )


def events(rig: Rig) -> dict[str, float]:
    return {
        s.labels["event"]: s.value
        for metric in rig.metrics.migration_share_events.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }


async def test_create_serves_a_hidden_share_for_one_account(rig: Rig) -> None:
    reply = await rig.shares.create(create(rig))
    staging = rig.root / "web01" / ".ferry-staging" / "hv01.m1"
    assert reply.created and reply.share == "hv01.m1$" and reply.unc == "\\\\hv02\\hv01.m1$"
    assert reply.account == "host$hv01" and reply.path == str(staging) and staging.is_dir()
    share = rig.server.state.shares["hv01.m1$"]
    assert share.hidden and share.path == str(staging) and share.users == frozenset({"host$hv01"})
    assert share.allows("HOST$HV01") and not share.allows("alice")
    assert rig.store.records[("hv01", "m1")].path == str(staging)
    assert rig.shares.names() == {"hv01.m1$"}
    assert events(rig) == {"created": 1.0}


async def test_create_is_idempotent_and_a_different_destination_conflicts(rig: Rig) -> None:
    first = await rig.shares.create(create(rig, lease=5))
    (Path(first.path) / "disk.qcow2").write_bytes(b"x")
    again = await rig.shares.create(create(rig, lease=10))
    assert not again.created and again.path == first.path and again.expires_at > first.expires_at
    assert (Path(first.path) / "disk.qcow2").exists()  # nothing made again
    with pytest.raises(ShareError) as err:
        await rig.shares.create(create(rig, dest=str(rig.root / "elsewhere")))
    assert err.value.status == 409 and "already has share" in err.value.message
    assert events(rig) == {"created": 1.0, "repeated": 1.0, "refused": 1.0}


@pytest.mark.parametrize(
    ("dest", "status", "message"),
    [
        ("/etc", 403, "not under an allowed root"),
        ("{root}/../escape", 400, "no '..'"),
        ("{root}/x/.ferry-staging/y", 400, "inside a staging folder"),
    ],
)
async def test_destinations_outside_the_roots_are_refused(
    rig: Rig, dest: str, status: int, message: str
) -> None:
    with pytest.raises(ShareError) as err:
        await rig.shares.create(create(rig, dest=dest.format(root=rig.root)))
    assert err.value.status == status and message in err.value.message
    assert rig.shares.names() == set() and rig.store.records == {}


async def test_a_link_out_of_the_root_is_refused(rig: Rig, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rig.root / "link").symlink_to(outside)
    with pytest.raises(ShareError) as err:
        await rig.shares.create(create(rig, dest=str(rig.root / "link" / "vm")))
    assert err.value.status == 403
    assert not (outside / "vm").exists()


async def test_no_roots_no_shares(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, allowed_roots=[])
    await rig.shares.restore()
    with pytest.raises(ShareError, match="no \\[migration\\] allowed_roots") as err:
        await rig.shares.create(create(rig))
    assert err.value.status == 403


async def test_a_source_without_an_account_is_refused(rig: Rig) -> None:
    request = CreateShare(source="hv09", migration_id="m1", destination=str(rig.root), lease_seconds=5)
    with pytest.raises(ShareError) as err:
        await rig.shares.create(request)
    assert err.value.status == 403 and "ferry smbserver user add 'host$hv09'" in err.value.message
    rig.users.add_user("host$hv09", "another-secret")  # added meanwhile: taken at once
    assert (await rig.shares.create(request)).created


async def test_lease_bounds(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, min_lease=2, max_lease=60)
    await rig.shares.restore()
    assert (await rig.shares.create(create(rig, "a", lease=0.1))).lease_seconds == 2
    assert (await rig.shares.create(create(rig, "b", lease=1e6))).lease_seconds == 60
    await rig.shares.close()


async def test_the_lease_runs_out_without_renewal(rig: Rig) -> None:
    reply = await rig.shares.create(create(rig, lease=1.0))
    staging = Path(reply.path)
    (staging / "disk.qcow2").write_bytes(b"x" * 1000)
    for _ in range(2):  # renewals keep it past its first lease
        await asyncio.sleep(0.6)
        await rig.shares.renew(RenewShare(source="hv01", migration_id="m1", lease_seconds=1.0))
    assert "hv01.m1$" in rig.server.state.shares
    for _ in range(100):  # the record goes last
        if not rig.store.records:
            break
        await asyncio.sleep(0.05)
    assert "hv01.m1$" not in rig.server.state.shares
    assert not exists(staging) and not exists(staging.parent)  # empty .ferry-staging goes too
    assert (rig.root / "web01").is_dir()  # the destination stays
    assert rig.store.records == {}
    assert events(rig)["expired"] == 1 and events(rig)["renewed"] == 2
    with pytest.raises(ShareError) as err:
        await rig.shares.renew(RenewShare(source="hv01", migration_id="m1", lease_seconds=5))
    assert err.value.status == 404 and "lease ran out" in err.value.message


async def test_remove_with_and_without_keeping_the_files(rig: Rig) -> None:
    kept = await rig.shares.create(create(rig, "keep"))
    gone = await rig.shares.create(create(rig, "gone"))
    (Path(kept.path) / "disk").write_bytes(b"k")
    result = await rig.shares.remove(RemoveShare(source="hv01", migration_id="keep", keep_staging=True))
    assert result.removed and not result.staging_removed
    assert (Path(kept.path) / "disk").read_bytes() == b"k"
    result = await rig.shares.remove(RemoveShare(source="hv01", migration_id="gone", reason="cancelled"))
    assert result.removed and result.staging_removed and not exists(gone.path)
    assert Path(kept.path).parent.is_dir()  # still holds the kept one
    again = await rig.shares.remove(RemoveShare(source="hv01", migration_id="gone"))
    assert not again.removed and not again.staging_removed
    assert rig.shares.names() == set() and rig.store.records == {}


async def test_no_record_no_share(rig: Rig) -> None:
    rig.store.down = True
    with pytest.raises(ShareError) as err:
        await rig.shares.create(create(rig))
    assert err.value.status == 503 and "no share created" in err.value.message
    assert "hv01.m1$" not in rig.server.state.shares
    assert not (rig.root / "web01" / ".ferry-staging" / "hv01.m1").exists()


async def test_record_deletions_are_retried_once_nats_is_back(rig: Rig) -> None:
    await rig.shares.create(create(rig))
    rig.store.down = True
    await rig.shares.remove(RemoveShare(source="hv01", migration_id="m1"))
    assert ("hv01", "m1") in rig.store.records  # could not be deleted yet
    rig.store.down = False
    task = asyncio.create_task(rig.shares.maintain(lambda: True))
    await asyncio.sleep(0.1)
    assert rig.store.records == {}
    task.cancel()


async def test_restart_restores_live_leases_and_cleans_expired_ones(tmp_path: Path) -> None:
    store = MemoryStore()
    before = make_rig(tmp_path, store)
    await before.shares.restore()
    live = await before.shares.create(create(before, "live", lease=30))
    dead = await before.shares.create(create(before, "dead", lease=0.2))
    (Path(dead.path) / "disk").write_bytes(b"d")
    await before.shares.close()  # the process dies: the shares go, records and folders stay
    await asyncio.sleep(0.3)

    after = make_rig(tmp_path, store)
    assert not after.shares.restored
    with pytest.raises(ShareError) as err:
        await after.shares._wait_restored(timeout=0.01)
    assert err.value.status == 503
    await after.shares.restore()
    assert after.shares.names() == {"hv01.live$"}
    assert after.server.state.shares["hv01.live$"].path == live.path
    assert not exists(dead.path)
    assert set(store.records) == {("hv01", "live")}
    assert events(after) == {"restored": 1.0, "cleaned": 1.0}
    await after.shares.close()


async def test_a_tampered_record_never_deletes_outside_the_roots(tmp_path: Path) -> None:
    store = MemoryStore()
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "file").write_bytes(b"p")
    store.records[("hv01", "x")] = LeaseRecord(
        host=HOST, source="hv01", migration_id="x", share="hv01.x$", account="host$hv01",
        destination=str(tmp_path), path=str(victim), encrypt=False, lease_seconds=1, expires_at=0,
        created_at=0,
    )  # fmt: skip
    rig = make_rig(tmp_path, store)
    await rig.shares.restore()
    assert (victim / "file").exists()
    assert store.records == {}  # the record is dropped all the same


async def test_concurrent_requests_for_many_migrations(rig: Rig) -> None:
    """Creates, repeats, renewals and removals in any order, for the same and for different
    migrations: each migration ends with a share, its folder and its record, or none of them."""
    ids = [f"m{i}" for i in range(12)]
    rng = random.Random(7)
    calls = []
    for migration_id in ids:
        for _ in range(4):
            kind = rng.choice(["create", "create", "renew", "remove"])
            if kind == "create":
                calls.append(rig.shares.create(create(rig, migration_id, lease=30)))
            elif kind == "renew":
                calls.append(
                    rig.shares.renew(RenewShare(source="hv01", migration_id=migration_id, lease_seconds=30))
                )
            else:
                calls.append(rig.shares.remove(RemoveShare(source="hv01", migration_id=migration_id)))
    rng.shuffle(calls)
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        assert not isinstance(result, Exception) or (isinstance(result, ShareError) and result.status == 404)
    staging = rig.root / "web01" / ".ferry-staging"
    for migration_id in ids:
        served = f"hv01.{migration_id}$" in rig.server.state.shares
        assert served == (f"hv01.{migration_id}$" in rig.shares.names())
        assert served == (("hv01", migration_id) in rig.store.records)
        assert served == (staging / f"hv01.{migration_id}").is_dir()
    assert not rig.shares._locks  # no lock left behind
