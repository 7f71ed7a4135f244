"""Carrying out the core's file operations on filesystem shares (the shell side of the server).

:class:`FsFileService` receives :class:`~smbcore.server.FileOperation` events, runs each on
the :mod:`smbcore.fs` backend in a worker thread (disk I/O never blocks the event loop) and
returns the status and response body the core sends. A READ whose range is all in the page
cache is the exception: it is answered on the loop (``preadv2`` with ``RWF_NOWAIT``, which
reads only what needs no I/O), by the same code, saving the hop to a thread and back; when
the kernel would have to wait it goes to a thread like the rest. Per-request failures (a missing
file, an unknown information class, a short SET_INFO buffer) become that request's status;
they never close the connection.

What concerns several opens of one file lives here, keyed by the file's (st_dev, st_ino),
which is also the ``file_key`` the core tracks oplocks by: share modes (checked before an
existing file is opened, so a refused overwrite truncates nothing), byte-range locks, and
blocking LOCK requests, which wait for the conflicting range to be unlocked (the shell sends
the interim STATUS_PENDING response) until they get it or are cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .buffers import BufferPool
from .errors import RemoteProtocolError
from .fileinfo import (
    FILE_INFO_ACCESS,
    FILE_INFO_MIN_SIZE,
    FS_INFO_MIN_SIZE,
    STATUS_EAS_NOT_SUPPORTED,
    STATUS_NO_EAS_ON_FILE,
    AccessMask,
    DispositionFlags,
    DispositionInformation,
    DispositionInformationEx,
    FileAttributes,
    FileInfoClass,
    FileStat,
    FullEa,
    RenameInformation,
    check_ea_name,
    decode_full_ea,
    decode_set_file_info,
    encode_directory_entries,
    encode_file_info,
    encode_fs_info,
    encode_full_ea,
)
from .fileops import (
    CLOSE_FLAG_POSTQUERY_ATTRIB,
    READ_RESPONSE_HEAD_SIZE,
    SET_INFO_RESPONSE,
    CloseRequest,
    CreateAction,
    CreateRequest,
    FileTimes,
    FlushRequest,
    InfoType,
    LockFlags,
    LockRequest,
    QueryDirectoryFlags,
    QueryDirectoryRequest,
    QueryInfoRequest,
    ReadRequest,
    SetInfoRequest,
    WriteRequest,
    encode_close_response,
    encode_output_buffer_response,
    encode_read_response_head,
    encode_write_response,
)
from .fs import KEPT_ATTRIBUTES, FsError, FsHandle, FsShare, file_identity, grant_access
from .messages import EMPTY4, encode_error
from .notify import ChangeNotifyRequest, Inotify, Watch, encode_notify_information
from .ntstatus import NTStatus
from .security import SecurityDescriptor, SecurityInformation
from .server import FileOperation, FileRequest, FileResult, Share

log = logging.getLogger(__name__)

#: Bytes a directory entry takes in a typical response (FileIdBothDirectoryInformation with a
#: short name): how many entries a later QUERY_DIRECTORY looks at again for its response.
_TYPICAL_DIRECTORY_ENTRY = 128
#: Largest READ answered on the event loop when its data is in the page cache (larger ones,
#: and those that would wait for the disk, go to a worker thread); the default is the largest
#: READ the server negotiates, 8 MiB, whose copy from the page cache takes the loop well under
#: the time it then spends signing or encrypting the response (docs/benchmarks.md).
INLINE_READ_MAX = 8 << 20
#: Largest offset+length a WRITE may reach (INT64_MAX, as Windows and Samba check).
MAX_FILE_OFFSET = 0x7FFFFFFFFFFFFFFF

FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_SHARE_DELETE = 0x1, 0x2, 0x4
CREATE_DISPOSITION = 2  # FILE_CREATE: never opens an existing file
#: How a rename opens the target's directory (FILE_ADD_FILE | SYNCHRONIZE).
_ADD_FILE_ACCESS = AccessMask.FILE_WRITE_DATA | 0x00100000
_READS = AccessMask.FILE_READ_DATA | AccessMask.FILE_EXECUTE
_WRITES = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA
_DELETES = AccessMask.DELETE
#: Only opens with one of these rights take part in share-mode checks (MS-FSA 2.1.5.1.2).
_SHARE_CHECKED = _READS | _WRITES | _DELETES


@dataclass(frozen=True, slots=True)
class _Sharing:
    access: int
    share_access: int

    def conflicts(self, other: _Sharing) -> bool:
        """MS-FSA 2.1.5.1.2 (the sharing check), both ways."""
        for mine, theirs in ((self, other), (other, self)):
            if mine.access & _READS and not theirs.share_access & FILE_SHARE_READ:
                return True
            if mine.access & _WRITES and not theirs.share_access & FILE_SHARE_WRITE:
                return True
            if mine.access & _DELETES and not theirs.share_access & FILE_SHARE_DELETE:
                return True
        return False


@dataclass
class _File:
    """What the server knows of one file across its opens."""

    opens: dict[int, OpenFile] = field(default_factory=dict)  # id(open) -> open, every open
    sharing: dict[int, _Sharing] = field(default_factory=dict)  # the opens share modes concern
    delete_pending: bool = False


class OpenFiles:
    """Every open file of the server by (st_dev, st_ino), thread-safe: who has it open with
    which access and sharing (MS-FSA 2.1.5.1.2), and whether it is to be deleted once its
    last open closes (delete pending, MS-FSA 2.1.5.4, 2.1.5.15.3). While a file is delete
    pending it stays where it is (listed, keeping its directory from being removed) and new
    opens of it are refused with STATUS_DELETE_PENDING.

    A named stream (see :func:`smbcore.fs.stream_identity`) has its own sharing, as on NTFS,
    with two ties to its file: a stream of a delete-pending file is delete pending too, and an
    open of the file with DELETE access conflicts with any stream open not sharing delete.
    """

    def __init__(self) -> None:
        self._files: dict[tuple[int, int], _File] = {}
        self._streams: dict[tuple[int, int], set[tuple[int, int]]] = {}  # file -> its open streams
        self._guard = threading.Lock()

    def _refuse(self, key: tuple[int, int], wanted: _Sharing) -> None:
        file = self._files.get(key)
        owner = file_identity(key)
        if owner != key and (parent := self._files.get(owner)) is not None and parent.delete_pending:
            raise FsError(NTStatus.DELETE_PENDING, "its file is to be deleted once its opens close")
        if owner == key and wanted.access & _DELETES:
            for stream in self._streams.get(key, ()):
                if any(
                    not held.share_access & FILE_SHARE_DELETE for held in self._files[stream].sharing.values()
                ):
                    raise FsError(
                        NTStatus.SHARING_VIOLATION, "a stream of the file is open, not sharing delete"
                    )
        if file is None:
            return
        if file.delete_pending:
            raise FsError(NTStatus.DELETE_PENDING, "the file is to be deleted once its opens close")
        if wanted.access & _SHARE_CHECKED and any(wanted.conflicts(held) for held in file.sharing.values()):
            raise FsError(NTStatus.SHARING_VIOLATION, "the file is open with a conflicting share mode")

    def check(self, key: tuple[int, int], access: int, share_access: int) -> None:
        """Raise STATUS_DELETE_PENDING or STATUS_SHARING_VIOLATION if an open like this would be
        refused."""
        with self._guard:
            self._refuse(key, _Sharing(access, share_access))

    def check_pending(self, key: tuple[int, int]) -> None:
        """Raise STATUS_DELETE_PENDING if the file is delete pending."""
        self.check(key, 0, 0)

    def add(self, key: tuple[int, int], opened: OpenFile, access: int, share_access: int) -> None:
        """Register an open, checking again under the lock (another open may have won the race)."""
        wanted = _Sharing(access, share_access)
        with self._guard:
            self._refuse(key, wanted)
            if file_identity(key) != key:
                self._streams.setdefault(file_identity(key), set()).add(key)
            file = self._files.setdefault(key, _File())
            file.opens[id(opened)] = opened
            if access & _SHARE_CHECKED:
                file.sharing[id(opened)] = wanted

    def set_delete_pending(self, key: tuple[int, int], pending: bool) -> None:
        with self._guard:
            file = self._files.get(key)
            if file is not None:
                file.delete_pending = pending

    def delete_pending(self, key: tuple[int, int]) -> bool:
        with self._guard:
            file = self._files.get(key)
            return file is not None and file.delete_pending

    def remove(self, key: tuple[int, int], opened: OpenFile, *, delete_on_close: bool = False) -> bool:
        """An open is closing (``delete_on_close``: it was opened with FILE_DELETE_ON_CLOSE,
        which makes the file delete pending now). True when it was the file's last open and
        the file is delete pending: the caller deletes it."""
        with self._guard:
            file = self._files.get(key)
            if file is None or file.opens.pop(id(opened), None) is None:
                return False
            file.sharing.pop(id(opened), None)
            file.delete_pending = file.delete_pending or delete_on_close
            if file.opens:
                return False
            del self._files[key]
            if (owner := file_identity(key)) != key and (streams := self._streams.get(owner)) is not None:
                streams.discard(key)
                if not streams:
                    del self._streams[owner]
            return file.delete_pending

    def opens(self) -> list[OpenFile]:
        """Every open of every file (a snapshot)."""
        with self._guard:
            return [o for file in self._files.values() for o in file.opens.values()]

    def opens_of(self, key: tuple[int, int]) -> list[OpenFile]:
        with self._guard:
            file = self._files.get(key)
            return [] if file is None else list(file.opens.values())


class _BreakNeeded(Exception):
    """The CREATE's target has oplocks the core must break before it may be opened."""

    def __init__(self, key: tuple[int, int]) -> None:
        super().__init__(key)
        self.key = key


#: What a request's handling may raise that is its answer, never the connection's end (a
#: malformed info buffer, say, concerns this request only). Anything else is a bug, which the
#: shell answers STATUS_UNSUCCESSFUL.
_REQUEST_ERRORS = (FsError, RemoteProtocolError, _BreakNeeded)


def _failed(exc: FsError | RemoteProtocolError | _BreakNeeded) -> FileResult:
    """The answer to a request whose handling raised one of :data:`_REQUEST_ERRORS`."""
    if isinstance(exc, _BreakNeeded):
        return FileResult(NTStatus.OPLOCK_BREAK_IN_PROGRESS, file_key=exc.key)
    return FileResult(exc.status)


def _wake_first(waiters: collections.deque[asyncio.Future[int]]) -> None:
    """Changes arrived for a watch: the CHANGE_NOTIFY that has waited longest takes them (the
    next change goes to the next one, as Windows answers several requests on one open)."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(NTStatus.SUCCESS)
            return


def _blocking(request: LockRequest) -> bool:
    """Only a single range without FAIL_IMMEDIATELY may wait (MS-SMB2 3.3.5.14.2)."""
    (element,) = request.locks[:1] or (None,)
    return (
        len(request.locks) == 1
        and element is not None
        and not element.flags & (LockFlags.FAIL_IMMEDIATELY | LockFlags.UNLOCK)
    )


def file_times(st: FileStat) -> FileTimes:
    return FileTimes(
        st.creation_time,
        st.last_access_time,
        st.last_write_time,
        st.change_time,
        st.allocation_size,
        st.end_of_file,
        int(st.attributes),
    )


@dataclass
class OpenFile:
    """What the core keeps as an open's handle: the backend handle and the enumeration state."""

    handle: FsHandle
    listing: list[tuple[str, FileStat]] | None = None
    position: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    lock_key: tuple[int, int] | None = None
    watch: Watch | None = None  # CHANGE_NOTIFY: changes collected since the first request
    #: CHANGE_NOTIFY requests waiting on this open, oldest first.
    notify_queue: collections.deque[asyncio.Future[int]] = field(default_factory=collections.deque)
    closing: bool = False  # CLOSE (or the session gone) has begun: its pending LOCKs end
    lock_sequences: dict[int, int] = field(default_factory=dict)  # LockSequenceIndex -> number


@dataclass(frozen=True, slots=True)
class _Range:
    offset: int
    length: int
    exclusive: bool
    owner: OpenFile

    def overlaps(self, offset: int, length: int) -> bool:
        """Does I/O on ``length`` bytes at ``offset`` touch this range? Zero-length ranges and
        zero-length I/O touch nothing (MS-FSA 2.1.4.10)."""
        if self.length == 0 or length == 0:
            return False
        return offset < self.offset + self.length and self.offset < offset + length

    def contends(self, offset: int, length: int) -> bool:
        """Does a lock of ``length`` bytes at ``offset`` contend with this one? As for I/O, but a
        zero-length lock is a point that contends with a range strictly around it: a lock of
        0 bytes at 10 and one of 2 bytes at 9 contend, one of 2 bytes at 10 does not, and two
        zero-length locks never do (what Windows does; smbtorture smb2.lock.zerobytelength)."""
        if self.length == 0 and length == 0:
            return False
        if self.length == 0:
            return offset < self.offset < offset + length
        if length == 0:
            return self.offset < offset < self.offset + self.length
        return self.overlaps(offset, length)


#: The flags a lock element may have (MS-SMB2 3.3.5.14.2); an unlock is UNLOCK alone.
_LOCK_FLAGS = frozenset({
    LockFlags.SHARED,
    LockFlags.EXCLUSIVE,
    LockFlags.SHARED | LockFlags.FAIL_IMMEDIATELY,
    LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY,
})  # fmt: skip
#: LockSequenceIndex values that take part in lock replay detection (MS-SMB2 3.3.5.14).
_LOCK_SEQUENCE_INDEXES = range(1, 65)


class ByteRangeLocks:
    """Byte-range locks per file (MS-SMB2 3.3.5.14, MS-FSA 2.1.5.9). :meth:`apply` never
    waits: a conflict is STATUS_LOCK_NOT_GRANTED; a blocking request retries when
    ``on_release`` says some lock went away (see :meth:`FsFileService.run`)."""

    def __init__(self, on_release: Callable[[], None] = lambda: None) -> None:
        self._ranges: dict[tuple[int, int], list[_Range]] = {}
        self._guard = threading.Lock()
        self.on_release = on_release

    @staticmethod
    def _key(opened: OpenFile) -> tuple[int, int]:
        if opened.lock_key is None:  # the file an open names never changes: stat it once
            opened.lock_key = (id(opened.handle.share), opened.handle.stat().file_index)
        return opened.lock_key

    def apply(self, opened: OpenFile, request: LockRequest) -> tuple[int, bytes]:
        """Lock or unlock the request's ranges, in order. A LockSequence whose index is 1-64
        and whose number is the one the open's last successful LOCK with that index had is a
        replay: answered STATUS_SUCCESS, nothing done (MS-SMB2 3.3.5.14). A request on an open
        that is closing (a LOCK that waited) is STATUS_RANGE_NOT_LOCKED."""
        if opened.closing or not request.locks:
            return (NTStatus.RANGE_NOT_LOCKED if opened.closing else NTStatus.INVALID_PARAMETER), b""
        index, number = request.lock_sequence >> 4, request.lock_sequence & 0xF
        replayable = index in _LOCK_SEQUENCE_INDEXES
        if replayable:
            if opened.lock_sequences.get(index) == number:
                return NTStatus.SUCCESS, EMPTY4
            opened.lock_sequences.pop(index, None)
        key = self._key(opened)
        with self._guard:
            ranges = self._ranges.setdefault(key, [])
            if request.locks[0].flags & LockFlags.UNLOCK:
                status = self._unlock(opened, ranges, request)
            else:
                status = self._lock(opened, ranges, request)
            if not ranges:
                del self._ranges[key]
        if status == NTStatus.SUCCESS and replayable:
            opened.lock_sequences[index] = number
        return status, EMPTY4 if status == NTStatus.SUCCESS else b""

    def _unlock(self, opened: OpenFile, ranges: list[_Range], request: LockRequest) -> int:
        """MS-SMB2 3.3.5.14.1: each element in turn (those before a failure stay unlocked);
        an exclusive lock of the range goes before a shared one stacked on it."""
        unlocked = False
        try:
            for element in request.locks:
                if element.flags != LockFlags.UNLOCK:
                    return NTStatus.INVALID_PARAMETER
                mine = [
                    r for r in ranges
                    if r.owner is opened and (r.offset, r.length) == (element.offset, element.length)
                ]  # fmt: skip
                if not mine:
                    return NTStatus.RANGE_NOT_LOCKED
                ranges.remove(next((r for r in mine if r.exclusive), mine[0]))
                unlocked = True
            return NTStatus.SUCCESS
        finally:
            if unlocked:
                self.on_release()

    @staticmethod
    def _lock(opened: OpenFile, ranges: list[_Range], request: LockRequest) -> int:
        """MS-SMB2 3.3.5.14.2: all the elements or none (those granted before a failure are
        released again). An exclusive lock contends with any other lock, the open's own
        included; a shared one only with another open's exclusive lock (MS-FSA 2.1.5.9).
        Several elements must each say FAIL_IMMEDIATELY: only a single lock may wait."""
        granted: list[_Range] = []
        status = NTStatus.SUCCESS
        several = len(request.locks) > 1
        for element in request.locks:
            if element.flags not in _LOCK_FLAGS or (
                several and not element.flags & LockFlags.FAIL_IMMEDIATELY
            ):
                status = NTStatus.INVALID_PARAMETER
            elif element.offset + element.length > 1 << 64:
                status = NTStatus.INVALID_LOCK_RANGE
            else:
                shared = bool(element.flags & LockFlags.SHARED)
                if any(
                    r.contends(element.offset, element.length)
                    and (not shared or (r.exclusive and r.owner is not opened))
                    for r in ranges
                ):
                    status = NTStatus.LOCK_NOT_GRANTED
            if status != NTStatus.SUCCESS:
                ranges[:] = [r for r in ranges if r not in granted]
                return status
            lock = _Range(element.offset, element.length, not shared, opened)
            ranges.append(lock)
            granted.append(lock)
        return status

    def io_conflicts(self, opened: OpenFile, offset: int, length: int, *, write: bool) -> bool:
        """Does I/O by ``opened`` on ``length`` bytes at ``offset`` meet a lock (MS-FSA 2.1.4.10,
        used by READ 2.1.5.2 and WRITE 2.1.5.3)? Another open's exclusive lock blocks reads and
        writes; a shared lock blocks writes, its holder's own included (a shared lock promises
        every holder that the bytes stay as they are). The holder's own exclusive lock never
        blocks its I/O. Zero-length I/O never conflicts."""
        if length == 0 or not self._ranges:  # no lock anywhere: no fstat, no guard
            return False
        key = self._key(opened)
        with self._guard:
            for r in self._ranges.get(key, ()):
                if not r.overlaps(offset, length):
                    continue
                if r.exclusive and r.owner is not opened:
                    return True
                if not r.exclusive and write:
                    return True
            return False

    def known(self, opened: OpenFile) -> bool:
        """Can :meth:`io_conflicts` answer for ``opened`` without touching the disk? Not while
        some lock exists and this open has not been looked up yet: that takes a stat of the
        file (with its extended attributes). Checked without the guard: a lock taken meanwhile
        only costs that stat."""
        return not self._ranges or opened.lock_key is not None

    def release(self, opened: OpenFile) -> None:
        """Drop every lock of an open that is closing."""
        dropped = False
        with self._guard:
            for key in list(self._ranges):
                kept = [r for r in self._ranges[key] if r.owner is not opened]
                dropped = dropped or len(kept) != len(self._ranges[key])
                self._ranges[key] = kept
                if not kept:
                    del self._ranges[key]
        if dropped:
            self.on_release()


class FsFileService:
    """File operations on :class:`~smbcore.fs.FsShare` roots, one backend per share path."""

    def __init__(self, *, inline_read_max: int = INLINE_READ_MAX) -> None:
        self._read_buffers = BufferPool()  # READ response bodies, reused once sent
        self._inline_read_max = inline_read_max
        self._shares: dict[str, FsShare] = {}
        self._guard = threading.Lock()
        self._locks = ByteRangeLocks(self._locks_released)
        self._files = OpenFiles()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_waiters: dict[int, asyncio.Future[bool]] = {}  # op id -> woken (False: cancelled)
        self._inotify: Inotify | None = None
        self._notify_waiters: dict[int, tuple[OpenFile, asyncio.Future[int]]] = {}  # op id -> (open, why)

    def _backend(self, share: Share) -> FsShare:
        if share.path is None:
            raise FsError(NTStatus.INVALID_DEVICE_REQUEST, f"share {share.name} has no folder")
        with self._guard:
            backend = self._shares.get(share.path)
            if backend is None:
                backend = self._shares[share.path] = FsShare(Path(share.path), label=share.name)
            return backend

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        request = op.request
        if isinstance(request, LockRequest) and _blocking(request):
            return await self._lock_waiting(op)
        if isinstance(request, ChangeNotifyRequest):
            return FileResult(*await self._change_notify(op, request)), None
        if (
            isinstance(request, ReadRequest)
            and request.length <= self._inline_read_max
            and isinstance(op.handle, OpenFile)
            and self._locks.known(op.handle)
        ):
            answered = self._read_nowait(op.handle, request)
            if answered is not None:
                return answered, None
        return await asyncio.to_thread(self.run_sync, op)

    def _read_nowait(self, opened: OpenFile, request: ReadRequest) -> FileResult | None:
        """On the loop: the READ answered as :meth:`run_sync` answers it, if its data is in the
        page cache; None when the kernel would have to wait (or cannot say), and the READ goes
        to a thread. So does one that meets a bug: the thread's answer is then the answer."""
        try:
            answer = self._read(opened, request, opened.handle.readinto_nowait)
        except _REQUEST_ERRORS as exc:
            return _failed(exc)
        except Exception:
            log.exception("a READ on the event loop failed; it goes to a thread")
            return None
        return None if answer is None else FileResult(*answer)

    async def _change_notify(self, op: FileOperation, request: ChangeNotifyRequest) -> tuple[int, bytes]:
        """MS-SMB2 3.3.5.19: answer with the changes seen since the last answer, or wait for
        some; STATUS_NOTIFY_ENUM_DIR when they do not fit (or the kernel dropped some),
        STATUS_CANCELLED on CANCEL, STATUS_NOTIFY_CLEANUP when the directory is closed."""
        opened = op.handle
        assert isinstance(opened, OpenFile)
        if not opened.handle.is_directory:
            return NTStatus.INVALID_PARAMETER, b""
        if not opened.handle.granted_access & AccessMask.FILE_READ_DATA:  # FILE_LIST_DIRECTORY
            return NTStatus.ACCESS_DENIED, b""
        if opened.handle.closed:
            return NTStatus.NOTIFY_CLEANUP, b""
        if self._files.delete_pending(opened.handle.identity):
            return NTStatus.DELETE_PENDING, b""
        loop = self._loop = asyncio.get_running_loop()
        watch = opened.watch
        if watch is None:
            if self._inotify is None:
                self._inotify = Inotify()
                loop.add_reader(self._inotify.fileno(), self._inotify.read_events)
            # The first request's OutputBufferLength sizes the open's change buffer for good
            # (as Windows keeps it): with 0, every change is reported as NOTIFY_ENUM_DIR.
            watch = opened.watch = Watch(
                request.completion_filter,
                request.watch_tree,
                functools.partial(_wake_first, opened.notify_queue),
                limit=request.output_length,
            )
            try:
                self._inotify.watch(opened.handle.fileno(), watch)
            except OSError as exc:
                log.warning("cannot watch a directory", extra={"error": str(exc)})
                return NTStatus.NOT_SUPPORTED, b""
        first = True
        while not watch.changes and not watch.overflowed:
            why: asyncio.Future[int] = loop.create_future()
            self._notify_waiters[op.op_id] = (opened, why)
            # Woken, but an older request took the changes: still the oldest, so first in line.
            (opened.notify_queue.append if first else opened.notify_queue.appendleft)(why)
            first = False
            try:
                status = await why
            finally:
                self._notify_waiters.pop(op.op_id, None)
                opened.notify_queue.remove(why)
            if status != NTStatus.SUCCESS:
                return status, b""
        changes, watch.changes = watch.changes, []
        overflowed, watch.overflowed = watch.overflowed, False
        limit = min(request.output_length, watch.limit)
        data = None if overflowed else encode_notify_information(changes, limit)
        if data is None:
            return NTStatus.NOTIFY_ENUM_DIR, b""
        return NTStatus.SUCCESS, encode_output_buffer_response(data)

    async def _lock_waiting(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        """A blocking lock (one range, no FAIL_IMMEDIATELY, MS-SMB2 3.3.5.14.2): retried each
        time some lock is released, until granted or cancelled (STATUS_CANCELLED)."""
        self._loop = asyncio.get_running_loop()
        while True:
            waiter = self._loop.create_future()
            self._lock_waiters[op.op_id] = waiter
            try:
                result, _ = await asyncio.to_thread(self.run_sync, op)
                if result.status != NTStatus.LOCK_NOT_GRANTED:
                    return result, None
                if not await waiter:  # set early if a lock went away while we tried
                    return FileResult(NTStatus.CANCELLED), None
            finally:
                self._lock_waiters.pop(op.op_id, None)

    def _locks_released(self) -> None:
        """From any thread: wake the blocking locks so they try again."""
        loop = self._loop
        if loop is not None and self._lock_waiters:
            loop.call_soon_threadsafe(self._wake_lock_waiters, True)

    def _wake_lock_waiters(self, woken: bool) -> None:
        for waiter in list(self._lock_waiters.values()):
            if not waiter.done():
                waiter.set_result(woken)

    def cancel(self, op_id: int) -> None:
        """A CANCEL (or the connection gone): a waiting lock or CHANGE_NOTIFY answers
        STATUS_CANCELLED."""
        waiter = self._lock_waiters.get(op_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(False)
        _, why = self._notify_waiters.get(op_id, (None, None))
        if why is not None and not why.done():
            why.set_result(NTStatus.CANCELLED)

    def _end_watch(self, opened: OpenFile) -> None:
        """On the loop: a directory open is closing; its pending CHANGE_NOTIFY is answered."""
        if opened.watch is not None and self._inotify is not None:
            self._inotify.unwatch(opened.watch)
        opened.watch = None
        for owner, why in list(self._notify_waiters.values()):
            if owner is opened and not why.done():
                why.set_result(NTStatus.NOTIFY_CLEANUP)

    def _directory_delete_pending(self, identity: tuple[int, int]) -> None:
        """From any thread: a directory became delete pending; the CHANGE_NOTIFYs waiting on
        its other opens are answered STATUS_DELETE_PENDING (MS-FSA 2.1.5.15.3)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._end_notifies, identity, NTStatus.DELETE_PENDING)

    def _end_notifies(self, identity: tuple[int, int], status: int) -> None:
        for owner, why in list(self._notify_waiters.values()):
            if owner.handle.identity == identity and not why.done():
                why.set_result(status)

    def release(self, handle: object) -> None:
        if isinstance(handle, OpenFile):
            delete = self._forget(handle)
            try:
                handle.handle.close(delete=delete)
            except FsError as exc:
                log.info("closing an abandoned open failed", extra={"error": str(exc)})

    def _forget(self, opened: OpenFile) -> bool:
        """An open is closing: its locks go, the LOCKs it has waiting end (they are answered
        STATUS_RANGE_NOT_LOCKED), and it leaves the open-file table. Returns whether the close
        must delete the file: it was delete pending (or this open was made with
        FILE_DELETE_ON_CLOSE) and this was its last open (MS-FSA 2.1.5.4)."""
        opened.closing = True
        handle = opened.handle
        delete_on_close = handle.delete_on_close
        if delete_on_close and handle.is_directory:
            try:  # a directory that is not empty is not deleted (nor made delete pending)
                delete_on_close = handle.is_empty()
            except FsError:
                delete_on_close = False
        self._locks.release(opened)
        self._locks_released()  # waiting LOCKs on this open see it closing
        delete = self._files.remove(handle.identity, opened, delete_on_close=delete_on_close)
        if handle.is_directory and not delete and self._files.delete_pending(handle.identity):
            self._directory_delete_pending(handle.identity)
        if opened.watch is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._end_watch, opened)
        return delete

    def close(self) -> None:
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
        with self._guard:
            for backend in self._shares.values():
                backend.close()
            self._shares.clear()

    def run_sync(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        try:
            request = op.request
            if isinstance(request, CreateRequest):
                return self._create(op, request)
            assert isinstance(op.handle, OpenFile)
            return FileResult(*self._on_open(op.handle, request)), None
        except _REQUEST_ERRORS as exc:
            return _failed(exc), None

    def _create(
        self, op: FileOperation, req: CreateRequest
    ) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        backend = self._backend(op.share)
        if req.impersonation_level > MAX_IMPERSONATION_LEVEL:  # MS-SMB2 3.3.5.9
            return FileResult(STATUS_BAD_IMPERSONATION_LEVEL), None
        wanted = grant_access(req.desired_access, backend.read_only) if req.desired_access else 0

        def before_open(key: tuple[int, int]) -> None:
            self._files.check_pending(key)  # before oplocks: no break for a file being deleted
            if req.disposition == CREATE_DISPOSITION:
                return  # STATUS_OBJECT_NAME_COLLISION follows
            try:
                self._files.check(key, wanted, req.share_access)
            except FsError:
                # A sharing conflict breaks only a Batch oplock first (its holder may just be
                # keeping a closed file open); under any other oplock it is answered at once.
                if key in op.batch_keys:
                    raise _BreakNeeded(key) from None
                raise
            if key in op.break_keys:
                raise _BreakNeeded(key)

        # The EA, security descriptor and allocation size contexts ([MS-SMB2] 2.2.13.2.1,
        # 2.2.13.2.2, 2.2.13.2.6) are checked before anything is created, and applied to a
        # file this CREATE made (or overwrote).
        eas: list[FullEa] = []
        sd: SecurityDescriptor | None = None
        allocation: int | None = None
        for context in req.contexts:
            if context.name == CONTEXT_EA:
                eas = decode_full_ea(context.data)
            elif context.name == CONTEXT_SECURITY:
                sd = SecurityDescriptor.decode(context.data)
            elif context.name == CONTEXT_TIMEWARP:  # no previous versions of anything here
                return FileResult(NTStatus.OBJECT_NAME_NOT_FOUND), None
            elif context.name == CONTEXT_ALLOCATION:
                if len(context.data) < 8:
                    return FileResult(NTStatus.INVALID_PARAMETER), None
                allocation = int.from_bytes(context.data[:8], "little")
        if eas and not backend.xattrs:
            return FileResult(STATUS_EAS_NOT_SUPPORTED), None
        handle = backend.open(
            req.name, req.disposition, req.options, req.desired_access, before_open,
            file_attributes=req.file_attributes,
        )  # fmt: skip
        opened = OpenFile(handle)
        try:
            self._files.add(handle.identity, opened, handle.granted_access, req.share_access)
        except FsError:
            handle.close(delete=False)
            raise
        try:
            if handle.create_action != CreateAction.OPENED:
                # The attributes asked for; a new file is also ARCHIVE, as NTFS makes it.
                attributes = req.file_attributes & KEPT_ATTRIBUTES
                if attributes & ~FileAttributes.ARCHIVE:
                    archive = 0 if handle.is_directory else FileAttributes.ARCHIVE
                    handle.set_attributes(attributes | archive, check_access=False)
                if eas:
                    handle.set_eas(eas, check_access=False)
                if allocation is not None and not handle.is_directory:
                    handle.set_allocation_size(allocation, check_access=False)
                if sd is not None:
                    info = SecurityInformation.DACL | SecurityInformation.GROUP
                    handle.set_security(info if sd.owner is None else info | SecurityInformation.OWNER, sd,
                                        check_access=False)  # fmt: skip
            times = file_times(handle.stat())
        except FsError:
            self._files.remove(handle.identity, opened)
            handle.close(delete=False)
            raise
        result = FileResult(NTStatus.SUCCESS, handle=opened, file_key=handle.identity)
        return result, (handle.create_action, times)

    def _on_open(
        self,
        opened: OpenFile,
        request: FileRequest,
    ) -> tuple[int, bytes | bytearray]:
        handle = opened.handle
        if isinstance(request, ReadRequest):
            answer = self._read(opened, request, handle.readinto)
            assert answer is not None  # readinto always reads
            return answer
        if isinstance(request, WriteRequest):
            offset = request.offset
            if offset + len(request.data) > MAX_FILE_OFFSET:
                return NTStatus.INVALID_PARAMETER, b""
            if self._locks.io_conflicts(opened, offset, len(request.data), write=True):
                return NTStatus.FILE_LOCK_CONFLICT, b""
            # One write at a time per open: the kernel serializes buffered writes to a file
            # anyway (the inode lock), but a second writer spins on that lock while the first
            # copies its 8 MiB, burning the CPU the client and the receiving loop need.
            with opened.lock:
                written = handle.pwrite(request.data, offset)
            handle.position = offset + written
            return NTStatus.SUCCESS, encode_write_response(written)
        if isinstance(request, CloseRequest):
            times = None
            if request.flags & CLOSE_FLAG_POSTQUERY_ATTRIB:
                times = file_times(handle.stat())
            delete = self._forget(opened)
            handle.close(delete=delete)
            return NTStatus.SUCCESS, encode_close_response(request.flags, times)
        if isinstance(request, FlushRequest):
            handle.flush()
            return NTStatus.SUCCESS, EMPTY4
        if isinstance(request, QueryDirectoryRequest):
            return self._query_directory(opened, request)
        if isinstance(request, QueryInfoRequest):
            return self._query_info(opened, request)
        if isinstance(request, SetInfoRequest):
            if request.info_type == InfoType.SECURITY:
                sd = SecurityDescriptor.decode(request.buffer)
                handle.set_security(request.additional_information, sd)
                return NTStatus.SUCCESS, SET_INFO_RESPONSE
            if request.info_type != InfoType.FILE:
                return NTStatus.NOT_SUPPORTED, b""
            info = decode_set_file_info(request.info_class, request.buffer)
            if isinstance(info, DispositionInformation | DispositionInformationEx):
                self._set_disposition(opened, info)
            elif isinstance(info, RenameInformation):
                self._rename(opened, info)
            else:
                handle.set_info(info)
            return NTStatus.SUCCESS, SET_INFO_RESPONSE
        if isinstance(request, LockRequest):
            return self._locks.apply(opened, request)
        return NTStatus.INVALID_PARAMETER, b""  # CREATE never targets an open

    def _read(
        self, opened: OpenFile, request: ReadRequest, readinto: Callable[[memoryview, int], int | None]
    ) -> tuple[int, bytes | bytearray] | None:
        """MS-SMB2 3.3.5.12, with ``readinto`` (the handle's, or its non-blocking variant, which
        gives None when it would block: then so does this, and nothing has changed)."""
        # Read straight into the response body: one buffer, no intermediate copy.
        if self._locks.io_conflicts(opened, request.offset, request.length, write=False):
            return NTStatus.FILE_LOCK_CONFLICT, b""
        # The buffer is a pooled one (no zeroed 8 MiB per READ); a short read (the end of
        # the file) is copied out of it, so that the pooled buffer keeps its size.
        head = READ_RESPONSE_HEAD_SIZE
        body = self._read_buffers.take(head + request.length)
        got = readinto(memoryview(body)[head:], request.offset)
        if got is None:
            return None
        if (request.length and not got) or got < request.minimum_count:
            return NTStatus.END_OF_FILE, b""
        if got < request.length:
            body = body[: head + got]
        body[:head] = encode_read_response_head(got)
        opened.handle.position = request.offset + got  # FilePositionInformation follows I/O
        return NTStatus.SUCCESS, body

    def _query_directory(self, opened: OpenFile, req: QueryDirectoryRequest) -> tuple[int, bytes]:
        """MS-SMB2 3.3.5.18: the names are taken at the first query (or a restart) and handed
        out in as many responses as it takes; then STATUS_NO_MORE_FILES. Entries handed out by
        a later response are looked at again first, as Windows reads the directory as it goes:
        one deleted meanwhile is left out, one changed is reported as it is now."""
        with opened.lock:
            restart = req.flags & (QueryDirectoryFlags.RESTART_SCANS | QueryDirectoryFlags.REOPEN)
            if opened.listing is None or restart:
                pattern = req.pattern or "*"
                opened.listing = opened.handle.list_directory(pattern)
                opened.position = 0
                if not opened.listing:
                    return NTStatus.NO_SUCH_FILE, b""
                fresh = [(entry, 1) for entry in opened.listing]
            else:
                fresh = self._entries_now(opened, req.output_length)
            if not fresh:
                opened.position = len(opened.listing)
                return NTStatus.NO_MORE_FILES, b""
            single = bool(req.flags & QueryDirectoryFlags.RETURN_SINGLE_ENTRY)
            entries = [entry for entry, _ in fresh]
            data, count = encode_directory_entries(req.info_class, entries, req.output_length, single)
            if count == 0:
                return NTStatus.INFO_LENGTH_MISMATCH, b""
            opened.position += sum(taken for _, taken in fresh[:count])
            if count == len(fresh):  # entries found gone after the last one sent are passed too
                opened.position += sum(taken for _, taken in fresh[count:])
            return NTStatus.SUCCESS, encode_output_buffer_response(data)

    @staticmethod
    def _entries_now(opened: OpenFile, output_length: int) -> list[tuple[tuple[str, FileStat], int]]:
        """The next entries of the listing as they are now (enough to fill ``output_length``),
        each with how many listing positions it stands for (itself and the gone ones before
        it); gone entries at the end count towards the last one."""
        assert opened.listing is not None
        remaining = opened.listing[opened.position :]
        window = max(1, output_length // _TYPICAL_DIRECTORY_ENTRY)
        fresh: list[tuple[tuple[str, FileStat], int]] = []
        skipped = 0
        for name, st in remaining:
            now = st if name in (".", "..") else opened.handle.entry_now(name)
            if now is None:
                skipped += 1
                continue
            fresh.append(((name, now), skipped + 1))
            skipped = 0
            if len(fresh) >= window:
                break
        if fresh and skipped:
            entry, taken = fresh[-1]
            fresh[-1] = (entry, taken + skipped)
        return fresh

    def _set_disposition(
        self, opened: OpenFile, info: DispositionInformation | DispositionInformationEx
    ) -> None:
        """FileDispositionInformation(Ex) (MS-FSA 2.1.5.15.3): the file becomes delete pending
        (or stops being so) for all its opens; with FILE_DISPOSITION_ON_CLOSE the open's own
        delete-on-close is set instead, as FILE_DELETE_ON_CLOSE at CREATE would have."""
        handle = opened.handle
        if isinstance(info, DispositionInformation):
            delete, flags = info.delete_pending, 0
        else:
            delete, flags = bool(info.flags & DispositionFlags.DELETE), info.flags
        if not handle.granted_access & AccessMask.DELETE:
            raise FsError(NTStatus.ACCESS_DENIED, f"delete of {handle.smb_path!r} without the access")
        if delete:
            handle.check_delete(ignore_readonly=bool(flags & DispositionFlags.IGNORE_READONLY_ATTRIBUTE))
        if flags & DispositionFlags.ON_CLOSE:
            handle.delete_on_close = delete
        else:
            self._files.set_delete_pending(handle.identity, delete)
            if delete and handle.is_directory:
                self._directory_delete_pending(handle.identity)

    def _rename(self, opened: OpenFile, info: RenameInformation) -> None:
        """FileRenameInformation (MS-FSA 2.1.5.15.12), with what other opens forbid: a
        directory with an open file below it is not renamed (STATUS_ACCESS_DENIED), nor is an
        open file replaced; the target directory is opened as Windows does for a rename
        (FILE_ADD_FILE, sharing read and write), so an open of it with DELETE access or one
        that does not share writing is STATUS_SHARING_VIOLATION. The file's other opens
        follow it to its new name."""
        handle = opened.handle
        if handle.is_directory:
            below = handle.smb_path + "\\"
            for other in self._files.opens():
                if other.handle.share is handle.share and other.handle.smb_path.startswith(below):
                    raise FsError(NTStatus.ACCESS_DENIED, f"{other.handle.smb_path!r} is open")

        def before_rename(directory: tuple[int, int], replaced: tuple[int, int] | None) -> None:
            self._files.check(directory, _ADD_FILE_ACCESS, FILE_SHARE_READ | FILE_SHARE_WRITE)
            if replaced is not None and self._files.opens_of(replaced):
                raise FsError(NTStatus.ACCESS_DENIED, f"{info.file_name!r} is open")

        handle.rename(info.file_name, info.replace_if_exists, before_rename)
        for other in self._files.opens_of(handle.identity):
            if other is not opened:
                other.handle.follow_rename(handle)

    def _query_info(self, opened: OpenFile, req: QueryInfoRequest) -> tuple[int, bytes]:
        """MS-SMB2 3.3.5.20: a buffer below the class's fixed part is INFO_LENGTH_MISMATCH;
        one the whole answer does not fit is BUFFER_OVERFLOW with what fits, except for a
        security descriptor (BUFFER_TOO_SMALL, with the size needed as error data, 3.3.5.20.3)
        and EAs (whole entries only, BUFFER_TOO_SMALL when not even one fits)."""
        handle = opened.handle
        if req.info_type == InfoType.SECURITY:
            sd = handle.security_descriptor(req.additional_information).encode()
            if len(sd) > req.output_length:
                return NTStatus.BUFFER_TOO_SMALL, encode_error(len(sd).to_bytes(4, "little"))
            return NTStatus.SUCCESS, encode_output_buffer_response(sd)
        if req.info_type == InfoType.FILE:
            needed = FILE_INFO_ACCESS.get(req.info_class, 0)
            if needed and not handle.granted_access & needed:
                return NTStatus.ACCESS_DENIED, b""
            if req.info_class == FileInfoClass.FULL_EA:
                return self._query_eas(handle, req)
            st = replace(handle.stat(), delete_pending=self._files.delete_pending(handle.identity))
            if req.info_class == FileInfoClass.STREAM:
                st = replace(st, streams=handle.streams())
            data = encode_file_info(req.info_class, st, handle.open_info())
            minimum = FILE_INFO_MIN_SIZE.get(req.info_class, 0)
        elif req.info_type == InfoType.FILESYSTEM:
            data = encode_fs_info(req.info_class, handle.share.volume_info())
            minimum = FS_INFO_MIN_SIZE.get(req.info_class, 0)
        else:
            return NTStatus.NOT_SUPPORTED, b""
        if req.output_length < minimum:
            return NTStatus.INFO_LENGTH_MISMATCH, b""
        if len(data) > req.output_length:
            return NTStatus.BUFFER_OVERFLOW, encode_output_buffer_response(data[: req.output_length])
        return NTStatus.SUCCESS, encode_output_buffer_response(data)

    @staticmethod
    def _query_eas(handle: FsHandle, req: QueryInfoRequest) -> tuple[int, bytes]:
        """FileFullEaInformation ([MS-FSA] 2.1.5.11.12): every EA, or those the input's
        FILE_GET_EA_INFORMATION list names (one missing is answered with an empty value).
        Each query starts from the first EA (no enumeration state is kept between queries)."""
        eas = handle.list_eas()
        if req.input:
            by_name = {ea.name: ea for ea in eas}
            eas = [by_name.get(name, FullEa(name)) for name in decode_get_ea_names(req.input)]
        if not eas:
            return STATUS_NO_EAS_ON_FILE, b""
        data, count = encode_full_ea(eas, req.output_length)
        if count == 0:
            return NTStatus.BUFFER_TOO_SMALL, b""
        status = NTStatus.SUCCESS if count == len(eas) else NTStatus.BUFFER_OVERFLOW
        return status, encode_output_buffer_response(data)


#: CREATE context names ([MS-SMB2] 2.2.13.2): extended attributes, a security descriptor.
CONTEXT_EA = b"ExtA"
CONTEXT_SECURITY = b"SecD"
CONTEXT_ALLOCATION = b"AlSi"  # [MS-SMB2] 2.2.13.2.6: the allocation size of a new file
CONTEXT_TIMEWARP = b"TWrp"  # [MS-SMB2] 2.2.13.2.7: open a previous version (snapshot)
#: ImpersonationLevel runs from Anonymous (0) to Delegate (3); anything else is refused.
MAX_IMPERSONATION_LEVEL = 3
STATUS_BAD_IMPERSONATION_LEVEL = 0xC00000A5
#: Most names one FILE_GET_EA_INFORMATION list may hold.
MAX_GET_EA_NAMES = 4096


def decode_get_ea_names(buf: bytes) -> list[str]:
    """The names of a FILE_GET_EA_INFORMATION list ([MS-FSCC] 2.4.15.1): NextEntryOffset (4),
    EaNameLength (1), EaName with its NUL. Bounds are checked before each read."""
    names: list[str] = []
    pos = 0
    while True:
        if pos + 5 > len(buf):
            raise RemoteProtocolError(
                f"FILE_GET_EA_INFORMATION at {pos} past the end", NTStatus.INVALID_PARAMETER
            )
        nxt = int.from_bytes(buf[pos : pos + 4], "little")
        length = buf[pos + 4]
        if pos + 5 + length > len(buf) or (nxt and nxt < 5 + length):
            raise RemoteProtocolError(f"FILE_GET_EA_INFORMATION name at {pos}", NTStatus.INVALID_PARAMETER)
        try:
            name = buf[pos + 5 : pos + 5 + length].decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("EA name is not ASCII", NTStatus.INVALID_PARAMETER) from None
        names.append(check_ea_name(name))
        if nxt == 0 or len(names) >= MAX_GET_EA_NAMES:
            return names
        pos += nxt
