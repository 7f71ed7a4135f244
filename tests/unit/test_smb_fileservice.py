"""FsFileService: the shell's side of file operations, on a real folder."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from smbcore import fileinfo as fi
from smbcore import fs
from smbcore.fileinfo import FileInfoClass, decode_directory_entries
from smbcore.fileops import (
    READ_RESPONSE_HEAD_SIZE,
    CloseRequest,
    CreateContext,
    CreateRequest,
    InfoType,
    LockElement,
    LockFlags,
    LockRequest,
    QueryDirectoryRequest,
    QueryInfoRequest,
    ReadRequest,
    SetInfoRequest,
    WriteRequest,
)
from smbcore.fileservice import FsFileService, OpenFile
from smbcore.fs import STATUS_CANNOT_DELETE, FsError, FsHandle
from smbcore.header import Command
from smbcore.notify import Action, ChangeNotifyRequest, CompletionFilter, decode_notify_information
from smbcore.ntstatus import NTStatus
from smbcore.security import (
    EVERYONE,
    Ace,
    Acl,
    SecurityDescriptor,
    SecurityInformation,
    Sid,
    posix_descriptor,
    unix_user_sid,
)
from smbcore.server import FileOperation, FileResult, Share

SHARE_ACCESS_ALL = 7
GENERIC_ALL = 0x10000000
FID = bytes(16)
OWNER, GROUP, DACL, SACL = (
    SecurityInformation.OWNER, SecurityInformation.GROUP, SecurityInformation.DACL, SecurityInformation.SACL,
)  # fmt: skip


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
    # Several elements each need FAIL_IMMEDIATELY: only a single lock may wait (smb2.lock.valid-request).
    assert lock(svc, share, a, (0, 1, sh), (2, 1, LockFlags.SHARED)) == NTStatus.INVALID_PARAMETER
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


def query(
    svc: FsFileService, share: Share, opened: OpenFile, info_type: int, info_class: int, length: int = 65536,
    additional: int = 0, data: bytes = b"",
) -> tuple[int, bytes]:  # fmt: skip
    request = QueryInfoRequest(info_type, info_class, length, FID, additional, 0, data)
    result = svc.run_sync(op(Command.QUERY_INFO, request, share, opened))[0]
    return result.status, bytes(result.body[8:]) if result.status in (0, NTStatus.BUFFER_OVERFLOW) else b""


def set_info(svc: FsFileService, share: Share, opened: OpenFile, info_type: int, info_class: int,
             buffer: bytes, additional: int = 0) -> int:  # fmt: skip
    request = SetInfoRequest(info_type, info_class, FID, buffer, additional)
    return svc.run_sync(op(Command.SET_INFO, request, share, opened))[0].status


def open_with(
    svc: FsFileService,
    share: Share,
    name: str,
    access: int,
    contexts: tuple[CreateContext, ...] = (),
    disposition: int = 3,
    options: int = 0x40,
) -> tuple[int, OpenFile | None]:
    request = CreateRequest(access, 0, SHARE_ACCESS_ALL, disposition, options, name, contexts)
    result = svc.run_sync(op(Command.CREATE, request, share))[0]
    return result.status, result.handle if isinstance(result.handle, OpenFile) else None


T = fi.FILETIME_UNIX_EPOCH + 17_000_000_000_000_000  # 2023-11, whole seconds


def test_set_basic_times_are_kept(service: tuple[FsFileService, Share, Path]) -> None:
    """All four times a client sets come back (smbtorture's complex-file setup checks them)."""
    svc, share, _ = service
    f = open_file(svc, share, "t.txt")
    times = fi.BasicInformation(T + 9 * 10**14, T + 6 * 10**14, T + 3 * 10**14, T + 1 * 10**14, 0)
    assert set_info(svc, share, f, InfoType.FILE, FileInfoClass.BASIC, times.encode()) == NTStatus.SUCCESS
    status, data = query(svc, share, f, InfoType.FILE, FileInfoClass.BASIC)
    assert status == NTStatus.SUCCESS
    got = fi.FileBasicInformation.decode(data)
    assert (got.creation_time, got.last_access_time, got.last_write_time, got.change_time) == (
        times.creation_time, times.last_access_time, times.last_write_time, times.change_time,
    )  # fmt: skip
    # The listing shows the kept creation time too; a later change moves the change time on.
    d = open_with(svc, share, "", GENERIC_ALL, disposition=1, options=1)[1]
    listed = svc.run_sync(
        op(Command.QUERY_DIRECTORY, QueryDirectoryRequest(37, 0, FID, "t.txt", 4096), share, d)
    )
    entry = decode_directory_entries(37, listed[0].body[8:])[0]
    assert entry.creation_time == times.creation_time
    # A change through the handle that set the change time leaves it (MS-FSA
    # UserSetChangeTime); one through another handle moves it on.
    assert write(svc, share, f, 0, b"more") == NTStatus.SUCCESS
    got = fi.FileBasicInformation.decode(query(svc, share, f, InfoType.FILE, FileInfoClass.BASIC)[1])
    assert got.change_time == times.change_time
    g = open_file(svc, share, "t.txt", disposition=1)
    assert write(svc, share, g, 0, b"again") == NTStatus.SUCCESS
    got = fi.FileBasicInformation.decode(query(svc, share, g, InfoType.FILE, FileInfoClass.BASIC)[1])
    assert got.change_time != times.change_time and got.creation_time == times.creation_time
    svc.release(g)
    svc.release(f)
    svc.release(d)


def test_attributes_are_kept(service: tuple[FsFileService, Share, Path]) -> None:
    """HIDDEN, SYSTEM, ARCHIVE... are kept; READONLY of a file is its mode; a write sets
    ARCHIVE again; TEMPORARY on a directory is refused (MS-FSA 2.1.5.14.2)."""
    svc, share, root = service
    f = open_file(svc, share, "a.txt")

    def attrs(h: OpenFile) -> int:
        return fi.FileBasicInformation.decode(query(svc, share, h, InfoType.FILE, 4)[1]).file_attributes

    def basic(a: int) -> bytes:
        return fi.BasicInformation(attributes=a).encode()

    assert attrs(f) == fi.FileAttributes.ARCHIVE
    assert set_info(svc, share, f, InfoType.FILE, 4, basic(fi.FileAttributes.READONLY)) == NTStatus.SUCCESS
    assert attrs(f) == fi.FileAttributes.READONLY and not os.stat(root / "a.txt").st_mode & 0o222
    assert set_info(svc, share, f, InfoType.FILE, 4, basic(fi.FileAttributes.NORMAL)) == NTStatus.SUCCESS
    assert attrs(f) == fi.FileAttributes.NORMAL and os.stat(root / "a.txt").st_mode & 0o200
    assert set_info(svc, share, f, InfoType.FILE, 4, basic(fi.FileAttributes.HIDDEN)) == NTStatus.SUCCESS
    assert set_info(svc, share, f, InfoType.FILE, 4, basic(0)) == NTStatus.SUCCESS  # 0: unchanged
    assert attrs(f) == fi.FileAttributes.HIDDEN
    os.utime(root / "a.txt", ns=(1, 10**18))  # written since: ARCHIVE again
    assert attrs(f) == fi.FileAttributes.HIDDEN | fi.FileAttributes.ARCHIVE
    svc.release(f)
    status, d = open_with(svc, share, "d", GENERIC_ALL, disposition=2, options=1)
    assert status == NTStatus.SUCCESS and d is not None
    assert set_info(svc, share, d, InfoType.FILE, 4, basic(fi.FileAttributes.TEMPORARY)) == (
        NTStatus.INVALID_PARAMETER
    )
    svc.release(d)
    # CREATE's FileAttributes apply to a new file, ARCHIVE added.
    request = CreateRequest(GENERIC_ALL, fi.FileAttributes.SYSTEM, SHARE_ACCESS_ALL, 2, 0x40, "n.txt")
    h = svc.run_sync(op(Command.CREATE, request, share))[0].handle
    assert isinstance(h, OpenFile) and attrs(h) == fi.FileAttributes.SYSTEM | fi.FileAttributes.ARCHIVE
    svc.release(h)


def test_eas_from_create_set_and_query(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, _ = service
    eas = (fi.FullEa("EAONE", b"VALUE1"), fi.FullEa("SecondEa", b"ValueTwo"))
    context = CreateContext(b"ExtA", fi.encode_full_ea(eas)[0])
    status, f = open_with(svc, share, "ea.txt", GENERIC_ALL, (context,))
    assert status == NTStatus.SUCCESS and f is not None
    status, data = query(svc, share, f, InfoType.FILE, FileInfoClass.FULL_EA)
    assert status == NTStatus.SUCCESS
    assert fi.decode_full_ea(data) == [fi.FullEa("EAONE", b"VALUE1"), fi.FullEa("SECONDEA", b"ValueTwo")]
    size = int.from_bytes(query(svc, share, f, InfoType.FILE, FileInfoClass.EA)[1], "little")
    assert size == len(data) == fi.ea_size(eas)
    # Only what fits, whole entries; nothing fits: BUFFER_TOO_SMALL.
    status, part = query(svc, share, f, InfoType.FILE, FileInfoClass.FULL_EA, length=20)
    assert status == NTStatus.BUFFER_OVERFLOW and [e.name for e in fi.decode_full_ea(part)] == ["EAONE"]
    assert (
        query(svc, share, f, InfoType.FILE, FileInfoClass.FULL_EA, length=8)[0] == NTStatus.BUFFER_TOO_SMALL
    )
    # Named EAs (FILE_GET_EA_INFORMATION): one missing comes back empty.
    names = (16).to_bytes(4, "little") + b"\x08secondea\x00" + bytes(2) + bytes(4) + b"\x04NOPE\x00"
    status, data = query(svc, share, f, InfoType.FILE, FileInfoClass.FULL_EA, data=names)
    assert fi.decode_full_ea(data) == [fi.FullEa("SECONDEA", b"ValueTwo"), fi.FullEa("NOPE", b"")]
    # SET_INFO: an empty value removes an EA; the last one gone: STATUS_NO_EAS_ON_FILE.
    removal = fi.FullEaInformation((fi.FullEa("EAONE"), fi.FullEa("SECONDEA"))).encode()
    assert set_info(svc, share, f, InfoType.FILE, FileInfoClass.FULL_EA, removal) == NTStatus.SUCCESS
    assert query(svc, share, f, InfoType.FILE, FileInfoClass.FULL_EA)[0] == fi.STATUS_NO_EAS_ON_FILE
    assert query(svc, share, f, InfoType.FILE, FileInfoClass.EA)[1] == bytes(4)
    svc.release(f)
    # FileFullEaInformation needs FILE_READ_EA; FileBasicInformation FILE_READ_ATTRIBUTES.
    status, g = open_with(svc, share, "ea.txt", 0x00000001, disposition=1)
    assert status == NTStatus.SUCCESS and g is not None
    assert query(svc, share, g, InfoType.FILE, FileInfoClass.FULL_EA)[0] == NTStatus.ACCESS_DENIED
    assert query(svc, share, g, InfoType.FILE, FileInfoClass.BASIC)[0] == NTStatus.ACCESS_DENIED
    assert query(svc, share, g, InfoType.FILE, FileInfoClass.STANDARD)[0] == NTStatus.SUCCESS
    svc.release(g)


def test_security_descriptor_query_and_set(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    f = open_file(svc, share, "sd.txt")
    os.chmod(root / "sd.txt", 0o640)
    st = os.stat(root / "sd.txt")
    want = OWNER | GROUP | DACL
    status, data = query(svc, share, f, InfoType.SECURITY, 0, additional=want)
    assert status == NTStatus.SUCCESS
    assert SecurityDescriptor.decode(data) == posix_descriptor(st.st_uid, st.st_gid, 0o640, False)
    # Too small: BUFFER_TOO_SMALL, the size needed as error data (an ERROR body).
    result = svc.run_sync(op(Command.QUERY_INFO, QueryInfoRequest(3, 0, 10, FID, want), share, f))[0]
    assert result.status == NTStatus.BUFFER_TOO_SMALL
    assert result.body[8:12] == len(data).to_bytes(4, "little")
    # A SACL needs ACCESS_SYSTEM_SECURITY, which no open has.
    assert query(svc, share, f, InfoType.SECURITY, 0, additional=SACL)[0] == NTStatus.ACCESS_DENIED
    # Setting a DACL: Everyone may read, a stranger anything; the mode follows what maps,
    # and the descriptor comes back as set while the mode stays.
    stranger = Sid(5, (21, 1, 2, 3, 1001))
    dacl = Acl((Ace(0, 0, 0x001F01FF, unix_user_sid(st.st_uid)), Ace(0, 0, 0x00120089, EVERYONE),
                Ace(0, 0, 0x001F01FF, stranger)))  # fmt: skip
    assert set_info(svc, share, f, InfoType.SECURITY, 0, SecurityDescriptor(dacl=dacl).encode(), DACL) == 0
    assert os.stat(root / "sd.txt").st_mode & 0o777 == 0o744
    got = SecurityDescriptor.decode(query(svc, share, f, InfoType.SECURITY, 0, additional=want)[1])
    assert got.dacl == dacl and got.owner == unix_user_sid(st.st_uid)
    os.chmod(root / "sd.txt", 0o600)  # a change through POSIX wins
    got = SecurityDescriptor.decode(query(svc, share, f, InfoType.SECURITY, 0, additional=want)[1])
    assert got == posix_descriptor(st.st_uid, st.st_gid, 0o600, False)
    # An owner with no POSIX identity is kept, not applied; a malformed descriptor is refused.
    owner = SecurityDescriptor(owner=stranger).encode()
    assert set_info(svc, share, f, InfoType.SECURITY, 0, owner, OWNER) == NTStatus.SUCCESS
    got = SecurityDescriptor.decode(query(svc, share, f, InfoType.SECURITY, 0, additional=want)[1])
    assert got.owner == stranger and os.stat(root / "sd.txt").st_uid == st.st_uid
    assert set_info(svc, share, f, InfoType.SECURITY, 0, b"\x01\x00", DACL) == 0xC0000079
    svc.release(f)
    # Without READ_CONTROL / WRITE_DAC: ACCESS_DENIED.
    status, g = open_with(svc, share, "sd.txt", 0x00000080, disposition=1)
    assert status == NTStatus.SUCCESS and g is not None
    assert query(svc, share, g, InfoType.SECURITY, 0, additional=DACL)[0] == NTStatus.ACCESS_DENIED
    assert set_info(svc, share, g, InfoType.SECURITY, 0, SecurityDescriptor(dacl=dacl).encode(), DACL) == (
        NTStatus.ACCESS_DENIED
    )
    svc.release(g)
    # A descriptor given at CREATE applies to the new file.
    private = Acl((Ace(0, 0, 0x001F01FF, unix_user_sid(os.getuid())),))
    status, h = open_with(svc, share, "new.txt", GENERIC_ALL, (CreateContext(b"SecD", SecurityDescriptor(
        owner=unix_user_sid(os.getuid()), dacl=private).encode()),))  # fmt: skip
    assert status == NTStatus.SUCCESS and h is not None
    assert os.stat(root / "new.txt").st_mode & 0o777 == 0o700
    svc.release(h)


def test_short_names_query_listing_and_open(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    (root / "a long name.text").write_text("x")
    (root / "short.txt").write_text("y")
    f = open_file(svc, share, "a long name.text", disposition=1)
    status, data = query(svc, share, f, InfoType.FILE, FileInfoClass.ALTERNATE_NAME)
    short = fi.short_name("a long name.text")
    assert status == NTStatus.SUCCESS and data[4:].decode("utf-16-le") == short and short.startswith("ALON~")
    assert query(svc, share, f, InfoType.FILE, FileInfoClass.ALTERNATE_NAME, length=7)[0] == (
        NTStatus.INFO_LENGTH_MISMATCH
    )
    svc.release(f)
    status, g = open_with(svc, share, short.lower(), GENERIC_ALL, disposition=1)  # opened by its short name
    assert status == NTStatus.SUCCESS and g is not None
    assert query(svc, share, g, InfoType.FILE, FileInfoClass.STANDARD)[0] == NTStatus.SUCCESS
    svc.release(g)
    s = open_file(svc, share, "short.txt", disposition=1)
    assert query(svc, share, s, InfoType.FILE, FileInfoClass.ALTERNATE_NAME)[1][4:] == "short.txt".encode(
        "utf-16-le"
    )
    svc.release(s)
    status, r = open_with(svc, share, "", GENERIC_ALL, disposition=1, options=1)
    assert r is not None
    assert (
        query(svc, share, r, InfoType.FILE, FileInfoClass.ALTERNATE_NAME)[0] == NTStatus.OBJECT_NAME_NOT_FOUND
    )
    # File system classes: FileFsControlInformation (no quotas), the EA and ACL attributes.
    status, control = query(svc, share, r, InfoType.FILESYSTEM, fi.FsInfoClass.CONTROL)
    assert status == NTStatus.SUCCESS and len(control) == 48
    attrs = int.from_bytes(
        query(svc, share, r, InfoType.FILESYSTEM, fi.FsInfoClass.ATTRIBUTE)[1][:4], "little"
    )
    assert attrs & fi.FsAttributes.SUPPORTS_EXTENDED_ATTRIBUTES and attrs & fi.FsAttributes.PERSISTENT_ACLS
    svc.release(r)


def create(svc: FsFileService, share: Share, name: str, access: int, sharing: int,
           disposition: int = 3, break_keys: frozenset[object] = frozenset()) -> tuple[int, object]:  # fmt: skip  # noqa: E501
    request = CreateRequest(access, 0, sharing, disposition, 0x40, name)
    operation = FileOperation(1, Command.CREATE, request, share, "alice", None, None, break_keys)  # type: ignore[arg-type]
    result, _ = svc.run_sync(operation)
    return result.status, result.file_key if result.status != NTStatus.SUCCESS else result.handle


READ_DATA, WRITE_DATA, READ_ATTRIBUTES = 0x1, 0x2, 0x80


def test_share_modes_are_enforced_before_an_overwrite(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    status, first = create(svc, share, "f.bin", READ_DATA | WRITE_DATA, 0)  # no sharing at all
    assert status == NTStatus.SUCCESS and isinstance(first, OpenFile)
    (root / "f.bin").write_bytes(b"keep me")
    assert create(svc, share, "f.bin", READ_DATA, 7, disposition=1)[0] == NTStatus.SHARING_VIOLATION
    # An overwrite that is refused truncates nothing.
    assert create(svc, share, "f.bin", WRITE_DATA, 7, disposition=5)[0] == NTStatus.SHARING_VIOLATION
    assert (root / "f.bin").read_bytes() == b"keep me"
    # Attribute-only opens take no part in share modes.
    assert create(svc, share, "f.bin", READ_ATTRIBUTES, 0, disposition=1)[0] == NTStatus.SUCCESS
    svc.release(first)
    assert create(svc, share, "f.bin", READ_DATA, 1, disposition=1)[0] == NTStatus.SUCCESS  # share read
    assert create(svc, share, "f.bin", READ_DATA, 1, disposition=1)[0] == NTStatus.SUCCESS
    assert create(svc, share, "f.bin", WRITE_DATA, 7, disposition=1)[0] == NTStatus.SHARING_VIOLATION


def test_a_create_on_a_file_with_oplocks_to_break_opens_nothing(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    status, first = create(svc, share, "f.bin", READ_DATA | WRITE_DATA, 7)
    assert isinstance(first, OpenFile)
    (root / "f.bin").write_bytes(b"cached")
    key = first.handle.identity
    status, reported = create(svc, share, "f.bin", WRITE_DATA, 7, disposition=5, break_keys=frozenset({key}))
    assert status == NTStatus.OPLOCK_BREAK_IN_PROGRESS and reported == key
    assert (root / "f.bin").read_bytes() == b"cached"


async def test_a_blocking_lock_waits_for_the_unlock_and_can_be_cancelled(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, _ = service
    a = open_file(svc, share, "f.bin")
    b = open_file(svc, share, "f.bin", disposition=1)
    assert lock(svc, share, a, (0, 10, LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY)) == NTStatus.SUCCESS
    blocking = LockRequest(FID, (LockElement(0, 10, LockFlags.EXCLUSIVE),))
    waiting = asyncio.ensure_future(svc.run(FileOperation(7, Command.LOCK, blocking, share, "alice", b, FID)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert lock(svc, share, a, (0, 10, LockFlags.UNLOCK)) == NTStatus.SUCCESS
    result, _ = await asyncio.wait_for(waiting, 5)
    assert result.status == NTStatus.SUCCESS  # granted once a released the range
    waiting = asyncio.ensure_future(svc.run(FileOperation(8, Command.LOCK, blocking, share, "alice", a, FID)))
    await asyncio.sleep(0.05)
    svc.cancel(8)
    result, _ = await asyncio.wait_for(waiting, 5)
    assert result.status == NTStatus.CANCELLED


async def test_change_notify_reports_changes_and_ends_on_cancel_and_close(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    (root / "d").mkdir()
    request = CreateRequest(0x00100081, 0, 7, 1, 0x1, "d")  # READ_DATA|READ_ATTRIBUTES|SYNCHRONIZE, dir
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
    directory = result.handle
    assert isinstance(directory, OpenFile)
    watch = ChangeNotifyRequest(32, 0, 4096, FID, CompletionFilter.FILE_NAME | CompletionFilter.SIZE, 0)

    def notify(op_id: int) -> asyncio.Future[tuple[FileResult, object]]:
        operation = FileOperation(op_id, Command.CHANGE_NOTIFY, watch, share, "alice", directory, FID)  # type: ignore[arg-type]
        return asyncio.ensure_future(svc.run(operation))

    waiting = notify(10)
    await asyncio.sleep(0.05)
    assert not waiting.done()
    (root / "d" / "new.txt").write_bytes(b"x")
    result, _ = await asyncio.wait_for(waiting, 5)
    assert result.status == NTStatus.SUCCESS
    entries = decode_notify_information(result.body[8:])
    assert (Action.ADDED, "new.txt") in entries
    # Changes between two requests are kept for the next one.
    (root / "d" / "new.txt").rename(root / "d" / "renamed.txt")
    await asyncio.sleep(0.05)
    result, _ = await asyncio.wait_for(notify(11), 5)
    names = decode_notify_information(result.body[8:])
    assert (Action.RENAMED_OLD_NAME, "new.txt") in names and (Action.RENAMED_NEW_NAME, "renamed.txt") in names
    waiting = notify(12)
    await asyncio.sleep(0.05)
    svc.cancel(12)
    assert (await asyncio.wait_for(waiting, 5))[0].status == NTStatus.CANCELLED
    waiting = notify(13)
    await asyncio.sleep(0.05)
    close = FileOperation(14, Command.CLOSE, CloseRequest(24, 0, 0, FID), share, "alice", directory, FID)
    assert (await svc.run(close))[0].status == NTStatus.SUCCESS
    assert (await asyncio.wait_for(waiting, 5))[0].status == NTStatus.NOTIFY_CLEANUP


# -- delete pending (MS-FSA 2.1.5.4, 2.1.5.15.3) ----------------------------------------------------

DELETE, SYNCHRONIZE, DELETE_ON_CLOSE = 0x10000, 0x100000, 0x1000


def close(svc: FsFileService, share: Share, opened: OpenFile) -> int:
    return svc.run_sync(op(Command.CLOSE, CloseRequest(24, 0, 0, FID), share, opened))[0].status


def dispose(svc: FsFileService, share: Share, opened: OpenFile, delete: bool = True) -> int:
    return set_info(svc, share, opened, InfoType.FILE, FileInfoClass.DISPOSITION, bytes([delete]))


def delete_pending(svc: FsFileService, share: Share, opened: OpenFile) -> bool:
    status, standard = query(svc, share, opened, InfoType.FILE, FileInfoClass.STANDARD)
    assert status == NTStatus.SUCCESS
    return bool(standard[20])


def create_dir(svc: FsFileService, share: Share, name: str, access: int, sharing: int) -> tuple[int, object]:
    request = CreateRequest(access, 0, sharing, 1, 0x1, name)  # FILE_OPEN, FILE_DIRECTORY_FILE
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
    return result.status, result.handle


def opened(result: tuple[int, object]) -> OpenFile:
    status, handle = result
    assert status == NTStatus.SUCCESS and isinstance(handle, OpenFile), status
    return handle


def test_a_disposed_file_stays_until_its_last_open_closes(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    (root / "d").mkdir()
    (root / "d" / "f.bin").write_bytes(b"data")
    a = opened(create(svc, share, "d\\f.bin", READ_DATA | DELETE, 7, disposition=1))
    b = opened(create(svc, share, "d\\f.bin", READ_DATA, 7, disposition=1))
    assert dispose(svc, share, a) == NTStatus.SUCCESS
    assert delete_pending(svc, share, b)  # every open sees it
    # New opens of any kind are refused; the file stays listed and its directory stays.
    assert create(svc, share, "d\\f.bin", READ_ATTRIBUTES, 7, disposition=1)[0] == NTStatus.DELETE_PENDING
    assert create(svc, share, "d\\f.bin", READ_DATA, 7, disposition=2)[0] == NTStatus.DELETE_PENDING
    d = opened(create_dir(svc, share, "d", DELETE, 7))
    assert dispose(svc, share, d) == NTStatus.DIRECTORY_NOT_EMPTY
    assert close(svc, share, a) == NTStatus.SUCCESS
    assert (root / "d" / "f.bin").exists()  # b still has it open
    assert close(svc, share, b) == NTStatus.SUCCESS
    assert not (root / "d" / "f.bin").exists()
    assert dispose(svc, share, d) == NTStatus.SUCCESS
    svc.release(d)  # an abandoned open deletes like a closed one
    assert not (root / "d").exists()


def test_a_disposition_can_be_taken_back(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    (root / "f.bin").write_bytes(b"data")
    a = opened(create(svc, share, "f.bin", READ_DATA | DELETE, 7, disposition=1))
    b = opened(create(svc, share, "f.bin", READ_DATA | DELETE, 7, disposition=1))
    assert dispose(svc, share, a) == NTStatus.SUCCESS
    assert dispose(svc, share, b, delete=False) == NTStatus.SUCCESS  # any open may take it back
    assert not delete_pending(svc, share, a)
    close(svc, share, a)
    close(svc, share, b)
    assert (root / "f.bin").exists()
    reader = opened(create(svc, share, "f.bin", READ_DATA, 7, disposition=1))
    assert dispose(svc, share, reader) == NTStatus.ACCESS_DENIED  # needs DELETE, either way
    assert dispose(svc, share, reader, delete=False) == NTStatus.ACCESS_DENIED
    close(svc, share, reader)


def test_delete_on_close_makes_the_file_delete_pending_when_that_open_closes(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    (root / "f.bin").write_bytes(b"data")
    request = CreateRequest(READ_DATA | DELETE, 0, 7, 1, DELETE_ON_CLOSE, "f.bin")
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
    doc = opened((result.status, result.handle))
    other = opened(create(svc, share, "f.bin", READ_DATA, 7, disposition=1))  # still allowed
    assert not delete_pending(svc, share, other)
    close(svc, share, doc)
    assert (root / "f.bin").exists() and delete_pending(svc, share, other)
    assert create(svc, share, "f.bin", READ_DATA, 7, disposition=1)[0] == NTStatus.DELETE_PENDING
    close(svc, share, other)
    assert not (root / "f.bin").exists()
    # A directory opened with FILE_DELETE_ON_CLOSE that is not empty at close just stays.
    (root / "d").mkdir()
    (root / "d" / "x").write_bytes(b"")
    request = CreateRequest(DELETE, 0, 7, 1, DELETE_ON_CLOSE | 0x1, "d")
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
    close(svc, share, opened((result.status, result.handle)))
    assert (root / "d").exists()
    close(svc, share, opened(create_dir(svc, share, "d", READ_DATA, 7)))


def test_a_delete_pending_file_is_refused_before_its_oplocks_break(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, _ = service
    a = opened(create(svc, share, "f.bin", READ_DATA | DELETE, 7))
    assert dispose(svc, share, a) == NTStatus.SUCCESS
    key = a.handle.identity
    status, _ = create(svc, share, "f.bin", READ_DATA, 7, disposition=1, break_keys=frozenset({key}))
    assert status == NTStatus.DELETE_PENDING
    close(svc, share, a)


def test_a_read_only_file_created_to_be_deleted_on_close_is_refused(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    request = CreateRequest(READ_DATA | DELETE, fi.FileAttributes.READONLY, 7, 2, DELETE_ON_CLOSE, "ro.bin")
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
    assert result.status == STATUS_CANNOT_DELETE
    assert not (root / "ro.bin").exists()


# -- renames and other opens (MS-FSA 2.1.5.15.12) -------------------------------------------------


def rename(svc: FsFileService, share: Share, handle: OpenFile, target: str, replace: bool = False) -> int:
    buffer = fi.RenameInformation(replace, target).encode()
    return set_info(svc, share, handle, InfoType.FILE, FileInfoClass.RENAME, buffer)


DIR_ALL = 0x1F01FF


def test_a_rename_opens_the_target_directory_as_windows_does(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    (root / "d").mkdir()
    f = opened(create(svc, share, "d\\f.bin", READ_DATA | DELETE, 0))
    parent = opened(create_dir(svc, share, "d", DIR_ALL, 7))  # with DELETE: conflicts
    assert rename(svc, share, f, "d\\g.bin") == NTStatus.SHARING_VIOLATION
    close(svc, share, parent)
    parent = opened(create_dir(svc, share, "d", DIR_ALL & ~DELETE, 0))  # shares no writing
    assert rename(svc, share, f, "d\\g.bin") == NTStatus.SHARING_VIOLATION
    close(svc, share, parent)
    parent = opened(create_dir(svc, share, "d", DIR_ALL & ~DELETE, 7))
    assert rename(svc, share, f, "d\\g.bin") == NTStatus.SUCCESS
    assert (root / "d" / "g.bin").exists()
    close(svc, share, parent)
    close(svc, share, f)


def test_renames_other_opens_forbid_and_follow(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    (root / "d").mkdir()
    inner = opened(create(svc, share, "d\\f.bin", READ_DATA, 7))
    d = opened(create_dir(svc, share, "d", DELETE | READ_ATTRIBUTES, 7))
    assert rename(svc, share, d, "e") == NTStatus.ACCESS_DENIED  # an open file below it
    close(svc, share, inner)
    assert rename(svc, share, d, "e") == NTStatus.SUCCESS
    close(svc, share, d)
    (root / "victim.bin").write_bytes(b"v")
    victim = opened(create(svc, share, "victim.bin", READ_DATA, 7, disposition=1))
    a = opened(create(svc, share, "a.bin", READ_DATA | DELETE, 7))
    b = opened(create(svc, share, "a.bin", READ_DATA | DELETE, 7, disposition=1))
    assert rename(svc, share, a, "victim.bin", replace=True) == NTStatus.ACCESS_DENIED  # open: kept
    close(svc, share, victim)
    assert rename(svc, share, a, "e\\moved.bin", replace=False) == NTStatus.SUCCESS
    status, name = query(svc, share, b, InfoType.FILE, FileInfoClass.NAME)  # b follows a's rename
    assert status == NTStatus.SUCCESS and name[4:].decode("utf-16-le") == "\\e\\moved.bin"
    close(svc, share, a)
    assert dispose(svc, share, b) == NTStatus.SUCCESS
    close(svc, share, b)  # deletes at the new name
    assert not (root / "e" / "moved.bin").exists() and (root / "victim.bin").exists()


# -- byte-range lock details (MS-SMB2 3.3.5.14, smbtorture smb2.lock) --------------------------------

EX = LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY
SH = LockFlags.SHARED | LockFlags.FAIL_IMMEDIATELY
UN = LockFlags.UNLOCK

#: (first lock, second lock, status of the second): a zero-length lock is a point that contends
#: with a range strictly around it.
ZERO_BYTE_LOCKS = [
    ((10, 0), (10, 0), NTStatus.SUCCESS),
    ((10, 0), (9, 1), NTStatus.SUCCESS),
    ((10, 0), (10, 1), NTStatus.SUCCESS),
    ((10, 0), (11, 1), NTStatus.SUCCESS),
    ((10, 0), (9, 2), NTStatus.LOCK_NOT_GRANTED),
    ((10, 0), (10, 2), NTStatus.SUCCESS),
    ((10, 0), (9, 3), NTStatus.LOCK_NOT_GRANTED),
    ((9, 1), (10, 0), NTStatus.SUCCESS),
    ((9, 2), (10, 0), NTStatus.LOCK_NOT_GRANTED),
    ((10, 2), (10, 0), NTStatus.SUCCESS),
    ((9, 3), (10, 0), NTStatus.LOCK_NOT_GRANTED),
    ((0, 0), (0, 0), NTStatus.SUCCESS),
]


@pytest.mark.parametrize(("first", "second", "expected"), ZERO_BYTE_LOCKS)
@pytest.mark.parametrize("same_open", [True, False])
def test_zero_length_locks(
    service: tuple[FsFileService, Share, Path],
    first: tuple[int, int],
    second: tuple[int, int],
    expected: int,
    same_open: bool,
) -> None:
    svc, share, _ = service
    a = open_file(svc, share, "f.bin")
    b = a if same_open else open_file(svc, share, "f.bin", disposition=1)
    assert lock(svc, share, a, (*first, EX)) == NTStatus.SUCCESS
    assert lock(svc, share, b, (*second, EX)) == expected
    svc.release(a)
    if b is not a:
        svc.release(b)


def test_unlock_flags_and_stacked_locks(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, _ = service
    a = open_file(svc, share, "f.bin")
    b = open_file(svc, share, "f.bin", disposition=1)
    assert lock(svc, share, a, (0, 10, EX)) == NTStatus.SUCCESS
    for flags in (UN | LockFlags.SHARED, UN | LockFlags.EXCLUSIVE, UN | LockFlags.FAIL_IMMEDIATELY):
        assert lock(svc, share, a, (0, 10, flags)) == NTStatus.INVALID_PARAMETER
    assert lock(svc, share, a, (0, 10, 0)) == NTStatus.INVALID_PARAMETER  # neither shared nor exclusive
    assert lock(svc, share, a, (0, 10, 0x8 | LockFlags.SHARED)) == NTStatus.INVALID_PARAMETER  # unknown bit
    assert lock(svc, share, a, (0, 10, EX)) == NTStatus.LOCK_NOT_GRANTED  # two exclusive never stack
    assert lock(svc, share, a, (0, 10, SH)) == NTStatus.SUCCESS  # shared on the open's own exclusive
    assert lock(svc, share, b, (5, 10, SH)) == NTStatus.LOCK_NOT_GRANTED
    assert lock(svc, share, a, (0, 10, UN)) == NTStatus.SUCCESS  # the exclusive one goes first
    assert lock(svc, share, b, (5, 10, SH)) == NTStatus.SUCCESS
    assert lock(svc, share, b, (5, 10, UN)) == NTStatus.SUCCESS
    assert lock(svc, share, a, (0, 10, UN)) == NTStatus.SUCCESS
    assert lock(svc, share, a, (0, 10, UN)) == NTStatus.RANGE_NOT_LOCKED
    # Unlocks are done in order: those before a failure stay done.
    assert lock(svc, share, a, (0, 10, EX)) == NTStatus.SUCCESS
    assert lock(svc, share, a, (0, 10, UN), (20, 10, UN)) == NTStatus.RANGE_NOT_LOCKED
    assert lock(svc, share, b, (0, 10, EX)) == NTStatus.SUCCESS
    svc.release(a)
    svc.release(b)


def sequenced(svc: FsFileService, share: Share, opened: OpenFile, sequence: int, flags: int) -> int:
    request = LockRequest(FID, (LockElement(100, 100, flags),), sequence)
    return svc.run_sync(op(Command.LOCK, request, share, opened))[0].status


def test_lock_sequence_replays_are_answered_without_acting(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, _ = service
    a = open_file(svc, share, "f.bin")
    # Index 0 (and above 64) takes no part: the second lock contends with the first.
    assert sequenced(svc, share, a, 0x001, EX) == NTStatus.SUCCESS
    assert sequenced(svc, share, a, 0x001, EX) == NTStatus.LOCK_NOT_GRANTED
    assert sequenced(svc, share, a, 0x411, UN) == NTStatus.SUCCESS
    assert sequenced(svc, share, a, 0x411, UN) == NTStatus.RANGE_NOT_LOCKED
    # Index 1: the same number again is a replay, whatever it asks.
    assert sequenced(svc, share, a, 0x011, EX) == NTStatus.SUCCESS
    assert sequenced(svc, share, a, 0x011, EX) == NTStatus.SUCCESS
    assert sequenced(svc, share, a, 0x011, UN) == NTStatus.SUCCESS  # not carried out: still locked
    assert sequenced(svc, share, a, 0x012, EX) == NTStatus.LOCK_NOT_GRANTED
    assert sequenced(svc, share, a, 0x012, EX) == NTStatus.LOCK_NOT_GRANTED  # failures record nothing
    assert sequenced(svc, share, a, 0x402, UN) == NTStatus.SUCCESS  # index 64: unlocked
    assert sequenced(svc, share, a, 0x402, EX) == NTStatus.SUCCESS  # replay: not locked again
    assert sequenced(svc, share, a, 0x403, UN) == NTStatus.RANGE_NOT_LOCKED
    svc.release(a)


async def test_a_waiting_lock_ends_when_its_open_closes(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, _ = service
    a = open_file(svc, share, "f.bin")
    b = open_file(svc, share, "f.bin", disposition=1)
    assert lock(svc, share, a, (0, 10, EX)) == NTStatus.SUCCESS
    blocking = LockRequest(FID, (LockElement(0, 10, LockFlags.EXCLUSIVE),))
    waiting = asyncio.ensure_future(svc.run(FileOperation(7, Command.LOCK, blocking, share, "alice", b, FID)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    closing = FileOperation(8, Command.CLOSE, CloseRequest(24, 0, 0, FID), share, "alice", b, FID)
    assert (await svc.run(closing))[0].status == NTStatus.SUCCESS
    result, _ = await asyncio.wait_for(waiting, 5)
    assert result.status == NTStatus.RANGE_NOT_LOCKED
    svc.release(a)


def test_create_with_an_allocation_size_context(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, _ = service
    context = CreateContext(b"AlSi", (1 << 20).to_bytes(8, "little"))
    request = CreateRequest(GENERIC_ALL, 0, 7, 5, 0x40, "big.bin", (context,))  # FILE_OVERWRITE_IF
    result, create = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
    assert result.status == NTStatus.SUCCESS and create is not None
    assert create[1].allocation_size == 1 << 20 and create[1].end_of_file == 0
    svc.release(result.handle)
    short = CreateRequest(GENERIC_ALL, 0, 7, 5, 0x40, "big.bin", (CreateContext(b"AlSi", b"\x01"),))
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, short, share, "alice", None, None))
    assert result.status == NTStatus.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (CreateRequest(GENERIC_ALL, 0, 7, 5, 0x40, "f.bin", impersonation_level=4), 0xC00000A5),
        (CreateRequest(GENERIC_ALL, 0, 7, 5, 0x40, "f.bin", (CreateContext(b"TWrp", bytes(8)),)),
         NTStatus.OBJECT_NAME_NOT_FOUND),
        (CreateRequest(GENERIC_ALL, 0, 7, 5, 0xF0000000, "f.bin"), NTStatus.INVALID_PARAMETER),
        (CreateRequest(GENERIC_ALL, 0x40, 7, 5, 0, "f.bin"), NTStatus.INVALID_PARAMETER),  # DEVICE
        (CreateRequest(GENERIC_ALL, 0, 7, 5, 0x2000, "f.bin"), NTStatus.NOT_SUPPORTED),  # by file id
        (CreateRequest(0, 0, 7, 5, 0, "f.bin"), NTStatus.ACCESS_DENIED),  # no access at all
        (CreateRequest(GENERIC_ALL, 0x4000, 7, 5, 0, "f.bin"), NTStatus.ACCESS_DENIED),  # ENCRYPTED
    ],
)  # fmt: skip
def test_creates_refused_as_windows_refuses_them(
    service: tuple[FsFileService, Share, Path], request_: CreateRequest, expected: int
) -> None:
    svc, share, root = service
    result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request_, share, "alice", None, None))
    assert result.status == expected
    assert not (root / "f.bin").exists()


def test_a_listing_handed_out_later_shows_the_directory_as_it_is_then(
    service: tuple[FsFileService, Share, Path],
) -> None:
    """Entries deleted between two QUERY_DIRECTORY responses are not reported; changed ones
    are reported as they are now (smbtorture smb2.dir.fixed and modify)."""
    svc, share, root = service
    for i in range(40):
        (root / f"f{i:02}.txt").write_text("x")
    d = opened(create_dir(svc, share, "", READ_DATA, 7))

    def listing(flags: int, length: int = 65536) -> tuple[int, list[fi.DirectoryEntry]]:
        request = QueryDirectoryRequest(37, flags, FID, "*", length)
        result = svc.run_sync(op(Command.QUERY_DIRECTORY, request, share, d))[0]
        entries = decode_directory_entries(37, result.body[8:]) if result.status == NTStatus.SUCCESS else []
        return result.status, entries

    assert [e.name for e in listing(2)[1]] == ["."]  # RETURN_SINGLE_ENTRY: the listing is taken
    for i in range(0, 40, 2):
        (root / f"f{i:02}.txt").unlink()
    (root / "f01.txt").write_text("longer now")
    status, rest = listing(0)
    assert status == NTStatus.SUCCESS
    assert [e.name for e in rest] == ["..", *(f"f{i:02}.txt" for i in range(1, 40, 2))]
    assert rest[1].end_of_file == len("longer now")
    assert listing(0)[0] == NTStatus.NO_MORE_FILES
    # Small responses: the positions of the gone entries are passed over too.
    status, entries = listing(1, 200)  # RESTART_SCANS: a new listing
    names = [e.name for e in entries]
    for i in range(1, 40, 4):
        (root / f"f{i:02}.txt").unlink(missing_ok=True)
    while (result := listing(0, 200))[0] == NTStatus.SUCCESS:
        names += [e.name for e in result[1]]
    survivors = [f"f{i:02}.txt" for i in range(3, 40, 4)]
    assert names[:2] == [".", ".."]
    assert [n for n in names if n not in (".", "..")][-len(survivors) :] == survivors
    assert not set(names) & {f"f{i:02}.txt" for i in range(9, 40, 4)}  # deleted before they were sent
    svc.release(d)


def test_a_sharing_conflict_breaks_only_a_batch_oplock_first(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, _ = service
    status, first = create(svc, share, "f.bin", READ_DATA | WRITE_DATA, 0)  # shares nothing
    assert isinstance(first, OpenFile)
    key = first.handle.identity
    # Under an Exclusive oplock the conflict is answered at once ...
    status, _ = create(svc, share, "f.bin", READ_DATA, 7, disposition=1, break_keys=frozenset({key}))
    assert status == NTStatus.SHARING_VIOLATION
    # ... under a Batch one the holder is asked first (it may only be keeping a closed file open).
    request = CreateRequest(READ_DATA, 0, 7, 1, 0x40, "f.bin")
    operation = FileOperation(
        1, Command.CREATE, request, share, "alice", None, None, frozenset({key}), frozenset({key})
    )
    result, _ = svc.run_sync(operation)
    assert result.status == NTStatus.OPLOCK_BREAK_IN_PROGRESS and result.file_key == key


# -- CHANGE_NOTIFY: several waiting, a directory deleted, access, renames (MS-FSA 2.1.5.11) -----


def watch_op(op_id: int, share: Share, directory: OpenFile, completion_filter: int) -> FileOperation:
    request = ChangeNotifyRequest(32, 0, 4096, FID, completion_filter, 0)
    return FileOperation(op_id, Command.CHANGE_NOTIFY, request, share, "alice", directory, FID)  # type: ignore[arg-type]


async def test_waiting_change_notifies_are_answered_oldest_first(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    (root / "d").mkdir()
    directory = opened(create_dir(svc, share, "d", DIR_ALL, 7))
    first = asyncio.ensure_future(svc.run(watch_op(20, share, directory, CompletionFilter.FILE_NAME)))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(svc.run(watch_op(21, share, directory, CompletionFilter.FILE_NAME)))
    await asyncio.sleep(0.05)
    (root / "d" / "one").write_bytes(b"")
    result, _ = await asyncio.wait_for(first, 5)
    assert decode_notify_information(result.body[8:]) == [(Action.ADDED, "one")]
    assert not second.done()
    (root / "d" / "two").write_bytes(b"")
    result, _ = await asyncio.wait_for(second, 5)
    assert decode_notify_information(result.body[8:]) == [(Action.ADDED, "two")]


@pytest.mark.parametrize("how", ["disposition", "delete-on-close"])
async def test_a_directory_made_delete_pending_ends_its_notifies(
    service: tuple[FsFileService, Share, Path], how: str
) -> None:
    """smbtorture's smb2.notify.rmdir1-4: STATUS_DELETE_PENDING, then for every new request."""
    svc, share, root = service
    (root / "d").mkdir()
    watched = opened(create_dir(svc, share, "d", DIR_ALL, 7))
    waiting = asyncio.ensure_future(svc.run(watch_op(30, share, watched, CompletionFilter.FILE_NAME)))
    await asyncio.sleep(0.05)
    if how == "disposition":
        other = opened(create_dir(svc, share, "d", DIR_ALL, 7))
        assert dispose(svc, share, other) == NTStatus.SUCCESS
    else:
        request = CreateRequest(DIR_ALL, 0, 7, 1, 0x1 | DELETE_ON_CLOSE, "d")
        result, _ = svc.run_sync(FileOperation(1, Command.CREATE, request, share, "alice", None, None))
        other = opened((result.status, result.handle))
    assert close(svc, share, other) == NTStatus.SUCCESS
    assert (await asyncio.wait_for(waiting, 5))[0].status == NTStatus.DELETE_PENDING
    again, _ = await asyncio.wait_for(svc.run(watch_op(31, share, watched, CompletionFilter.FILE_NAME)), 5)
    assert again.status == NTStatus.DELETE_PENDING
    assert close(svc, share, watched) == NTStatus.SUCCESS
    assert not (root / "d").exists()


async def test_change_notify_needs_list_access(service: tuple[FsFileService, Share, Path]) -> None:
    svc, share, root = service
    (root / "d").mkdir()
    directory = opened(create_dir(svc, share, "d", 0x80 | 0x100000, 7))  # READ_ATTRIBUTES, SYNCHRONIZE
    result, _ = await svc.run(watch_op(40, share, directory, CompletionFilter.FILE_NAME))
    assert result.status == NTStatus.ACCESS_DENIED


async def test_a_renamed_file_is_marked_for_archiving(service: tuple[FsFileService, Share, Path]) -> None:
    """As on NTFS: a watch on attributes sees the renamed file MODIFIED (smb2.notify.mask-change)."""
    svc, share, root = service
    (root / "d").mkdir()
    (root / "d" / "f.bin").write_bytes(b"data")
    directory = opened(create_dir(svc, share, "d", 0x100081, 7))  # no DELETE: the rename may add
    waiting = asyncio.ensure_future(svc.run(watch_op(50, share, directory, CompletionFilter.ATTRIBUTES)))
    await asyncio.sleep(0.05)
    moved = opened(create(svc, share, "d\\f.bin", READ_DATA | DELETE, 7, disposition=1))
    assert rename(svc, share, moved, "d\\g.bin") == NTStatus.SUCCESS
    result, _ = await asyncio.wait_for(waiting, 5)
    assert decode_notify_information(result.body[8:]) == [(Action.MODIFIED, "g.bin")]
    reader = opened(create(svc, share, "d\\g.bin", 0x80, 7, disposition=1))  # FILE_READ_ATTRIBUTES
    status, basic = query(svc, share, reader, InfoType.FILE, FileInfoClass.BASIC)
    assert status == NTStatus.SUCCESS and int.from_bytes(basic[32:36], "little") & fi.FileAttributes.ARCHIVE


def test_streams_share_apart_but_tie_deletion_to_their_file(
    service: tuple[FsFileService, Share, Path],
) -> None:
    svc, share, root = service
    (root / "f.txt").write_bytes(b"base")
    stream = opened(create(svc, share, "f.txt:s", READ_DATA | 0x2, 0, disposition=2))  # no sharing at all
    other = opened(create(svc, share, "f.txt:t", READ_DATA | 0x2, 0, disposition=2))  # another stream: fine
    reader = opened(create(svc, share, "f.txt", READ_DATA, 7, disposition=1))  # the file itself: fine
    assert create(svc, share, "f.txt", DELETE, 7, disposition=1)[0] == NTStatus.SHARING_VIOLATION
    for handle in (stream, other):
        assert close(svc, share, handle) == NTStatus.SUCCESS
    shared = opened(create(svc, share, "f.txt:s", READ_DATA, 7, disposition=1))  # shares delete
    deleter = opened(create(svc, share, "f.txt", DELETE, 7, disposition=1))
    assert dispose(svc, share, deleter) == NTStatus.SUCCESS
    assert create(svc, share, "f.txt:s", READ_DATA, 7, disposition=1)[0] == NTStatus.DELETE_PENDING
    for handle in (deleter, reader, shared):
        assert close(svc, share, handle) == NTStatus.SUCCESS
    assert not (root / "f.txt").exists()


# -- READs answered on the event loop ---------------------------------------------------------


def read_op(share: Share, opened: OpenFile, offset: int, length: int, minimum: int = 0) -> FileOperation:
    request = ReadRequest(length=length, offset=offset, file_id=FID, minimum_count=minimum)
    return op(Command.READ, request, share, opened)


@pytest.fixture
def threaded(
    service: tuple[FsFileService, Share, Path], monkeypatch: pytest.MonkeyPatch
) -> list[FileOperation]:
    """The operations :meth:`FsFileService.run` hands to a worker thread."""
    return on_threads(service[0], monkeypatch)


def on_threads(svc: FsFileService, monkeypatch: pytest.MonkeyPatch) -> list[FileOperation]:
    handed: list[FileOperation] = []
    run_sync = svc.run_sync

    def counted(operation: FileOperation) -> tuple[FileResult, object]:
        if threading.current_thread() is not threading.main_thread():
            handed.append(operation)
        return run_sync(operation)

    monkeypatch.setattr(svc, "run_sync", counted)
    return handed


def nowait_blocks_from(cached: int) -> object:
    """An ``os.preadv`` whose RWF_NOWAIT reads find only the file's first ``cached`` bytes in
    the page cache (EAGAIN from there on, a short read up to there), as the kernel answers."""
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
        if flags & os.RWF_NOWAIT:
            if offset >= cached:
                raise BlockingIOError(errno.EAGAIN, "would block")
            (buffer,) = buffers
            return real(fd, [buffer[: cached - offset]], offset, flags)
        return real(fd, buffers, offset, flags)

    return preadv


async def test_a_cached_read_is_answered_on_the_loop(
    service: tuple[FsFileService, Share, Path], threaded: list[FileOperation]
) -> None:
    svc, share, root = service
    data = os.urandom(3 << 20)
    (root / "f.bin").write_bytes(data)  # just written: in the page cache
    f = open_file(svc, share, "f.bin", disposition=1)
    result, create = await svc.run(read_op(share, f, 1 << 20, 2 << 20))
    assert result.status == NTStatus.SUCCESS and create is None
    assert bytes(result.body[READ_RESPONSE_HEAD_SIZE:]) == data[1 << 20 :]
    assert f.handle.position == 3 << 20
    assert threaded == []
    svc.release(f)


@pytest.mark.parametrize("cached", [0, 4096])
async def test_a_read_that_would_block_goes_to_a_thread(
    service: tuple[FsFileService, Share, Path],
    threaded: list[FileOperation],
    monkeypatch: pytest.MonkeyPatch,
    cached: int,
) -> None:
    """EAGAIN at once, or a short read that is not the end of the file (then EAGAIN)."""
    svc, share, root = service
    data = os.urandom(1 << 20)
    (root / "f.bin").write_bytes(data)
    f = open_file(svc, share, "f.bin", disposition=1)
    monkeypatch.setattr(fs.os, "preadv", nowait_blocks_from(cached))
    operation = read_op(share, f, 0, 1 << 20)
    result, _ = await svc.run(operation)
    assert result.status == NTStatus.SUCCESS and bytes(result.body[READ_RESPONSE_HEAD_SIZE:]) == data
    assert threaded == [operation]
    svc.release(f)


async def test_reads_on_the_loop_are_answered_as_on_a_thread(
    service: tuple[FsFileService, Share, Path], threaded: list[FileOperation]
) -> None:
    """Lock conflicts, the end of the file, MinimumCount, access and range checks: each READ
    gets the same answer from :meth:`FsFileService.run` (on the loop) as from ``run_sync``."""
    svc, share, root = service
    data = os.urandom(10_000)
    (root / "f.bin").write_bytes(data)
    (root / "g.bin").write_bytes(data)
    (root / "d").mkdir()
    a = open_file(svc, share, "f.bin", disposition=1)
    b = open_file(svc, share, "g.bin", disposition=1)
    c = open_file(svc, share, "g.bin", disposition=1)
    exclusive = LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY
    assert lock(svc, share, b, (100, 10, exclusive)) == NTStatus.SUCCESS
    _, no_read = open_with(svc, share, "f.bin", 0x80, disposition=1)  # FILE_READ_ATTRIBUTES only
    _, directory = open_with(svc, share, "d", GENERIC_ALL, disposition=1, options=0x1)
    closed = open_file(svc, share, "f.bin", disposition=1)
    closed.handle.close()
    assert no_read is not None and directory is not None
    cases = [
        (a, 0, 10_000, 0, NTStatus.SUCCESS),
        (a, 9_000, 5_000, 0, NTStatus.SUCCESS),  # short at the end of the file
        (a, 9_000, 5_000, 2_000, NTStatus.END_OF_FILE),  # fewer than MinimumCount
        (a, 10_000, 10, 0, NTStatus.END_OF_FILE),  # at the end
        (a, 20_000, 10, 0, NTStatus.END_OF_FILE),  # past it
        (a, 10_000, 0, 0, NTStatus.SUCCESS),  # nothing, at the end
        (c, 95, 10, 0, NTStatus.FILE_LOCK_CONFLICT),  # b's exclusive range
        (b, 95, 10, 0, NTStatus.SUCCESS),  # the holder's own
        (c, 110, 10, 0, NTStatus.SUCCESS),  # just past it
        (a, 1 << 63, 10, 0, NTStatus.INVALID_PARAMETER),
        (no_read, 0, 10, 0, NTStatus.ACCESS_DENIED),
        (directory, 0, 10, 0, NTStatus.INVALID_DEVICE_REQUEST),
        (closed, 0, 10, 0, NTStatus.FILE_CLOSED),
    ]
    for opened, offset, length, minimum, expected in cases:
        on_thread, _ = svc.run_sync(read_op(share, opened, offset, length, minimum))
        position = opened.handle.position
        operation = read_op(share, opened, offset, length, minimum)
        on_loop, _ = await svc.run(operation)
        assert (on_loop.status, bytes(on_loop.body)) == (on_thread.status, bytes(on_thread.body))
        assert on_loop.status == expected, (offset, length, minimum)
        assert position == opened.handle.position
        if expected == NTStatus.SUCCESS:
            assert bytes(on_loop.body[READ_RESPONSE_HEAD_SIZE:]) == data[offset : offset + length]
    # While locks exist, an open's first look for them stats its file: the closed one never can.
    assert [o.handle for o in threaded] == [closed]
    for opened in (a, b, c, no_read, directory):
        svc.release(opened)


async def test_a_first_read_that_must_stat_for_locks_goes_to_a_thread(
    service: tuple[FsFileService, Share, Path], threaded: list[FileOperation]
) -> None:
    """While any lock exists, an open's first look for locks stats its file (extended
    attributes included), which may wait for the disk: that READ goes to a thread."""
    svc, share, root = service
    (root / "f.bin").write_bytes(b"data")
    (root / "g.bin").write_bytes(b"data")
    g = open_file(svc, share, "g.bin", disposition=1)
    f = open_file(svc, share, "f.bin", disposition=1)
    assert (await svc.run(read_op(share, f, 0, 4)))[0].status == NTStatus.SUCCESS  # no lock anywhere
    assert threaded == []
    assert lock(svc, share, g, (0, 1, LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY)) == NTStatus.SUCCESS
    first, second = read_op(share, f, 0, 4), read_op(share, f, 0, 4)
    assert (await svc.run(first))[0].status == NTStatus.SUCCESS
    assert (await svc.run(second))[0].status == NTStatus.SUCCESS
    assert threaded == [first]
    svc.release(f)
    svc.release(g)


async def test_a_read_over_the_inline_limit_or_of_a_stream_goes_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = FsFileService(inline_read_max=4096)
    share = Share("data", path=str(tmp_path))
    (tmp_path / "f.bin").write_bytes(bytes(8192))
    handed = on_threads(svc, monkeypatch)
    f = open_file(svc, share, "f.bin", disposition=1)
    small, large = read_op(share, f, 0, 4096), read_op(share, f, 0, 8192)
    assert (await svc.run(small))[0].status == NTStatus.SUCCESS
    assert (await svc.run(large))[0].status == NTStatus.SUCCESS
    assert handed == [large]
    stream = open_file(svc, share, "f.bin:s", disposition=2)  # kept in an extended attribute
    assert write(svc, share, stream, 0, b"stream") == NTStatus.SUCCESS
    from_stream = read_op(share, stream, 0, 100)
    result, _ = await svc.run(from_stream)
    assert result.status == NTStatus.SUCCESS and bytes(result.body[READ_RESPONSE_HEAD_SIZE:]) == b"stream"
    assert handed == [large, from_stream]
    svc.release(stream)
    svc.release(f)
    svc.close()


async def test_a_bug_on_the_loop_sends_the_read_to_a_thread(
    service: tuple[FsFileService, Share, Path],
    threaded: list[FileOperation],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception on the loop never escapes from there: the READ is answered as
    the thread answers it. An FsError is the READ's answer, as on the thread."""
    svc, share, root = service
    (root / "f.bin").write_bytes(b"data")
    f = open_file(svc, share, "f.bin", disposition=1)

    def broken(self: FsHandle, buffer: memoryview, offset: int) -> int | None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(FsHandle, "readinto_nowait", broken)
    operation = read_op(share, f, 0, 4)
    result, _ = await svc.run(operation)
    assert result.status == NTStatus.SUCCESS and bytes(result.body[READ_RESPONSE_HEAD_SIZE:]) == b"data"
    assert threaded == [operation] and "a READ on the event loop failed" in caplog.text

    def failing(self: FsHandle, buffer: memoryview, offset: int) -> int | None:
        raise FsError(NTStatus.ACCESS_DENIED, "no")

    monkeypatch.setattr(FsHandle, "readinto_nowait", failing)
    assert (await svc.run(read_op(share, f, 0, 4)))[0].status == NTStatus.ACCESS_DENIED
    assert threaded == [operation]
    svc.release(f)
