"""FsFileService: the shell's side of file operations, on a real folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from smbcore.fileinfo import decode_directory_entries
from smbcore.fileops import (
    CreateRequest,
    LockElement,
    LockFlags,
    LockRequest,
    QueryDirectoryRequest,
    ReadRequest,
    WriteRequest,
)
from smbcore.fileservice import FsFileService, OpenFile
from smbcore.header import Command
from smbcore.ntstatus import NTStatus
from smbcore.server import FileOperation, Share

SHARE_ACCESS_ALL = 7
GENERIC_ALL = 0x10000000
FID = bytes(16)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[FsFileService, Share, Path]]:
    svc = FsFileService()
    yield svc, Share("data", path=str(tmp_path)), tmp_path
    svc.close()


def op(command: Command, request: object, share: Share, handle: object = None) -> FileOperation:
    return FileOperation(1, command, request, share, "alice", handle, FID)  # type: ignore[arg-type]


def open_file(svc: FsFileService, share: Share, name: str, disposition: int = 3) -> OpenFile:
    result, create = svc.run_sync(
        op(Command.CREATE, CreateRequest(GENERIC_ALL, 0, SHARE_ACCESS_ALL, disposition, 0x40, name), share)
    )
    assert result.status == NTStatus.SUCCESS and create is not None
    assert isinstance(result.handle, OpenFile)
    return result.handle


def lock(svc: FsFileService, share: Share, opened: OpenFile, *elements: tuple[int, int, int]) -> int:
    request = LockRequest(FID, tuple(LockElement(o, n, f) for o, n, f in elements))
    return svc.run_sync(op(Command.LOCK, request, share, opened))[0].status


def test_byte_range_locks(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, _ = service
    a = open_file(svc, share, "f.bin")
    b = open_file(svc, share, "f.bin", disposition=1)
    ex, sh, un = (
        LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY,
        LockFlags.SHARED | LockFlags.FAIL_IMMEDIATELY,
        LockFlags.UNLOCK,
    )
    assert lock(svc, share, a, (0, 100, ex)) == NTStatus.SUCCESS
    assert lock(svc, share, b, (50, 10, ex)) == NTStatus.LOCK_NOT_GRANTED
    assert lock(svc, share, b, (50, 10, sh)) == NTStatus.LOCK_NOT_GRANTED
    assert lock(svc, share, a, (50, 10, sh)) == NTStatus.SUCCESS  # own exclusive range, shared
    assert lock(svc, share, b, (100, 10, ex)) == NTStatus.SUCCESS  # adjacent, no overlap
    assert lock(svc, share, b, (0, 0, ex)) == NTStatus.SUCCESS  # zero length never conflicts
    assert lock(svc, share, b, (5, 1, un)) == NTStatus.RANGE_NOT_LOCKED
    assert lock(svc, share, a, (0, 100, un)) == NTStatus.SUCCESS
    assert lock(svc, share, a, (50, 10, un)) == NTStatus.SUCCESS
    assert lock(svc, share, b, (50, 10, ex)) == NTStatus.SUCCESS
    # A failed multi-element request grants none of its elements.
    assert lock(svc, share, a, (200, 10, ex), (50, 1, ex)) == NTStatus.LOCK_NOT_GRANTED
    assert lock(svc, share, b, (200, 10, ex)) == NTStatus.SUCCESS
    # Closing an open drops its locks.
    svc.release(b)
    assert lock(svc, share, a, (50, 10, ex)) == NTStatus.SUCCESS
    svc.release(a)


def read(svc: FsFileService, share: Share, opened: OpenFile, offset: int, length: int) -> int:
    request = ReadRequest(length=length, offset=offset, file_id=FID)
    return svc.run_sync(op(Command.READ, request, share, opened))[0].status


def write(svc: FsFileService, share: Share, opened: OpenFile, offset: int, data: bytes) -> int:
    request = WriteRequest(offset, FID, memoryview(data))
    return svc.run_sync(op(Command.WRITE, request, share, opened))[0].status


def test_io_honours_byte_range_locks(service: tuple[FsFileService, Share, Path]) -> None:
    """MS-FSA 2.1.4.10: another open's exclusive lock blocks reads and writes; a shared lock
    blocks writes, the holder's own too; the holder's exclusive lock lets its own I/O pass."""
    svc, share, root = service
    (root / "f.bin").write_bytes(bytes(200))
    a = open_file(svc, share, "f.bin", disposition=1)
    b = open_file(svc, share, "f.bin", disposition=1)
    ex, sh = LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY, LockFlags.SHARED | LockFlags.FAIL_IMMEDIATELY
    assert lock(svc, share, a, (0, 100, ex)) == NTStatus.SUCCESS
    assert read(svc, share, a, 0, 10) == NTStatus.SUCCESS
    assert write(svc, share, a, 0, b"x") == NTStatus.SUCCESS
    assert read(svc, share, b, 99, 2) == NTStatus.FILE_LOCK_CONFLICT
    assert write(svc, share, b, 50, b"y") == NTStatus.FILE_LOCK_CONFLICT
    assert read(svc, share, b, 100, 10) == NTStatus.SUCCESS  # just past the range
    assert write(svc, share, b, 100, b"z") == NTStatus.SUCCESS
    assert read(svc, share, b, 50, 0) == NTStatus.SUCCESS  # zero length never conflicts
    assert write(svc, share, b, 50, b"") == NTStatus.SUCCESS
    assert lock(svc, share, b, (150, 10, sh)) == NTStatus.SUCCESS
    assert read(svc, share, a, 150, 10) == NTStatus.SUCCESS
    assert read(svc, share, b, 150, 10) == NTStatus.SUCCESS
    assert write(svc, share, a, 155, b"w") == NTStatus.FILE_LOCK_CONFLICT
    assert write(svc, share, b, 155, b"w") == NTStatus.FILE_LOCK_CONFLICT
    assert (root / "f.bin").read_bytes()[:1] == b"x" and (root / "f.bin").read_bytes()[50] == 0
    svc.release(a)  # closing drops a's locks
    assert write(svc, share, b, 50, b"y") == NTStatus.SUCCESS
    svc.release(b)


def test_read_past_end_and_listing_in_pieces(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    for i in range(50):
        (root / f"file-{i:02}.txt").write_text("x")
    f = open_file(svc, share, "file-00.txt", disposition=1)
    status = svc.run_sync(op(Command.READ, ReadRequest(length=10, offset=5, file_id=FID), share, f))[0].status
    assert status == NTStatus.END_OF_FILE
    svc.release(f)
    d = svc.run_sync(op(Command.CREATE, CreateRequest(GENERIC_ALL, 0, SHARE_ACCESS_ALL, 1, 0x1, ""), share))[
        0
    ].handle
    names: list[str] = []
    while True:
        result = svc.run_sync(
            op(Command.QUERY_DIRECTORY, QueryDirectoryRequest(37, 0, FID, "*", 1024), share, d)
        )[0]
        if result.status == NTStatus.NO_MORE_FILES:
            break
        assert result.status == NTStatus.SUCCESS
        names += [e.name for e in decode_directory_entries(37, result.body[8:])]
    assert names[:2] == [".", ".."] and len(names) == 52
    svc.release(d)
