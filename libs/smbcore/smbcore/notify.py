"""CHANGE_NOTIFY: the request (MS-SMB2 2.2.35), FILE_NOTIFY_INFORMATION (MS-FSCC 2.7.1), and
a directory watcher over Linux inotify for the file service.

The watcher is fed by the kernel (``inotify_init1``/``inotify_add_watch`` through ctypes; the
standard library has no binding) and read on the event loop. A directory open that has asked
for notifications keeps collecting changes between requests, as Windows does (MS-FSA
2.1.5.11), so nothing that happens between two CHANGE_NOTIFY requests is missed; when more
changes pile up than a response can carry the client gets STATUS_NOTIFY_ENUM_DIR and re-reads
the directory. The open is watched through ``/proc/self/fd/N``, so the watch follows the
directory the open names, not a path that could be swapped under it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from .header import HEADER_SIZE
from .wire import Buffer, Structure, check_structure_size, raw, structure, u16, u32

log = logging.getLogger(__name__)

WATCH_TREE = 0x0001


class CompletionFilter(IntFlag):
    """MS-SMB2 2.2.35 CompletionFilter."""

    FILE_NAME = 0x001
    DIR_NAME = 0x002
    ATTRIBUTES = 0x004
    SIZE = 0x008
    LAST_WRITE = 0x010
    LAST_ACCESS = 0x020
    CREATION = 0x040
    EA = 0x080
    SECURITY = 0x100
    STREAM_NAME = 0x200
    STREAM_SIZE = 0x400
    STREAM_WRITE = 0x800


class Action(IntEnum):
    """MS-FSCC 2.7.1 FILE_NOTIFY_INFORMATION Action."""

    ADDED = 1
    REMOVED = 2
    MODIFIED = 3
    RENAMED_OLD_NAME = 4
    RENAMED_NEW_NAME = 5


@structure
@dataclass(frozen=True, slots=True)
class ChangeNotifyRequest(Structure):
    """MS-SMB2 2.2.35 (32 bytes)."""

    structure_size: int = u16(32)
    flags: int = u16(0)
    output_length: int = u32(0)
    file_id: bytes = raw(16)
    completion_filter: int = u32(0)
    reserved: int = u32(0)

    @classmethod
    def parse(cls, msg: Buffer) -> ChangeNotifyRequest:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size("CHANGE_NOTIFY request", body.structure_size, 32)
        return body

    @property
    def watch_tree(self) -> bool:
        return bool(self.flags & WATCH_TREE)


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    name: str  # relative to the watched directory, backslash-separated
    directory: bool = False

    def matches(self, completion_filter: int) -> bool:
        return bool(_FILTER_OF[(self.action, self.directory)] & completion_filter)


_NAME_CHANGE = {False: CompletionFilter.FILE_NAME, True: CompletionFilter.DIR_NAME}
_MODIFY = (
    CompletionFilter.ATTRIBUTES | CompletionFilter.SIZE | CompletionFilter.LAST_WRITE
    | CompletionFilter.LAST_ACCESS | CompletionFilter.CREATION | CompletionFilter.EA
    | CompletionFilter.SECURITY
)  # fmt: skip
_FILTER_OF: dict[tuple[Action, bool], int] = {
    **{(a, d): _NAME_CHANGE[d] for a in Action if a is not Action.MODIFIED for d in (False, True)},
    (Action.MODIFIED, False): _MODIFY,
    (Action.MODIFIED, True): _MODIFY,
}

_ENTRY = struct.Struct("<III")


def encode_notify_information(changes: list[Change], limit: int) -> bytes | None:
    """FILE_NOTIFY_INFORMATION entries, each 4-byte aligned; None if they do not fit ``limit``."""
    out = bytearray()
    previous = -1
    for change in changes:
        name = change.name.encode("utf-16-le")
        if previous >= 0:
            out.extend(bytes(-len(out) % 4))
            struct.pack_into("<I", out, previous, len(out) - previous)
        previous = len(out)
        out += _ENTRY.pack(0, change.action, len(name)) + name
    return bytes(out) if len(out) <= limit else None


def decode_notify_information(data: Buffer) -> list[tuple[int, str]]:
    """(action, name) pairs of FILE_NOTIFY_INFORMATION entries (for clients and tests)."""
    view = memoryview(data)
    entries: list[tuple[int, str]] = []
    pos = 0
    while view[pos:]:
        if len(view) - pos < _ENTRY.size:
            raise ValueError("truncated FILE_NOTIFY_INFORMATION")
        following, action, length = _ENTRY.unpack_from(view, pos)
        name = bytes(view[pos + _ENTRY.size : pos + _ENTRY.size + length]).decode("utf-16-le")
        entries.append((action, name))
        if not following:
            break
        pos += following
    return entries


# -- inotify ----------------------------------------------------------------------------------

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = (
    IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)  # fmt: skip
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


@functools.cache
def _lib() -> _Libc:
    return _Libc()


@dataclass(eq=False)
class Watch:
    """What one directory open gets told: changes matching its filter, since it started."""

    completion_filter: int
    tree: bool
    on_change: Callable[[], None]
    root: str = ""  # /proc/self/fd/N of the directory open
    limit: int = 0x80000  # bytes of changes a response may carry (the first request's buffer)
    changes: list[Change] = field(default_factory=list)
    overflowed: bool = False
    wds: dict[int, str] = field(default_factory=dict)  # inotify wd -> prefix under the open

    def add(self, change: Change, cap: int) -> None:
        if not change.matches(self.completion_filter):
            return
        if len(self.changes) >= cap:
            self.overflowed = True
        else:
            self.changes.append(change)
        self.on_change()


class Inotify:
    """One inotify instance; directories are added by fd, events dispatched to :class:`Watch`es.

    Not thread-safe: call it on the event loop (``fileno()`` goes to ``loop.add_reader`` and
    :meth:`read_events` is the reader)."""

    #: Changes kept per watch before the next response says STATUS_NOTIFY_ENUM_DIR instead.
    CAP = 4096

    def __init__(self) -> None:
        fd = int(_lib().init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._wds: dict[int, list[tuple[Watch, str]]] = {}

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def watch(self, dir_fd: int, watch: Watch) -> None:
        """Watch the directory open as ``dir_fd`` (and, for a tree watch, what is below it)."""
        watch.root = f"/proc/self/fd/{dir_fd}"
        self._add(watch.root, watch, "")
        if watch.tree:
            for top, dirs, _ in os.walk(watch.root):
                rel = os.path.relpath(top, watch.root)
                for name in dirs:
                    prefix = name if rel == "." else f"{rel}/{name}"
                    self._add(os.path.join(top, name), watch, prefix.replace("/", "\\"))

    def _add(self, path: str, watch: Watch, prefix: str) -> None:
        wd = int(_lib().add_watch(self._fd, os.fsencode(path), _MASK))
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return  # gone already
            raise OSError(err, f"inotify_add_watch: {os.strerror(err)}")
        self._wds.setdefault(wd, []).append((watch, prefix))
        watch.wds[wd] = prefix

    def unwatch(self, watch: Watch) -> None:
        for wd in watch.wds:
            users = [(w, p) for w, p in self._wds.get(wd, []) if w is not watch]
            if users:
                self._wds[wd] = users
            else:
                self._wds.pop(wd, None)
                _lib().rm_watch(self._fd, wd)  # an already-removed watch is just EINVAL
        watch.wds.clear()

    def read_events(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            raw_name = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0")
            pos += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                for users in self._wds.values():
                    for watch, _ in users:
                        watch.overflowed = True
                        watch.on_change()
                continue
            if mask & IN_IGNORED:
                self._wds.pop(wd, None)
                continue
            self._dispatch(wd, mask, os.fsdecode(raw_name))

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        directory = bool(mask & IN_ISDIR)
        if not name:
            return  # the watched directory itself (moved or deleted): its parent reports it
        if mask & IN_CREATE:
            action = Action.ADDED
        elif mask & IN_DELETE:
            action = Action.REMOVED
        elif mask & IN_MOVED_FROM:
            action = Action.RENAMED_OLD_NAME
        elif mask & IN_MOVED_TO:
            action = Action.RENAMED_NEW_NAME
        elif mask & (IN_MODIFY | IN_ATTRIB):
            action = Action.MODIFIED
        else:
            return
        for watch, prefix in list(self._wds.get(wd, [])):
            full = f"{prefix}\\{name}" if prefix else name
            watch.add(Change(action, full, directory), self.CAP)
            if watch.tree and directory and action in (Action.ADDED, Action.RENAMED_NEW_NAME):
                # A new directory under a tree watch: watch it too, by its path under the open.
                self._add(os.path.join(watch.root, *full.split("\\")), watch, full)
