"""The filesystem behind a disk share: a directory tree served with SMB2 CREATE semantics.

Synchronous and blocking: the server's asyncio shell calls it from worker threads (all but
:meth:`FsHandle.readinto_nowait`, which never blocks and may run on the event loop). One
:class:`FsShare` per share (it holds a descriptor of the share root for its lifetime), one
:class:`FsHandle` per open. Every failure is an :class:`FsError` carrying the NTSTATUS to
answer; every ``OSError`` is translated through the one table :data:`ERRNO_STATUS`.

Paths (:func:`split_smb_path`): SMB paths are backslash-separated and relative to the share
root; ``""`` is the root. Refused, with the statuses Windows and Samba answer: a leading
backslash (STATUS_INVALID_PARAMETER, MS-SMB2 3.3.5.9); a character NTFS does not allow in a
name (``"*/:<>?|`` and 0x00-0x1F), except the stream suffix of the last component (below)
(STATUS_OBJECT_NAME_INVALID); an empty component in the
middle (``a\\\\b``) or a component over 255 bytes (STATUS_OBJECT_NAME_INVALID); ``..`` that
climbs above the root (STATUS_OBJECT_PATH_SYNTAX_BAD, as Samba's ``check_path_syntax``).
``..`` inside the share and ``.`` are resolved lexically, as Samba does; one trailing
backslash is ignored.

Confinement: every lookup walks the path one component at a time from the root's
descriptor with ``openat``-style calls (``dir_fd``) and ``O_NOFOLLOW``, never through a
path string, so a component renamed or swapped for a symbolic link during the walk cannot
lead outside the share (the swap makes ``O_NOFOLLOW`` fail: STATUS_ACCESS_DENIED). Symbolic
links are followed by reading them and continuing the walk in user space: a link to
somewhere inside the share works like its target (relative, or absolute under the root's
path); one that leads outside, or a chain longer than 40 links, is STATUS_ACCESS_DENIED.
Deleting or renaming an open made through a link acts on the link, as on Samba. Listings
hide links that lead outside or nowhere, special files (FIFOs, devices, sockets: they are
refused on open too) and names SMB cannot carry (invalid characters, not UTF-8).

Names are case-insensitive and case-preserving, as on Windows (NTFS): a component with no
entry of exactly that name is looked for again among the directory's entries, compared
case-insensitively (the first in directory order wins when several differ only in case), so
``open("A.TXT")`` finds ``a.txt``, creating ``A.TXT`` beside it opens or collides with it, and a
rename may change just the case. The lookup that misses costs a scan of the directory (as on
Samba with ``case sensitive = no``); ``FsShare(case_sensitive=True)`` skips it and the volume then
says FILE_CASE_SENSITIVE_SEARCH. Search patterns of :meth:`FsHandle.list_directory` match
case-insensitively either way, as on Windows.

Sharing modes, oplocks/leases and the cross-open "delete pending" state belong to the
server's open table, not here. On its own a handle deletes its entry when it closes with
delete-on-close set; a server with several opens of the file tells :meth:`FsHandle.close`
whether this close is the one that deletes.

What POSIX does not keep is kept in ``user.`` extended attributes of the file, where the
filesystem has them (the volume then says FILE_SUPPORTS_EXTENDED_ATTRIBUTES):

* EAs: EA ``NAME`` (upper-cased, as NTFS keeps EA names) is the attribute ``user.NAME``.
  Attributes with lower-case names are not EAs: ``user.ferry.*`` are this module's own, and
  Samba's (``user.DOSATTRIB``, ``user.DosStream.*``, ``user.SAMBA_*``) are hidden too.
* The creation time a client sets: ``user.ferry.creation_time`` (a FILETIME, 8 bytes LE);
  without it a file reports the older of its mtime and ctime.
* The security descriptor a client sets: ``user.ferry.security``, stored with the owner,
  group and mode it was applied as; it is reported only while the file still has those
  (a change through POSIX wins, and the descriptor is synthesized again; see
  :mod:`smbcore.security`).

A change time a client sets is kept in memory (POSIX cannot set ctime) and reported until
the file's real ctime moves on, that is until the next change.

Named streams (``file.txt:name`` or ``file.txt:name:$DATA``; ``file.txt::$DATA`` is the file
itself) live in extended attributes of their file, ``user.ferry.stream.NAME`` (names kept as
created, matched case-insensitively), so they follow it through renames and go with it. An open
stream is an :class:`FsStreamHandle`: data calls read and rewrite that attribute, everything
else (times, attributes, EAs, security) is the file's. Creating a stream creates its file if
need be, as NTFS does. Where the filesystem keeps no user attributes there are no streams
(STATUS_OBJECT_NAME_INVALID); a stream is as large as the filesystem lets one attribute be
(64 KiB at most; ext4 without ``ea_inode`` about 4 KiB), beyond that STATUS_DISK_FULL.

Short names: :func:`smbcore.fileinfo.short_name` gives each name that is not 8.3 a stable
short form; a path component that is not found is also looked up by that form (in the same
scan as the case-insensitive lookup).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import stat as statmod
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import RemoteProtocolError
from .fileinfo import (
    ALLOCATION_UNIT,
    POSIX_FS_ATTRIBUTES,
    STATUS_EA_TOO_LARGE,
    STATUS_EAS_NOT_SUPPORTED,
    AccessMask,
    AllocationInformation,
    BasicInformation,
    DispositionFlags,
    DispositionInformation,
    DispositionInformationEx,
    EndOfFileInformation,
    FileAttributes,
    FileStat,
    FsAttributes,
    FullEa,
    FullEaInformation,
    ModeInformation,
    OpenInfo,
    PositionInformation,
    RenameInformation,
    SetFileInfo,
    VolumeInfo,
    ea_size,
    filetime_to_unix_ns,
    short_name,
    stat_to_filestat,
)
from .fileops import CreateAction, CreateDisposition, CreateOptions
from .ntstatus import NTStatus
from .security import (
    SecurityDescriptor,
    SecurityInformation,
    mode_from_dacl,
    posix_descriptor,
    unix_group_sid,
    unix_id,
    unix_user_sid,
)

log = logging.getLogger(__name__)

# NTSTATUS values this module answers that ntstatus.NTStatus lacks ([MS-ERREF] 2.3.1).
STATUS_DISK_FULL = 0xC000007F
STATUS_MEDIA_WRITE_PROTECTED = 0xC00000A2
STATUS_NOT_SAME_DEVICE = 0xC00000D4
STATUS_CANNOT_DELETE = 0xC0000121
STATUS_FILE_DELETED = 0xC0000123
STATUS_IO_DEVICE_ERROR = 0xC0000185


class FsError(Exception):
    """A filesystem operation failed; ``status`` is the NTSTATUS to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({NTStatus.name_of(self.status)})"


#: The one translation of errno values to NTSTATUS (anything else is STATUS_UNSUCCESSFUL).
ERRNO_STATUS: dict[int, int] = {
    errno.ENOENT: NTStatus.OBJECT_NAME_NOT_FOUND,
    errno.EEXIST: NTStatus.OBJECT_NAME_COLLISION,
    errno.EACCES: NTStatus.ACCESS_DENIED,
    errno.EPERM: NTStatus.ACCESS_DENIED,
    errno.ELOOP: NTStatus.ACCESS_DENIED,  # O_NOFOLLOW met a symbolic link
    errno.ENOTDIR: NTStatus.NOT_A_DIRECTORY,
    errno.EISDIR: NTStatus.FILE_IS_A_DIRECTORY,
    errno.ENOTEMPTY: NTStatus.DIRECTORY_NOT_EMPTY,
    errno.ENOSPC: STATUS_DISK_FULL,
    errno.EDQUOT: STATUS_DISK_FULL,
    errno.EFBIG: STATUS_DISK_FULL,
    errno.EROFS: STATUS_MEDIA_WRITE_PROTECTED,
    errno.ENAMETOOLONG: NTStatus.OBJECT_NAME_INVALID,
    errno.EILSEQ: NTStatus.OBJECT_NAME_INVALID,
    errno.EXDEV: STATUS_NOT_SAME_DEVICE,
    errno.EINVAL: NTStatus.INVALID_PARAMETER,
    errno.EBADF: NTStatus.INVALID_HANDLE,
    errno.EBUSY: NTStatus.SHARING_VIOLATION,
    errno.ETXTBSY: NTStatus.SHARING_VIOLATION,
    errno.EMFILE: NTStatus.INSUFFICIENT_RESOURCES,
    errno.ENFILE: NTStatus.INSUFFICIENT_RESOURCES,
    errno.ENOMEM: NTStatus.INSUFFICIENT_RESOURCES,
    errno.EIO: STATUS_IO_DEVICE_ERROR,
    errno.EOPNOTSUPP: NTStatus.NOT_SUPPORTED,
}


def status_of(err: OSError) -> int:
    return ERRNO_STATUS.get(err.errno or 0, NTStatus.UNSUCCESSFUL)


def _os_error(err: OSError, what: str) -> FsError:
    return FsError(status_of(err), f"{what}: {err.strerror or err}")


# -- paths ---------------------------------------------------------------------------------------

#: Characters NTFS refuses in a name ([MS-FSCC] 2.1.5.2), besides the separator.
_INVALID_CHARS = frozenset('"*/:<>?|') | frozenset(chr(c) for c in range(0x20))
_WILDCARDS = frozenset('*?<>"')
MAX_PATH_CHARS = 32767
MAX_COMPONENT_BYTES = 255
DEFAULT_STREAM = "::$DATA"
MAX_SYMLINK_HOPS = 40


def _component_error(name: str) -> str | None:
    """Why ``name`` cannot be one component of an SMB path here, or None."""
    if any(c in _INVALID_CHARS or c == "\\" for c in name):
        return f"invalid character in {name!r}"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{name!r} is not valid Unicode"
    if len(encoded) > MAX_COMPONENT_BYTES:
        return f"name of {len(encoded)} bytes"
    return None


def split_stream(smb_path: str) -> tuple[str, str | None]:
    """``smb_path`` without the stream suffix of its last component, and the stream's name
    (None: the file itself, as without a suffix or with ``::$DATA``). Stream types other than
    ``$DATA``, and names with a separator (``\\ / :``) or NUL, are STATUS_OBJECT_NAME_INVALID
    (control characters, ``*`` and ``?`` are allowed, as on NTFS)."""
    head, sep, last = smb_path.rpartition("\\")
    base, colon, rest = last.partition(":")
    if not colon:
        return smb_path, None
    name, typed, kind = rest.partition(":")
    if (typed and kind.upper() != "$DATA") or (not name and not typed) or ":" in kind:
        raise FsError(NTStatus.OBJECT_NAME_INVALID, f"stream {last!r}")
    if name and (any(c in "\\/\0" for c in name) or len(name.encode("utf-8", "replace")) > 255):
        raise FsError(NTStatus.OBJECT_NAME_INVALID, f"stream name {name!r}")
    return head + sep + base, name or None


def split_smb_path(smb_path: str) -> tuple[str, ...]:
    """The components of a share-relative SMB path, checked and lexically normalised."""
    if not smb_path:
        return ()
    if smb_path[0] == "\\":
        raise FsError(NTStatus.INVALID_PARAMETER, f"path {smb_path!r} starts with a separator")
    if len(smb_path) > MAX_PATH_CHARS:
        raise FsError(NTStatus.OBJECT_NAME_INVALID, f"path of {len(smb_path)} characters")
    if smb_path[-len(DEFAULT_STREAM) :].upper() == DEFAULT_STREAM.upper():
        smb_path = smb_path[: -len(DEFAULT_STREAM)]
    parts = smb_path.split("\\")
    if parts and parts[-1] == "":
        parts.pop()
    out: list[str] = []
    for part in parts:
        if part == "":
            raise FsError(NTStatus.OBJECT_NAME_INVALID, f"empty component in {smb_path!r}")
        if part == ".":
            continue
        if part == "..":
            if not out:
                raise FsError(NTStatus.OBJECT_PATH_SYNTAX_BAD, f"{smb_path!r} climbs above the share")
            out.pop()
            continue
        problem = _component_error(part)
        if problem is not None:
            raise FsError(NTStatus.OBJECT_NAME_INVALID, problem)
        out.append(part)
    return tuple(out)


# -- search patterns (FsRtlIsNameInExpression, [MS-FSA] 2.1.4.4) ----------------------------------


def _fold(s: str) -> str:
    """Upper-case character by character, keeping the length (as the NTFS upcase table)."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in s)


def _match(p: str, n: str) -> bool:
    """Does name ``n`` match expression ``p`` (both folded)? ``*`` any run, ``?`` one character,
    and the DOS wildcards: ``<`` any run not taking the name's last dot, ``>`` one character
    or nothing at a dot or the end, ``"`` a dot or nothing at the end. Dynamic programming
    over (pattern position, name position), from the ends: no recursion, O(len p * len n)."""
    size = len(n)
    last_dot = n.rfind(".")
    nxt = [False] * (size + 1)
    nxt[size] = True
    for c in reversed(p):
        cur = [False] * (size + 1)
        for j in range(size, -1, -1):
            more = j < size
            if c == "*":
                cur[j] = nxt[j] or (more and cur[j + 1])
            elif c == "<":
                cur[j] = nxt[j] or (more and j != last_dot and cur[j + 1])
            elif c == "?":
                cur[j] = more and nxt[j + 1]
            elif c == ">":
                cur[j] = nxt[j + 1] if more and n[j] != "." else nxt[j]
            elif c == '"':
                cur[j] = nxt[j + 1] if more and n[j] == "." else (not more and nxt[j])
            else:
                cur[j] = more and n[j] == c and nxt[j + 1]
        nxt = cur
    return nxt[0]


MAX_PATTERN_CHARS = 1024


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A predicate for a QUERY_DIRECTORY search pattern, case-insensitive as on Windows.
    ``""``, ``*`` and ``*.*`` match every name (``*.*`` also those without a dot, as DOS)."""
    if pattern in ("", "*", "*.*"):
        return lambda name: True
    if len(pattern) > MAX_PATTERN_CHARS or any(
        (c in _INVALID_CHARS and c not in _WILDCARDS) or c == "\\" for c in pattern
    ):
        raise FsError(NTStatus.OBJECT_NAME_INVALID, f"search pattern {pattern!r}")
    folded = _fold(pattern)
    while "**" in folded:
        folded = folded.replace("**", "*")
    if not any(c in _WILDCARDS for c in folded):
        return lambda name: _fold(name) == folded
    return lambda name: _match(folded, _fold(name))


# -- access masks ([MS-SMB2] 2.2.13.1) -------------------------------------------------------------

FILE_ALL_ACCESS = 0x001F01FF
FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_GENERIC_EXECUTE = 0x001200A0
#: Bits a client may never ask for (MS-SMB2 3.3.5.9: STATUS_ACCESS_DENIED).
INVALID_ACCESS_BITS = 0x0CE0FE00
WRITE_ACCESS = (
    AccessMask.FILE_WRITE_DATA
    | AccessMask.FILE_APPEND_DATA
    | AccessMask.FILE_WRITE_EA
    | AccessMask.FILE_WRITE_ATTRIBUTES
    | AccessMask.FILE_DELETE_CHILD
    | AccessMask.DELETE
    | AccessMask.WRITE_DAC
    | AccessMask.WRITE_OWNER
)
READ_ONLY_ACCESS = FILE_ALL_ACCESS & ~WRITE_ACCESS
_DATA_WRITE = AccessMask.FILE_WRITE_DATA | AccessMask.FILE_APPEND_DATA
_DATA_READ = AccessMask.FILE_READ_DATA | AccessMask.FILE_EXECUTE
#: preadv2's "only if it needs no I/O" flag (Linux 4.14+ for buffered reads); 0 elsewhere.
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
#: NTFS's limit on file sizes (16 TiB less 64 KiB), as Windows applies it to WRITE: a write
#: that starts there or later is STATUS_INVALID_PARAMETER, one that would make the file reach
#: it STATUS_DISK_FULL (smbtorture smb2.rw.invalid).
MAX_FILE_SIZE = 0xFFFFFFF0000
#: CreateOptions bits no client may set, and those this server does not implement
#: (FILE_CREATE_TREE_CONNECTION, FILE_OPEN_BY_FILE_ID, FILE_RESERVE_OPFILTER).
RESERVED_CREATE_OPTIONS = 0xFF000000
UNSUPPORTED_CREATE_OPTIONS = 0x00000080 | 0x00002000 | 0x00100000
#: FileAttributes a CREATE may not ask for (VOLUME, DEVICE, INTEGRITY_STREAM, undefined bits).
INVALID_FILE_ATTRIBUTES = 0xFFFF8048
#: The CreateOptions bits that are also FileModeInformation bits (same values).
_MODE_OPTIONS = 0x0000103E


def grant_access(desired: int, read_only: bool) -> int:
    """The access an open gets for DesiredAccess: generic rights mapped to file rights,
    MAXIMUM_ALLOWED to everything the share allows. No per-file ACLs: POSIX permissions are
    enforced by the open itself."""
    if desired & INVALID_ACCESS_BITS:
        raise FsError(NTStatus.ACCESS_DENIED, f"DesiredAccess {desired:#x} has reserved bits")
    if desired & AccessMask.ACCESS_SYSTEM_SECURITY:
        raise FsError(NTStatus.PRIVILEGE_NOT_HELD, "ACCESS_SYSTEM_SECURITY")
    access = desired & FILE_ALL_ACCESS
    if desired & AccessMask.GENERIC_READ:
        access |= FILE_GENERIC_READ
    if desired & AccessMask.GENERIC_WRITE:
        access |= FILE_GENERIC_WRITE
    if desired & AccessMask.GENERIC_EXECUTE:
        access |= FILE_GENERIC_EXECUTE
    if desired & AccessMask.GENERIC_ALL:
        access |= FILE_ALL_ACCESS
    if read_only and access & WRITE_ACCESS:
        raise FsError(NTStatus.ACCESS_DENIED, "write access to a read-only share")
    if desired & AccessMask.MAXIMUM_ALLOWED:
        access |= READ_ONLY_ACCESS if read_only else FILE_ALL_ACCESS
    return access


# -- renameat2(RENAME_NOREPLACE) ------------------------------------------------------------------

_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2: Any = _load_renameat2()


def _rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """Rename failing with EEXIST if ``dst`` exists, atomically where the kernel and the
    filesystem offer RENAME_NOREPLACE; otherwise check then rename (a window remains)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err))
    try:
        os.stat(dst, dir_fd=dst_dir, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
    else:
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))


# -- the share -------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO never hangs an open


@dataclasses.dataclass
class _Where:
    """Where a path leads: the entry ``name`` in the directory ``parent_fd`` (owned), or the
    share root (``parent_fd`` None, ``name`` ""); ``st`` its lstat, None if it does not exist."""

    parent_fd: int | None
    name: str
    rel: tuple[str, ...]
    st: os.stat_result | None

    def close(self) -> None:
        if self.parent_fd is not None:
            os.close(self.parent_fd)
            self.parent_fd = None


def _by_other_name(dir_fd: int, name: str, *, case_sensitive: bool) -> str | None:
    """The entry of a directory that ``name`` (not an entry itself) means: the one whose name is
    ``name`` but for case (unless ``case_sensitive``), else the one whose
    :func:`~smbcore.fileinfo.short_name` it is (compared case-insensitively); None if neither."""
    want = _fold(name)
    by_short = "~" in name
    if case_sensitive and not by_short:
        return None
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    short: str | None = None
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.name == name or _component_error(entry.name) is not None:
                    continue
                if not case_sensitive and _fold(entry.name) == want:
                    return entry.name
                if by_short and short is None and _fold(short_name(entry.name)) == want:
                    short = entry.name
    except OSError:
        return None
    finally:
        os.close(fd)
    return short


def _round_up(size: int) -> int:
    return -(-size // ALLOCATION_UNIT) * ALLOCATION_UNIT


def _is_link(st: os.stat_result | None) -> bool:
    return st is not None and statmod.S_ISLNK(st.st_mode)


# -- extended attributes ------------------------------------------------------------------------

XATTR_USER = "user."
XATTR_CREATION_TIME = "user.ferry.creation_time"
XATTR_SECURITY = "user.ferry.security"
XATTR_ATTRIBUTES = "user.ferry.attributes"
XATTR_STREAM_PREFIX = "user.ferry.stream."
#: Linux's XATTR_SIZE_MAX: no attribute value, so no stream, can be larger.
MAX_STREAM_SIZE = 65536
#: ``user.`` attributes that are not EAs (lower-case: client EA names are upper-cased).
_PRIVATE_XATTRS = ("user.ferry.", "user.DOSATTRIB", "user.DosStream.", "user.SAMBA_")
_SD_SNAPSHOT = struct.Struct("<III")  # uid, gid, mode the stored descriptor was applied as
_FILETIME = struct.Struct("<q")


#: What the volume offers where it keeps extended attributes: EAs, and descriptors that are
#: kept and enforced (through the permission bits).
_XATTR_FS_ATTRIBUTES = (
    FsAttributes.SUPPORTS_EXTENDED_ATTRIBUTES | FsAttributes.PERSISTENT_ACLS | FsAttributes.NAMED_STREAMS
)


def _is_ea(xattr: str) -> bool:
    return xattr.startswith(XATTR_USER) and not xattr.startswith(_PRIVATE_XATTRS)


def _getxattr(target: int | str, name: str) -> bytes | None:
    try:
        if isinstance(target, int):
            return os.getxattr(target, name)
        return os.getxattr(target, name, follow_symlinks=False)
    except OSError:
        return None


def _list_eas(target: int | str, *, strict: bool = False) -> list[FullEa]:
    """The EAs of a file (by descriptor, or by a path whose last link is not followed) in
    name order; an error listing them is no EAs unless ``strict``."""
    try:
        if isinstance(target, int):
            names = os.listxattr(target)
        else:
            names = os.listxattr(target, follow_symlinks=False)
    except OSError:
        if strict:
            raise
        return []
    eas = []
    for name in sorted(n for n in names if _is_ea(n)):
        value = _getxattr(target, name)
        if value:  # gone meanwhile, or empty (an EA always has a value)
            eas.append(FullEa(name[len(XATTR_USER) :].upper(), value))
    return eas


#: The attributes a client sets that are kept ([MS-FSA] 2.1.5.14.2); READONLY of a file is
#: its mode (no ``w`` bit), of a directory only kept.
KEPT_ATTRIBUTES = (
    FileAttributes.READONLY
    | FileAttributes.HIDDEN
    | FileAttributes.SYSTEM
    | FileAttributes.ARCHIVE
    | FileAttributes.TEMPORARY
    | FileAttributes.OFFLINE
    | FileAttributes.NOT_CONTENT_INDEXED
)
_ATTRIBUTES = struct.Struct("<Iq")  # the attributes, and st_mtime_ns when they were set


def _stored_attributes(target: int | str, st: os.stat_result) -> FileAttributes | None:
    """The attributes a client set, brought up to date: READONLY of a file from its mode,
    ARCHIVE again once the file was written since (as Windows sets it on a write)."""
    raw = _getxattr(target, XATTR_ATTRIBUTES)
    if raw is None or len(raw) != _ATTRIBUTES.size:
        return None
    kept, mtime = _ATTRIBUTES.unpack(raw)
    attrs = FileAttributes(kept & KEPT_ATTRIBUTES)
    if statmod.S_ISDIR(st.st_mode):
        attrs |= FileAttributes.DIRECTORY
    else:
        attrs &= ~FileAttributes.READONLY
        if not st.st_mode & 0o222:
            attrs |= FileAttributes.READONLY
        if mtime != st.st_mtime_ns:
            attrs |= FileAttributes.ARCHIVE
    return attrs or FileAttributes.NORMAL


def _stored_creation_time(target: int | str) -> int | None:
    raw = _getxattr(target, XATTR_CREATION_TIME)
    if raw is None or len(raw) != _FILETIME.size:
        return None
    (value,) = _FILETIME.unpack(raw)
    return value if value > 0 else None


class FsShare:
    """A directory tree served as a share (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        *,
        read_only: bool = False,
        label: str | None = None,
        case_sensitive: bool = False,
    ) -> None:
        self.root = Path(root)
        self.read_only = read_only
        self.case_sensitive = case_sensitive
        self.label = self.root.name if label is None else label
        try:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(exc, f"share root {self.root}") from None
        self.xattrs = self._probe_xattrs()
        # Change times clients set: (st_dev, st_ino) -> (FILETIME, st_ctime_ns when set).
        self._change_times: dict[tuple[int, int], tuple[int, int]] = {}
        # Allocation sizes clients set: (st_dev, st_ino) -> (size, st_size and st_mtime_ns when set).
        self._allocations: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._change_guard = threading.Lock()
        # Absolute link targets count as inside when they start with the root's path.
        self._root_prefixes = {
            tuple(p for p in os.path.realpath(self.root).split("/") if p),
            tuple(p for p in os.path.abspath(self.root).split("/") if p),
        }

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> FsShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _probe_xattrs(self) -> bool:
        try:
            os.listxattr(self._root_fd)
        except OSError:
            return False
        return True

    def _with_meta(self, info: FileStat, st: os.stat_result, target: int | str | None) -> FileStat:
        """``info`` with what clients set and POSIX does not keep (see the module docstring):
        the creation and change times, the attributes, and the size of the EAs."""
        with self._change_guard:
            kept = self._change_times.get((st.st_dev, st.st_ino))
            allocation = self._allocations.get((st.st_dev, st.st_ino))
        change = kept[0] if kept is not None and kept[1] == st.st_ctime_ns else None
        if change is not None:
            info = dataclasses.replace(info, change_time=change)
        if allocation is not None and allocation[1:] == (st.st_size, st.st_mtime_ns):
            info = dataclasses.replace(info, allocation_size=max(allocation[0], _round_up(st.st_size)))
        if target is None or not self.xattrs:
            return info
        creation = _stored_creation_time(target)
        attributes = _stored_attributes(target, st)
        eas = _list_eas(target)
        return dataclasses.replace(
            info,
            creation_time=info.creation_time if creation is None else creation,
            attributes=info.attributes if attributes is None else attributes,
            ea_size=ea_size(eas),
        )

    def _keep_allocation(self, st: os.stat_result, size: int) -> None:
        with self._change_guard:
            self._allocations[(st.st_dev, st.st_ino)] = (_round_up(size), st.st_size, st.st_mtime_ns)

    def _keep_change_time(self, st: os.stat_result, change: int | None) -> None:
        with self._change_guard:
            key = (st.st_dev, st.st_ino)
            if change is not None:
                self._change_times[key] = (change, st.st_ctime_ns)
            elif key in self._change_times and self._change_times[key][1] != st.st_ctime_ns:
                del self._change_times[key]

    # -- lookups -------------------------------------------------------------------------------

    def _link_parts(self, target: str) -> tuple[list[str], bool]:
        """A link target as components to walk, and whether it restarts at the root."""
        parts = [p for p in target.split("/") if p and p != "."]
        if not target.startswith("/"):
            return parts, False
        for prefix in self._root_prefixes:
            if tuple(parts[: len(prefix)]) == prefix:
                return parts[len(prefix) :], True
        raise FsError(NTStatus.ACCESS_DENIED, "a symbolic link leads out of the share")

    def _resolve(self, comps: Sequence[str], *, follow: bool) -> _Where:
        """Walk ``comps`` from the root (see the module docstring); ``follow``: also follow a
        link in the last component. Missing parents are STATUS_OBJECT_PATH_NOT_FOUND."""
        pending = list(reversed(comps))
        names: list[str] = []
        fds: list[int] = []  # fds[k] is the directory names[k]
        hops = 0

        def here() -> int:
            return fds[-1] if fds else self._root_fd

        def found(name: str, st: os.stat_result | None) -> _Where:
            rel = (*names, name)
            parent = fds.pop() if fds else os.dup(self._root_fd)
            return _Where(parent, name, rel, st)

        try:
            while pending:
                name = pending.pop()
                if name == "..":
                    if not names:
                        raise FsError(NTStatus.ACCESS_DENIED, "a symbolic link leads out of the share")
                    names.pop()
                    os.close(fds.pop())
                    continue
                last = not pending
                try:
                    st = os.stat(name, dir_fd=here(), follow_symlinks=False)
                except FileNotFoundError:
                    other = _by_other_name(here(), name, case_sensitive=self.case_sensitive)
                    if other is not None:
                        pending.append(other)
                        continue
                    if last:
                        return found(name, None)
                    raise FsError(NTStatus.OBJECT_PATH_NOT_FOUND, f"no directory {name!r}") from None
                except OSError as exc:
                    raise _os_error(exc, f"lookup of {name!r}") from None
                if statmod.S_ISLNK(st.st_mode) and (follow or not last):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise FsError(NTStatus.ACCESS_DENIED, "too many symbolic links")
                    try:
                        target = os.readlink(name, dir_fd=here())
                    except OSError as exc:
                        raise _os_error(exc, f"readlink of {name!r}") from None
                    parts, absolute = self._link_parts(target)
                    if absolute:
                        while fds:
                            os.close(fds.pop())
                        names.clear()
                    pending.extend(reversed(parts))
                    continue
                if last:
                    return found(name, st)
                if not statmod.S_ISDIR(st.st_mode):
                    raise FsError(NTStatus.OBJECT_PATH_NOT_FOUND, f"{name!r} is not a directory")
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=here())
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped since the lstat
                        raise FsError(NTStatus.ACCESS_DENIED, f"{name!r} changed during lookup") from None
                    raise _os_error(exc, f"open of directory {name!r}") from None
                fds.append(fd)
                names.append(name)
            # The walk ended on a directory it holds (a link to a directory, or "..").
            if not names:
                return _Where(None, "", (), os.fstat(self._root_fd))
            st = os.fstat(fds[-1])
            os.close(fds.pop())
            name = names.pop()
            return found(name, st)
        finally:
            for fd in fds:
                os.close(fd)

    def _target_stat(self, rel: Sequence[str]) -> os.stat_result | None:
        """lstat of where ``rel`` leads after links, None if nowhere or outside."""
        try:
            where = self._resolve(rel, follow=True)
        except FsError:
            return None
        where.close()
        return where.st

    def resolve(self, smb_path: str, *, must_exist: bool = True) -> Path:
        """Where ``smb_path`` physically is, links followed, with every refusal :meth:`open`
        would give (a missing parent is STATUS_OBJECT_PATH_NOT_FOUND, a missing entry
        STATUS_OBJECT_NAME_NOT_FOUND unless ``must_exist`` is false). For logs and tools: a path
        string reopens the races the descriptor walk closes, so this module never opens one."""
        where = self._resolve(split_smb_path(smb_path), follow=True)
        where.close()
        if where.st is None and must_exist:
            raise FsError(NTStatus.OBJECT_NAME_NOT_FOUND, f"no {smb_path!r}")
        return self.root.joinpath(*where.rel)

    def stat(self, smb_path: str) -> FileStat:
        """The :class:`FileStat` of a path, following links (no open needed)."""
        comps = split_smb_path(smb_path)
        where = self._resolve(comps, follow=True)
        where.close()
        if where.st is None:
            raise FsError(NTStatus.OBJECT_NAME_NOT_FOUND, f"no {smb_path!r}")
        return stat_to_filestat(where.st, comps[-1] if comps else "")

    def volume_info(self) -> VolumeInfo:
        """The share's volume for the file system information classes (from ``fstatvfs``).
        The serial number is derived from the root's device and inode (stable across restarts)."""
        try:
            v = os.fstatvfs(self._root_fd)
            st = os.fstat(self._root_fd)
        except OSError as exc:
            raise _os_error(exc, "statvfs") from None
        return VolumeInfo(
            block_size=v.f_frsize or v.f_bsize,
            total_blocks=v.f_blocks,
            free_blocks=v.f_bfree,
            available_blocks=v.f_bavail,
            label=self.label,
            serial_number=(st.st_dev ^ st.st_ino) & 0xFFFFFFFF,
            read_only=self.read_only or bool(v.f_flag & os.ST_RDONLY),
            fs_attributes=(POSIX_FS_ATTRIBUTES | (_XATTR_FS_ATTRIBUTES if self.xattrs else 0))
            & ~(0 if self.case_sensitive else FsAttributes.CASE_SENSITIVE_SEARCH),
        )

    # -- CREATE ([MS-SMB2] 3.3.5.9, [MS-FSA] 2.1.5.1) --------------------------------------------

    def open(
        self,
        smb_path: str,
        disposition: int,
        create_options: int,
        desired_access: int,
        before_open: Callable[[tuple[int, int]], None] | None = None,
        *,
        file_attributes: int = 0,
    ) -> FsHandle:
        """Open or create ``smb_path`` as SMB2 CREATE does; the handle's ``create_action`` says
        which of SUPERSEDED, OPENED, CREATED, OVERWRITTEN happened.

        ``before_open`` is called with the (st_dev, st_ino) of an existing target as soon as it
        is found (before CREATE's STATUS_OBJECT_NAME_COLLISION, before an overwrite truncates
        it): the caller's delete-pending, share-mode and oplock checks, which refuse by raising.

        ``file_attributes`` are those the file would be created with: READONLY with
        FILE_DELETE_ON_CLOSE is STATUS_CANNOT_DELETE ([MS-FSA] 2.1.5.1.1), before anything is
        created.

        SUPERSEDE of an existing file truncates it (there are no attributes or streams to
        replace). FILE_DIRECTORY_FILE allows only CREATE, OPEN and OPEN_IF; an existing
        directory is never overwritten (STATUS_INVALID_PARAMETER, as Samba).

        Refused as Windows refuses them (smbtorture smb2.create.gentest): reserved
        CreateOptions bits or attributes (STATUS_INVALID_PARAMETER), the options this server
        does not implement (tree connections, opens by file id, opfilter reservations:
        STATUS_NOT_SUPPORTED), a DesiredAccess of 0 (STATUS_ACCESS_DENIED), and an encrypted
        file (STATUS_ACCESS_DENIED: no encryption). SYNCHRONIZE alone is granted, as Windows 7
        does (smbtorture's smb2.getinfo.getinfo_access needs it; smb2.create.gentest expects the
        refusal of later Windows)."""
        try:
            disp = CreateDisposition(disposition)
        except ValueError:
            raise FsError(NTStatus.INVALID_PARAMETER, f"CreateDisposition {disposition}") from None
        if create_options & RESERVED_CREATE_OPTIONS:
            raise FsError(NTStatus.INVALID_PARAMETER, f"CreateOptions {create_options:#x}")
        if file_attributes & INVALID_FILE_ATTRIBUTES:
            raise FsError(NTStatus.INVALID_PARAMETER, f"FileAttributes {file_attributes:#x}")
        if create_options & UNSUPPORTED_CREATE_OPTIONS:
            raise FsError(NTStatus.NOT_SUPPORTED, f"CreateOptions {create_options:#x}")
        if not desired_access:
            raise FsError(NTStatus.ACCESS_DENIED, "a DesiredAccess of 0 asks for nothing")
        if file_attributes & FileAttributes.ENCRYPTED and disp != CreateDisposition.OPEN:
            raise FsError(NTStatus.ACCESS_DENIED, "encrypted files")
        want_dir = bool(create_options & CreateOptions.DIRECTORY_FILE)
        want_file = bool(create_options & CreateOptions.NON_DIRECTORY_FILE)
        if want_dir and want_file:
            raise FsError(NTStatus.INVALID_PARAMETER, "both DIRECTORY_FILE and NON_DIRECTORY_FILE")
        if want_dir and disp not in (
            CreateDisposition.CREATE,
            CreateDisposition.OPEN,
            CreateDisposition.OPEN_IF,
        ):
            raise FsError(NTStatus.INVALID_PARAMETER, f"DIRECTORY_FILE with {disp.name}")
        access = grant_access(desired_access, self.read_only)
        delete_on_close = bool(create_options & CreateOptions.DELETE_ON_CLOSE)
        if delete_on_close and not access & AccessMask.DELETE:
            raise FsError(NTStatus.ACCESS_DENIED, "DELETE_ON_CLOSE without DELETE access")
        if self.read_only and disp not in (CreateDisposition.OPEN, CreateDisposition.OPEN_IF):
            raise FsError(NTStatus.ACCESS_DENIED, f"{disp.name} on a read-only share")
        path, stream = split_stream(smb_path)
        comps = split_smb_path(path)
        if stream is not None:
            if want_dir:
                raise FsError(NTStatus.NOT_A_DIRECTORY, f"stream {stream!r} opened as a directory")
            return self._open_stream(
                comps, stream, disp, access, delete_on_close, create_options, before_open, file_attributes
            )
        maximum = bool(desired_access & AccessMask.MAXIMUM_ALLOWED)
        for attempt in range(2):
            try:
                return self._open(
                    comps, disp, want_dir, want_file, access, maximum, delete_on_close, create_options,
                    before_open, file_attributes,
                )  # fmt: skip
            except FileExistsError:  # created by someone else between our lookup and create
                if disp == CreateDisposition.CREATE or attempt:
                    raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"{smb_path!r} exists") from None
        raise AssertionError("unreachable")

    def _open(
        self,
        comps: tuple[str, ...],
        disp: CreateDisposition,
        want_dir: bool,
        want_file: bool,
        access: int,
        maximum: bool,
        delete_on_close: bool,
        options: int,
        before_open: Callable[[tuple[int, int]], None] | None,
        file_attributes: int,
    ) -> FsHandle:
        named = self._resolve(comps, follow=False)
        phys = named
        fd = -1
        try:
            if _is_link(named.st):
                phys = self._resolve(comps, follow=True)
                if phys.st is None:
                    if disp in (CreateDisposition.OPEN, CreateDisposition.OVERWRITE):
                        raise FsError(NTStatus.OBJECT_NAME_NOT_FOUND, "dangling symbolic link")
                    raise FsError(NTStatus.ACCESS_DENIED, "creating through a symbolic link")
            if phys.st is None:
                if disp in (CreateDisposition.OPEN, CreateDisposition.OVERWRITE):
                    raise FsError(NTStatus.OBJECT_NAME_NOT_FOUND, f"no {comps[-1]!r}")
                if self.read_only:
                    raise FsError(NTStatus.ACCESS_DENIED, "creating on a read-only share")
                if delete_on_close and file_attributes & FileAttributes.READONLY:
                    raise FsError(STATUS_CANNOT_DELETE, "a read-only file created to be deleted on close")
                fd, is_dir = self._create(phys, want_dir, access), want_dir
                action = CreateAction.CREATED
            else:
                if before_open is not None:  # the identity the handle will have (see below)
                    ident = named.st if _is_link(named.st) else phys.st
                    assert ident is not None
                    before_open((ident.st_dev, ident.st_ino))
                if disp == CreateDisposition.CREATE:
                    raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"{'/'.join(comps)!r} exists")
                fd, is_dir, access = self._open_existing(phys, disp, want_dir, want_file, access, maximum)
                action = {
                    CreateDisposition.SUPERSEDE: CreateAction.SUPERSEDED,
                    CreateDisposition.OVERWRITE: CreateAction.OVERWRITTEN,
                    CreateDisposition.OVERWRITE_IF: CreateAction.OVERWRITTEN,
                }.get(disp, CreateAction.OPENED)
            named_st = named.st if _is_link(named.st) else os.fstat(fd)
            assert named_st is not None
            handle = FsHandle(
                share=self,
                fd=fd,
                parent_fd=named.parent_fd,
                name=named.name,
                rel=phys.rel,
                smb_path="\\".join(comps),
                is_directory=is_dir,
                granted_access=access,
                create_action=action,
                identity=(named_st.st_dev, named_st.st_ino),
                via_link=phys is not named,
                mode=options & _MODE_OPTIONS,
            )
            named.parent_fd = None  # the handle owns it now
            fd = -1
            if delete_on_close:
                try:
                    handle.set_delete_on_close(True, check_empty=False)
                except BaseException:
                    handle.close()
                    raise
            return handle
        finally:
            if fd >= 0:
                os.close(fd)
            named.close()
            if phys is not named:
                phys.close()

    def _open_stream(
        self,
        comps: tuple[str, ...],
        stream: str,
        disp: CreateDisposition,
        access: int,
        delete_on_close: bool,
        options: int,
        before_open: Callable[[tuple[int, int]], None] | None,
        file_attributes: int,
    ) -> FsStreamHandle:
        """CREATE of a named stream (see the module docstring): its file is opened (created,
        unless the disposition only opens), then the disposition applies to the stream."""
        if not self.xattrs:
            raise FsError(NTStatus.OBJECT_NAME_INVALID, "no named streams on this filesystem")
        opens_only = disp in (CreateDisposition.OPEN, CreateDisposition.OVERWRITE)
        file_disp = CreateDisposition.OPEN if opens_only else CreateDisposition.OPEN_IF
        for attempt in range(2):
            try:
                base = self._open(
                    comps, file_disp, False, False, AccessMask.FILE_READ_ATTRIBUTES, False, False, 0, None,
                    file_attributes,
                )  # fmt: skip
                break
            except FileExistsError:
                if attempt:
                    raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"{comps[-1]!r} appeared") from None
        try:
            stored = _stream_xattr(base.fileno(), stream)
            identity = stream_identity(
                base.identity, stored[len(XATTR_STREAM_PREFIX) :] if stored else stream
            )
            if stored is not None and before_open is not None:
                before_open(identity)
            if stored is None:
                if opens_only:
                    raise FsError(NTStatus.OBJECT_NAME_NOT_FOUND, f"no stream {stream!r}")
                if self.read_only:
                    raise FsError(NTStatus.ACCESS_DENIED, "creating a stream on a read-only share")
                stored, action = XATTR_STREAM_PREFIX + stream, CreateAction.CREATED
                _set_stream(base.fileno(), stored, b"", os.XATTR_CREATE)
            elif disp == CreateDisposition.CREATE:
                raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"stream {stream!r} exists")
            elif disp in (
                CreateDisposition.SUPERSEDE,
                CreateDisposition.OVERWRITE,
                CreateDisposition.OVERWRITE_IF,
            ):
                _set_stream(base.fileno(), stored, b"")
                action = (
                    CreateAction.SUPERSEDED
                    if disp == CreateDisposition.SUPERSEDE
                    else CreateAction.OVERWRITTEN
                )
            else:
                action = CreateAction.OPENED
        except BaseException:
            base.close()
            raise
        handle = FsStreamHandle(base, stored, access, action, identity, options & _MODE_OPTIONS)
        if delete_on_close:
            handle.set_delete_on_close(True)
        return handle

    def _create(self, where: _Where, want_dir: bool, access: int) -> int:
        assert where.parent_fd is not None
        try:
            if want_dir:
                os.mkdir(where.name, 0o777, dir_fd=where.parent_fd)
                return os.open(where.name, _DIR_FLAGS, dir_fd=where.parent_fd)
            flags = _FILE_FLAGS | os.O_CREAT | os.O_EXCL | _access_mode(access, truncate=False)
            return os.open(where.name, flags, 0o666, dir_fd=where.parent_fd)
        except FileExistsError:
            raise
        except OSError as exc:
            raise _os_error(exc, f"create of {where.name!r}") from None

    def _open_existing(
        self,
        where: _Where,
        disp: CreateDisposition,
        want_dir: bool,
        want_file: bool,
        access: int,
        maximum: bool,
    ) -> tuple[int, bool, int]:
        assert where.st is not None
        is_dir = statmod.S_ISDIR(where.st.st_mode)
        if not is_dir and not statmod.S_ISREG(where.st.st_mode):
            raise FsError(NTStatus.ACCESS_DENIED, f"{where.name!r} is not a regular file or directory")
        if is_dir and want_file:
            raise FsError(NTStatus.FILE_IS_A_DIRECTORY, f"{where.name!r} is a directory")
        if not is_dir and want_dir:
            raise FsError(NTStatus.NOT_A_DIRECTORY, f"{where.name!r} is not a directory")
        truncate = disp in (
            CreateDisposition.SUPERSEDE,
            CreateDisposition.OVERWRITE,
            CreateDisposition.OVERWRITE_IF,
        )
        if is_dir and truncate:
            raise FsError(NTStatus.INVALID_PARAMETER, f"{disp.name} of a directory")
        try:
            if where.parent_fd is None:  # the share root
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._root_fd)
            elif is_dir:
                fd = os.open(where.name, _DIR_FLAGS, dir_fd=where.parent_fd)
            else:
                fd = self._open_file(where, access, truncate, maximum)
                if maximum and _fd_access_mode(fd) == os.O_RDONLY:
                    access &= ~_DATA_WRITE  # MAXIMUM_ALLOWED: what the file allowed
        except OSError as exc:
            if exc.errno == errno.ELOOP or (is_dir and exc.errno == errno.ENOTDIR):  # swapped since the lstat
                raise FsError(NTStatus.ACCESS_DENIED, f"{where.name!r} changed during open") from None
            raise _os_error(exc, f"open of {where.name!r}") from None
        st = os.fstat(fd)
        if statmod.S_ISDIR(st.st_mode) != is_dir or not (
            statmod.S_ISDIR(st.st_mode) or statmod.S_ISREG(st.st_mode)
        ):
            os.close(fd)
            raise FsError(NTStatus.ACCESS_DENIED, f"{where.name!r} changed during open")
        return fd, is_dir, access

    def _open_file(self, where: _Where, access: int, truncate: bool, maximum: bool) -> int:
        assert where.parent_fd is not None
        flags = _FILE_FLAGS | _access_mode(access, truncate) | (os.O_TRUNC if truncate else 0)
        try:
            return os.open(where.name, flags, dir_fd=where.parent_fd)
        except PermissionError:
            if not maximum or truncate or flags & os.O_ACCMODE == os.O_RDONLY:
                raise
            # MAXIMUM_ALLOWED grants what the file allows: fall back to reading.
            return os.open(where.name, _FILE_FLAGS | os.O_RDONLY, dir_fd=where.parent_fd)


def _access_mode(access: int, truncate: bool) -> int:
    write = bool(access & _DATA_WRITE) or truncate
    read = bool(access & _DATA_READ) or not write
    if write:
        return os.O_RDWR if read or truncate else os.O_WRONLY
    return os.O_RDONLY


def _fd_access_mode(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


# -- an open ---------------------------------------------------------------------------------------


class FsHandle:
    """One open file or directory of an :class:`FsShare`.

    Operations check the open's granted access as MS-SMB2 3.3.5 asks (READ needs
    FILE_READ_DATA or FILE_EXECUTE, WRITE and FLUSH FILE_WRITE_DATA or FILE_APPEND_DATA, size
    changes FILE_WRITE_DATA, times and attributes FILE_WRITE_ATTRIBUTES, rename and delete
    DELETE, listing FILE_LIST_DIRECTORY): STATUS_ACCESS_DENIED otherwise. Calls on one handle
    must not overlap with its :meth:`close`; reads and writes at offsets may run concurrently.
    """

    def __init__(
        self,
        *,
        share: FsShare,
        fd: int,
        parent_fd: int | None,
        name: str,
        rel: tuple[str, ...],
        smb_path: str,
        is_directory: bool,
        granted_access: int,
        create_action: int,
        identity: tuple[int, int],
        via_link: bool = False,
        mode: int = 0,
    ) -> None:
        self.share = share
        self._fd = fd
        self._parent_fd = parent_fd
        self._name = name  # the entry the path names (a link, if it was one)
        self._rel = rel  # where it physically is, after links (for links met when listing)
        self._identity = identity  # (st_dev, st_ino) of the named entry, checked before unlink
        self._via_link = via_link  # opened through a symbolic link: renames move the link
        self.smb_path = smb_path
        self.is_directory = is_directory
        self.granted_access = granted_access
        self.create_action = create_action
        self.delete_on_close = False
        self.position = 0
        self.mode = mode
        # A change time this handle set: its own later changes leave it as set ([MS-FSA]
        # 2.1.5.14.2, Open.UserSetChangeTime).
        self._user_change_time: int | None = None

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def identity(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the file this handle names: equal for every open of it."""
        return self._identity

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def _check_open(self) -> None:
        if self._fd < 0:
            raise FsError(NTStatus.FILE_CLOSED, f"{self.smb_path!r} is closed")

    def _need(self, mask: int, what: str) -> None:
        self._check_open()
        if not self.granted_access & mask:
            raise FsError(NTStatus.ACCESS_DENIED, f"{what} of {self.smb_path!r} without the access")

    def _need_file(self, what: str) -> None:
        if self.is_directory:
            raise FsError(NTStatus.INVALID_DEVICE_REQUEST, f"{what} of directory {self.smb_path!r}")

    @staticmethod
    def _check_range(offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > (1 << 63) - 1:
            raise FsError(NTStatus.INVALID_PARAMETER, f"range {offset}+{length}")

    def __enter__(self) -> FsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FsHandle {self.smb_path!r}{' closed' if self.closed else ''}>"

    # -- information ---------------------------------------------------------------------------

    def stat(self) -> FileStat:
        self._check_open()
        try:
            st = os.fstat(self._fd)
        except OSError as exc:
            raise _os_error(exc, "fstat") from None
        info = self.share._with_meta(stat_to_filestat(st, self._name), st, self._fd)
        return dataclasses.replace(info, delete_pending=True) if self.delete_on_close else info

    # -- extended attributes ([MS-FSA] 2.1.5.11.12, 2.1.5.15.5) --------------------------------

    def list_eas(self) -> list[FullEa]:
        """The file's EAs in name order (no access check: FileEaInformation needs none; the
        caller checks FILE_READ_EA for FileFullEaInformation)."""
        self._check_open()
        if not self.share.xattrs:
            return []
        try:
            return _list_eas(self._fd, strict=True)
        except OSError as exc:
            raise _os_error(exc, f"EAs of {self.smb_path!r}") from None

    def set_eas(self, eas: Sequence[FullEa], *, check_access: bool = True) -> None:
        """Set EAs; an empty value removes one (removing one that is not there is no error)."""
        if check_access:
            self._need(AccessMask.FILE_WRITE_EA, "set EAs")
        self._check_open()
        if not self.share.xattrs:
            raise FsError(STATUS_EAS_NOT_SUPPORTED, "the share's filesystem keeps no extended attributes")
        for ea in eas:
            name = XATTR_USER + ea.name.upper()
            try:
                if ea.value:
                    os.setxattr(self._fd, name, ea.value)
                else:
                    try:
                        os.removexattr(self._fd, name)
                    except OSError as exc:
                        if exc.errno != errno.ENODATA:
                            raise
            except OSError as exc:
                if exc.errno in (errno.E2BIG, errno.ENOSPC, errno.ERANGE):
                    raise FsError(STATUS_EA_TOO_LARGE, f"EA {ea.name} of {len(ea.value)} bytes") from None
                if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise FsError(STATUS_EAS_NOT_SUPPORTED, f"EAs on {self.smb_path!r}") from None
                raise _os_error(exc, f"set EA {ea.name} of {self.smb_path!r}") from None

    # -- security descriptors ([MS-FSA] 2.1.5.13, 2.1.5.16) -----------------------------------

    def _current_descriptor(self, st: os.stat_result) -> SecurityDescriptor:
        """The stored descriptor while the file still has the owner, group and mode it was
        applied as; otherwise the one :func:`~smbcore.security.posix_descriptor` makes."""
        raw = _getxattr(self._fd, XATTR_SECURITY) if self.share.xattrs else None
        snapshot = (st.st_uid, st.st_gid, statmod.S_IMODE(st.st_mode))
        if raw is not None and len(raw) > _SD_SNAPSHOT.size and _SD_SNAPSHOT.unpack_from(raw) == snapshot:
            try:
                return SecurityDescriptor.decode(memoryview(raw)[_SD_SNAPSHOT.size :])
            except (RemoteProtocolError, ValueError) as exc:  # damaged: fall back to the mode
                log.warning("ignoring the stored descriptor of %r: %s", self.smb_path, exc)
        return posix_descriptor(st.st_uid, st.st_gid, statmod.S_IMODE(st.st_mode), self.is_directory)

    def security_descriptor(self, info: int) -> SecurityDescriptor:
        """The parts of the descriptor ``info`` (SECURITY_INFORMATION) asks for. The owner,
        group, DACL and label need READ_CONTROL; the SACL needs ACCESS_SYSTEM_SECURITY,
        which no open here has (STATUS_ACCESS_DENIED)."""
        self._check_open()
        if info & SecurityInformation.SACL and not self.granted_access & AccessMask.ACCESS_SYSTEM_SECURITY:
            raise FsError(NTStatus.ACCESS_DENIED, "SACL without ACCESS_SYSTEM_SECURITY")
        readable = SecurityInformation.OWNER | SecurityInformation.GROUP | SecurityInformation.DACL
        if info & (readable | SecurityInformation.LABEL):
            self._need(AccessMask.READ_CONTROL, "read security")
        try:
            st = os.fstat(self._fd)
        except OSError as exc:
            raise _os_error(exc, "fstat") from None
        return self._current_descriptor(st).select(info)

    def set_security(self, info: int, sd: SecurityDescriptor, *, check_access: bool = True) -> None:
        """Apply the parts of ``sd`` that ``info`` names ([MS-FSA] 2.1.5.16): a Unix-mapped owner
        or group (``S-1-22-1-uid``, ``S-1-22-2-gid``) becomes the file's (fchown); a DACL
        becomes its permission bits (:func:`~smbcore.security.mode_from_dacl`); the whole
        descriptor is stored as the client gave it (see the module docstring): an owner or
        group SID with no POSIX identity is stored only, and reported while the file keeps
        the owner, group and mode it had when it was set.
        OWNER and GROUP need WRITE_OWNER, DACL WRITE_DAC, SACL ACCESS_SYSTEM_SECURITY."""
        self._check_open()
        want = SecurityInformation(info & 0xF)
        if check_access:
            if want & (SecurityInformation.OWNER | SecurityInformation.GROUP):
                self._need(AccessMask.WRITE_OWNER, "set owner")
            if want & SecurityInformation.DACL:
                self._need(AccessMask.WRITE_DAC, "set DACL")
            if (
                want & SecurityInformation.SACL
                and not self.granted_access & AccessMask.ACCESS_SYSTEM_SECURITY
            ):
                raise FsError(NTStatus.ACCESS_DENIED, "SACL without ACCESS_SYSTEM_SECURITY")
        try:
            st = os.fstat(self._fd)
            current = self._current_descriptor(st)
            owner = sd.owner if want & SecurityInformation.OWNER and sd.owner is not None else current.owner
            group = sd.group if want & SecurityInformation.GROUP and sd.group is not None else current.group
            uid = gid = -1
            if owner is not None and owner != current.owner:
                mapped = unix_id(owner)
                if mapped is not None and mapped[0] == "user":
                    uid = mapped[1]
            if group is not None and group != current.group:
                mapped = unix_id(group)
                if mapped is not None and mapped[0] == "group":
                    gid = mapped[1]
            if (uid, gid) != (-1, -1):
                os.fchown(self._fd, uid, gid)
            dacl, null_dacl = current.dacl, current.null_dacl
            if want & SecurityInformation.DACL:
                dacl, null_dacl = sd.dacl, sd.null_dacl or sd.dacl is None
                st = os.fstat(self._fd)
                mode = mode_from_dacl(
                    None if null_dacl else dacl, unix_user_sid(st.st_uid), unix_group_sid(st.st_gid)
                )
                new = (st.st_mode & 0o7000) | mode
                if new != statmod.S_IMODE(st.st_mode):
                    os.fchmod(self._fd, new)
            stored = SecurityDescriptor(owner, group, dacl, None, current.control, null_dacl)
            if self.share.xattrs:
                st = os.fstat(self._fd)
                snapshot = _SD_SNAPSHOT.pack(st.st_uid, st.st_gid, statmod.S_IMODE(st.st_mode))
                try:
                    os.setxattr(self._fd, XATTR_SECURITY, snapshot + stored.encode())
                except OSError as exc:  # the mode is applied; only the exact descriptor is lost
                    log.info("not storing the descriptor of %r: %s", self.smb_path, exc)
        except OSError as exc:
            raise _os_error(exc, f"set security of {self.smb_path!r}") from None
        self._keep_user_change_time()

    def open_info(self) -> OpenInfo:
        """What the information classes report about this open (its name from the root)."""
        stored = self.smb_path if self._via_link else "\\".join(self._rel) + self._stream_suffix()
        return OpenInfo(
            "\\" + self.smb_path, self.granted_access, self.position, self.mode, normalized_name="\\" + stored
        )

    def _stream_suffix(self) -> str:
        return ""

    def streams(self) -> tuple[tuple[str, int], ...]:
        """The file's named streams, (name, size) each, in name order (FileStreamInformation)."""
        self._check_open()
        if not self.share.xattrs:
            return ()
        out = []
        try:
            for xattr in os.listxattr(self._fd):
                if xattr.startswith(XATTR_STREAM_PREFIX):
                    value = _getxattr(self._fd, xattr)
                    if value is not None:
                        out.append((xattr[len(XATTR_STREAM_PREFIX) :], len(value)))
        except OSError as exc:
            raise _os_error(exc, f"streams of {self.smb_path!r}") from None
        return tuple(sorted(out, key=lambda e: (_fold(e[0]), e[0])))

    # -- data ------------------------------------------------------------------------------------

    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset``: fewer only at the end of the file, none past it
        (the caller answers STATUS_END_OF_FILE, MS-SMB2 3.3.5.12)."""
        self._need(_DATA_READ, "read")
        self._need_file("read")
        self._check_range(offset, length)
        try:
            data = os.pread(self._fd, length, offset)
            if not data or len(data) == length:
                return data
            chunks = [data]
            got = len(data)
            while got < length:
                more = os.pread(self._fd, length - got, offset + got)
                if not more:
                    break
                chunks.append(more)
                got += len(more)
            return b"".join(chunks)
        except OSError as exc:
            raise _os_error(exc, f"read of {self.smb_path!r}") from None

    def readinto(self, buffer: memoryview, offset: int) -> int:
        """Read into a caller's (writable) buffer at ``offset``; the count, short only at EOF."""
        self._check_read(buffer, offset)
        try:
            return self._preadv_all(buffer, offset, 0)
        except OSError as exc:
            raise _os_error(exc, f"read of {self.smb_path!r}") from None

    def readinto_nowait(self, buffer: memoryview, offset: int) -> int | None:
        """:meth:`readinto` from the page cache alone (``preadv2`` with ``RWF_NOWAIT``), for
        the event loop: the same checks and count, or None when some of the range is not
        cached (EAGAIN) or the read fails otherwise; the caller then does :meth:`readinto`
        on a thread, which also reports any error. The buffer may have been written to."""
        self._check_read(buffer, offset)
        if not _RWF_NOWAIT:
            return None
        try:
            return self._preadv_all(buffer, offset, _RWF_NOWAIT)
        except OSError:
            return None

    def _check_read(self, buffer: memoryview, offset: int) -> None:
        self._need(_DATA_READ, "read")
        self._need_file("read")
        self._check_range(offset, len(buffer))

    def _preadv_all(self, buffer: memoryview, offset: int, flags: int) -> int:
        """Fill ``buffer`` from ``offset`` until it is full or the file ends; the count. A short
        read is asked again: with RWF_NOWAIT the next one reads 0 (EOF) or fails with EAGAIN."""
        total = 0
        while total < len(buffer):
            got = os.preadv(self._fd, [buffer[total:]], offset + total, flags)
            if not got:
                break
            total += got
        return total

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Write all of ``data`` at ``offset`` (past the end extends the file; the gap reads as
        zeros). Returns the count written."""
        self._need(_DATA_WRITE, "write")
        self._need_file("write")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        self._check_range(offset, len(view))
        if view and offset >= MAX_FILE_SIZE:
            raise FsError(NTStatus.INVALID_PARAMETER, f"a write at {offset}")
        if view and offset + len(view) >= MAX_FILE_SIZE:
            raise FsError(STATUS_DISK_FULL, f"a write up to {offset + len(view)}")
        total = 0
        try:
            while total < len(view):
                wrote = os.pwrite(self._fd, view[total:], offset + total)
                if not wrote:
                    break
                total += wrote
        except OSError as exc:
            raise _os_error(exc, f"write of {self.smb_path!r}") from None
        if self._user_change_time is not None:
            self._keep_user_change_time()
        return total

    def flush(self) -> None:
        """fsync (MS-SMB2 3.3.5.11: a file needs write access; a directory does not)."""
        if not self.is_directory:
            self._need(_DATA_WRITE, "flush")
        self._check_open()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _os_error(exc, f"flush of {self.smb_path!r}") from None

    def truncate(self, size: int) -> None:
        """Set the end of file (FileEndOfFileInformation)."""
        self._need(AccessMask.FILE_WRITE_DATA, "set end of file")
        if self.is_directory:
            raise FsError(NTStatus.INVALID_PARAMETER, "end of file of a directory")
        self._check_range(size, 0)
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise _os_error(exc, f"truncate of {self.smb_path!r}") from None

    def set_allocation_size(self, size: int, *, check_access: bool = True) -> None:
        """FileAllocationInformation: below the end of file it truncates ([MS-FSA]);
        above, nothing is reserved (POSIX allocates on write). The size set (rounded up to
        the allocation unit, and never below the end of file) is what the file reports
        until its size or data next change."""
        if check_access:
            self._need(AccessMask.FILE_WRITE_DATA, "set allocation")
        self._check_open()
        if self.is_directory:
            raise FsError(NTStatus.INVALID_PARAMETER, "allocation of a directory")
        self._check_range(size, 0)
        try:
            if size < os.fstat(self._fd).st_size:
                os.ftruncate(self._fd, size)
            self.share._keep_allocation(os.fstat(self._fd), size)
        except OSError as exc:
            raise _os_error(exc, f"allocation of {self.smb_path!r}") from None

    # -- metadata --------------------------------------------------------------------------------

    def set_times(
        self,
        *,
        creation: int | None = None,
        last_access: int | None = None,
        last_write: int | None = None,
        change: int | None = None,
    ) -> None:
        """Set times (FILETIMEs; None, 0, -1 and -2 leave a time alone). POSIX keeps the last
        access and last write times; the creation time goes to an extended attribute (ignored
        where there are none) and the change time is kept until the file next changes (see
        the module docstring)."""
        self._need(AccessMask.FILE_WRITE_ATTRIBUTES, "set times")
        atime = last_access if last_access is not None and last_access > 0 else None
        mtime = last_write if last_write is not None and last_write > 0 else None
        btime = creation if creation is not None and creation > 0 else None
        ctime = change if change is not None and change > 0 else None
        if atime is None and mtime is None and btime is None and ctime is None:
            return
        try:
            st = os.fstat(self._fd)
            if atime is not None or mtime is not None:
                os.utime(
                    self._fd,
                    ns=(
                        st.st_atime_ns if atime is None else filetime_to_unix_ns(atime),
                        st.st_mtime_ns if mtime is None else filetime_to_unix_ns(mtime),
                    ),
                )
            if btime is not None and self.share.xattrs:
                try:
                    os.setxattr(self._fd, XATTR_CREATION_TIME, _FILETIME.pack(btime))
                except OSError as exc:
                    log.info("not keeping the creation time of %r: %s", self.smb_path, exc)
            if ctime is not None:
                self._user_change_time = ctime
            self.share._keep_change_time(os.fstat(self._fd), self._user_change_time)
        except (OverflowError, struct.error):
            raise FsError(NTStatus.INVALID_PARAMETER, "time out of range") from None
        except OSError as exc:
            raise _os_error(exc, f"set times of {self.smb_path!r}") from None

    def set_attributes(self, attributes: int, *, check_access: bool = True) -> None:
        """Apply FileBasicInformation.FileAttributes (0: leave them; NORMAL alone: clear them).
        READONLY on a file is stored as the absence of ``w`` bits; the attributes in
        :data:`KEPT_ATTRIBUTES` are kept in an extended attribute where there are some (see
        the module docstring). DIRECTORY on a file, TEMPORARY on a directory:
        STATUS_INVALID_PARAMETER ([MS-FSA] 2.1.5.14.2)."""
        if check_access:
            self._need(AccessMask.FILE_WRITE_ATTRIBUTES, "set attributes")
        self._check_open()
        if not attributes:
            return
        if attributes & FileAttributes.DIRECTORY and not self.is_directory:
            raise FsError(NTStatus.INVALID_PARAMETER, "DIRECTORY attribute on a file")
        if attributes & FileAttributes.TEMPORARY and self.is_directory:
            raise FsError(NTStatus.INVALID_PARAMETER, "TEMPORARY attribute on a directory")
        try:
            st = os.fstat(self._fd)
            mode = statmod.S_IMODE(st.st_mode)
            new = mode
            if not self.is_directory:
                if attributes & FileAttributes.READONLY:
                    new = mode & ~0o222
                elif not mode & 0o222:
                    new = mode | 0o200
            if new != mode:
                os.chmod(self._fd, new)
            if self.share.xattrs:
                kept = _ATTRIBUTES.pack(attributes & KEPT_ATTRIBUTES, st.st_mtime_ns)
                try:
                    os.setxattr(self._fd, XATTR_ATTRIBUTES, kept)
                except OSError as exc:
                    log.info("not keeping the attributes of %r: %s", self.smb_path, exc)
        except OSError as exc:
            raise _os_error(exc, f"set attributes of {self.smb_path!r}") from None

    def set_delete_on_close(
        self, delete: bool, *, check_empty: bool = True, ignore_readonly: bool = False
    ) -> None:
        """Mark (or unmark) the entry for deletion when this handle closes
        (FileDispositionInformation, checked by :meth:`check_delete`). ``check_empty=False``
        is CREATE's FILE_DELETE_ON_CLOSE: a directory that is not empty at close then simply
        stays (as Windows and Samba).

        This is the single-open view; a server with several opens of one file keeps the
        file's delete-pending state itself and tells :meth:`close` whether to delete."""
        self._check_open()
        if not delete:
            self.delete_on_close = False
            return
        self.check_delete(check_empty=check_empty, ignore_readonly=ignore_readonly)
        self.delete_on_close = True

    def check_delete(self, *, check_empty: bool = True, ignore_readonly: bool = False) -> None:
        """May this open mark its file for deletion ([MS-FSA] 2.1.5.15.3)? Without DELETE
        access, or for the share root: STATUS_ACCESS_DENIED; a read-only file
        STATUS_CANNOT_DELETE; a directory that is not empty STATUS_DIRECTORY_NOT_EMPTY
        (unless ``check_empty`` is false)."""
        self._need(AccessMask.DELETE, "delete")
        if self.share.read_only or self._parent_fd is None:
            raise FsError(NTStatus.ACCESS_DENIED, f"deleting {self.smb_path or 'the share root'!r}")
        try:
            st = os.fstat(self._fd)
            if self.is_directory:
                if check_empty and not self.is_empty():
                    raise FsError(NTStatus.DIRECTORY_NOT_EMPTY, f"{self.smb_path!r} is not empty")
            elif not st.st_mode & 0o222 and not ignore_readonly:
                raise FsError(STATUS_CANNOT_DELETE, f"{self.smb_path!r} is read-only")
        except OSError as exc:
            raise _os_error(exc, f"delete of {self.smb_path!r}") from None

    def is_empty(self) -> bool:
        """Whether this open directory has no entries (a file never is)."""
        self._check_open()
        if not self.is_directory:
            return False
        try:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError as exc:
            raise _os_error(exc, f"listing of {self.smb_path!r}") from None
        try:
            with os.scandir(fd) as entries:
                return next(entries, None) is None
        finally:
            os.close(fd)

    def rename(
        self,
        new_smb_path: str,
        replace: bool,
        before_rename: Callable[[tuple[int, int], tuple[int, int] | None], None] | None = None,
    ) -> None:
        """Move the entry to ``new_smb_path`` (from the share root; one leading backslash is
        tolerated). An existing target is STATUS_OBJECT_NAME_COLLISION unless ``replace``;
        a directory is never replaced, nor a file by a directory (STATUS_ACCESS_DENIED).

        ``before_rename`` is called, once the target is found and before anything moves, with
        the (st_dev, st_ino) of the target's directory and of the entry it would replace (or
        None): the caller's checks against other opens, which refuse by raising."""
        self._need(AccessMask.DELETE, "rename")
        if self.share.read_only or self._parent_fd is None:
            raise FsError(NTStatus.ACCESS_DENIED, f"renaming {self.smb_path or 'the share root'!r}")
        path = new_smb_path[1:] if new_smb_path.startswith("\\") else new_smb_path
        comps = split_smb_path(path)
        if not comps:
            raise FsError(NTStatus.OBJECT_NAME_INVALID, f"rename target {new_smb_path!r}")
        dst = self.share._resolve(comps, follow=False)
        try:
            if dst.parent_fd is None:
                raise FsError(NTStatus.ACCESS_DENIED, "rename onto the share root")
            try:
                src = os.stat(self._name, dir_fd=self._parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                src = None
            if src is None or (src.st_dev, src.st_ino) != self._identity:
                raise FsError(NTStatus.OBJECT_NAME_NOT_FOUND, f"{self.smb_path!r} was moved or deleted")
            if (
                dst.st is not None
                and (dst.st.st_dev, dst.st.st_ino) == self._identity
                and dst.name != comps[-1]
                and _fold(dst.name) == _fold(comps[-1])
            ):
                # The lookup found this very entry by another case: a change of case. (An
                # entry replaced keeps its name: on a case-sensitive disk the new one would not
                # replace it.)
                dst.st, dst.name, dst.rel = None, comps[-1], (*dst.rel[:-1], comps[-1])
            if dst.st is not None and (dst.st.st_dev, dst.st.st_ino) != self._identity:
                if not replace:
                    raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"{path!r} exists")
                if statmod.S_ISDIR(dst.st.st_mode) or statmod.S_ISDIR(src.st_mode):
                    raise FsError(NTStatus.ACCESS_DENIED, f"cannot replace {path!r}")
            if before_rename is not None:
                parent = os.fstat(dst.parent_fd)
                target = None if dst.st is None else (dst.st.st_dev, dst.st.st_ino)
                before_rename((parent.st_dev, parent.st_ino), None if target == self._identity else target)
            try:
                if dst.st is None and not replace:
                    _rename_noreplace(self._parent_fd, self._name, dst.parent_fd, dst.name)
                else:
                    os.rename(self._name, dst.name, src_dir_fd=self._parent_fd, dst_dir_fd=dst.parent_fd)
            except FileExistsError:
                raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"{path!r} exists") from None
            except OSError as exc:
                raise _os_error(exc, f"rename of {self.smb_path!r}") from None
            os.close(self._parent_fd)
            self._parent_fd, dst.parent_fd = dst.parent_fd, None
            if not self._via_link:
                self._rel = dst.rel
            self._name = dst.name
            self.smb_path = "\\".join(comps)
        finally:
            dst.close()
        if not self.is_directory:
            self._set_archive()

    def _set_archive(self) -> None:
        """A renamed file gets FILE_ATTRIBUTE_ARCHIVE, as on NTFS (and Samba): its directory's
        CHANGE_NOTIFY watchers see FILE_ACTION_MODIFIED for attributes (the xattr write is an
        IN_ATTRIB). Where attributes cannot be kept, nothing changes."""
        if not self.share.xattrs:
            return
        try:
            st = os.fstat(self._fd)
            attributes = (_stored_attributes(self._fd, st) or 0) | FileAttributes.ARCHIVE
            os.setxattr(
                self._fd, XATTR_ATTRIBUTES, _ATTRIBUTES.pack(attributes & KEPT_ATTRIBUTES, st.st_mtime_ns)
            )
        except OSError as exc:
            log.info("not marking %r for archiving: %s", self.smb_path, exc)

    def follow_rename(self, renamed: FsHandle) -> None:
        """Another open of the same file renamed it: this open names the new place too (its
        name, and the directory a delete on close unlinks from). Opens made through a
        symbolic link keep naming the link."""
        if self._fd < 0 or self._via_link or renamed._via_link or renamed._parent_fd is None:
            return
        if renamed._identity != self._identity:
            return
        try:
            parent = os.dup(renamed._parent_fd)
        except OSError as exc:
            raise _os_error(exc, "dup") from None
        old, self._parent_fd = self._parent_fd, parent
        self._name, self._rel, self.smb_path = renamed._name, renamed._rel, renamed.smb_path
        if old is not None:
            os.close(old)

    def _keep_user_change_time(self) -> None:
        """After a change through this handle: the change time it set stays."""
        if self._user_change_time is not None and self._fd >= 0:
            try:
                self.share._keep_change_time(os.fstat(self._fd), self._user_change_time)
            except OSError as exc:
                raise _os_error(exc, "fstat") from None

    def set_info(self, info: SetFileInfo) -> None:
        """Apply a decoded SET_INFO (SMB2_0_INFO_FILE) buffer ([MS-SMB2] 3.3.5.21.1)."""
        try:
            self._set_info(info)
        finally:
            self._keep_user_change_time()

    def _set_info(self, info: SetFileInfo) -> None:
        if isinstance(info, BasicInformation):
            # Times first, then attributes (kept with the mtime they leave), then the change
            # time, kept against the ctime all of it leaves.
            self._need(AccessMask.FILE_WRITE_ATTRIBUTES, "set basic information")
            self.set_times(
                creation=info.creation_time,
                last_access=info.last_access_time,
                last_write=info.last_write_time,
            )
            self.set_attributes(info.attributes)
            if info.change_time > 0:
                self._user_change_time = info.change_time
        elif isinstance(info, EndOfFileInformation):
            self.truncate(info.end_of_file)
        elif isinstance(info, AllocationInformation):
            self.set_allocation_size(info.allocation_size)
        elif isinstance(info, DispositionInformation):
            self.set_delete_on_close(info.delete_pending)
        elif isinstance(info, DispositionInformationEx):
            # POSIX_SEMANTICS (unlink now, keep the open) is approximated by delete on close.
            ignore_readonly = bool(info.flags & DispositionFlags.IGNORE_READONLY_ATTRIBUTE)
            self.set_delete_on_close(info.delete, ignore_readonly=ignore_readonly)
        elif isinstance(info, RenameInformation):
            self.rename(info.file_name, info.replace_if_exists)
        elif isinstance(info, PositionInformation):
            self._check_open()
            self.position = info.current_byte_offset
        elif isinstance(info, ModeInformation):
            self._check_open()
            self.mode = (self.mode & CreateOptions.DELETE_ON_CLOSE) | info.mode
        elif isinstance(info, FullEaInformation):
            self.set_eas(info.eas)

    # -- directories -----------------------------------------------------------------------------

    def list_directory(self, pattern: str = "*") -> list[tuple[str, FileStat]]:
        """The entries matching ``pattern`` (see :func:`compile_pattern`): ``.`` and ``..`` first
        (``..`` of the root is the root, as Samba), then the rest sorted case-insensitively."""
        self._need(AccessMask.FILE_READ_DATA, "list")
        if not self.is_directory:
            raise FsError(NTStatus.INVALID_PARAMETER, f"{self.smb_path!r} is not a directory")
        match = compile_pattern(pattern)
        head: list[tuple[str, FileStat]] = []
        entries: list[tuple[str, FileStat]] = []
        try:
            if match("."):
                head.append((".", stat_to_filestat(os.fstat(self._fd), ".")))
            if match(".."):
                parent = self._parent_fd if self._parent_fd is not None else self._fd
                head.append(("..", stat_to_filestat(os.fstat(parent), "..")))
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd)
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        name = entry.name
                        if _component_error(name) is not None or not match(name):
                            continue
                        try:
                            st: os.stat_result | None = entry.stat(follow_symlinks=False)
                        except OSError:  # gone meanwhile, or unreadable: not listed
                            continue
                        if _is_link(st):
                            st = self.share._target_stat((*self._rel, name))
                        if st is None or not (statmod.S_ISREG(st.st_mode) or statmod.S_ISDIR(st.st_mode)):
                            continue
                        where = None if entry.is_symlink() else f"/proc/self/fd/{fd}/{name}"
                        entries.append((name, self.share._with_meta(stat_to_filestat(st, name), st, where)))
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, f"listing of {self.smb_path!r}") from None
        entries.sort(key=lambda e: (_fold(e[0]), e[0]))
        return head + entries

    def entry_now(self, name: str) -> FileStat | None:
        """What :meth:`list_directory` would report for entry ``name`` now, or None if it is
        gone (or would not be listed). ``.`` and ``..`` are not entries."""
        self._check_open()
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except OSError:
            return None
        link = _is_link(st)
        if link:
            st = self.share._target_stat((*self._rel, name))
        if st is None or not (statmod.S_ISREG(st.st_mode) or statmod.S_ISDIR(st.st_mode)):
            return None
        where = None if link else f"/proc/self/fd/{self._fd}/{name}"
        return self.share._with_meta(stat_to_filestat(st, name), st, where)

    # -- close -----------------------------------------------------------------------------------

    def close(self, *, delete: bool | None = None) -> None:
        """Release the handle, first deleting the entry if ``delete`` (None: if this handle's
        delete-on-close is set). A failure to delete, such as a directory filled meanwhile,
        is logged: CLOSE still succeeds. Closing twice is harmless."""
        if self._fd < 0:
            return
        try:
            if self.delete_on_close if delete is None else delete:
                self._delete()
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._parent_fd is not None:
                os.close(self._parent_fd)
                self._parent_fd = None

    def _delete(self) -> None:
        assert self._parent_fd is not None
        try:
            st = os.stat(self._name, dir_fd=self._parent_fd, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != self._identity:
                log.warning("not deleting %r: replaced since it was opened", self.smb_path)
            elif statmod.S_ISDIR(st.st_mode):
                os.rmdir(self._name, dir_fd=self._parent_fd)
            else:
                os.unlink(self._name, dir_fd=self._parent_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # ENOTEMPTY is expected: CREATE's DELETE_ON_CLOSE on a directory that is not empty.
            level = logging.DEBUG if exc.errno == errno.ENOTEMPTY else logging.WARNING
            log.log(level, "delete on close of %r failed: %s", self.smb_path, exc)


# -- named streams ---------------------------------------------------------------------------------


_INODE_BITS = (1 << 64) - 1


def file_identity(identity: tuple[int, int]) -> tuple[int, int]:
    """The identity of the file an identity belongs to (itself, unless a stream's)."""
    return identity[0], identity[1] & _INODE_BITS


def stream_identity(identity: tuple[int, int], name: str) -> tuple[int, int]:
    """The identity of a named stream of the file ``identity``: its (st_dev, st_ino) with a
    64-bit hash of the folded name above the inode's 64 bits, so every stream of every file
    keys its own sharing modes, oplocks and byte-range locks, apart from the file's."""
    digest = hashlib.blake2b(_fold(name).encode("utf-8"), digest_size=8).digest()
    return identity[0], (identity[1] & _INODE_BITS) | ((int.from_bytes(digest, "little") | 1) << 64)


def _stream_xattr(fd: int, name: str) -> str | None:
    """The attribute holding stream ``name`` of the file open as ``fd`` (matched
    case-insensitively), or None."""
    want = _fold(name)
    try:
        for xattr in os.listxattr(fd):
            if xattr.startswith(XATTR_STREAM_PREFIX) and _fold(xattr[len(XATTR_STREAM_PREFIX) :]) == want:
                return xattr
    except OSError as exc:
        raise _os_error(exc, f"streams of stream {name!r}") from None
    return None


def _set_stream(fd: int, xattr: str, value: bytes | bytearray, flags: int = 0) -> None:
    if len(value) > MAX_STREAM_SIZE:
        raise FsError(STATUS_DISK_FULL, f"a stream of {len(value)} bytes")
    try:
        os.setxattr(fd, xattr, value, flags)
    except OSError as exc:
        if exc.errno in (errno.E2BIG, errno.ENOSPC, errno.ERANGE):
            raise FsError(STATUS_DISK_FULL, f"a stream of {len(value)} bytes does not fit") from None
        if exc.errno == errno.EEXIST:
            raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"stream {xattr!r} exists") from None
        raise _os_error(exc, f"write of stream {xattr!r}") from None


class FsStreamHandle(FsHandle):
    """An open named stream (see the module docstring): the data calls work on the
    attribute holding it; the rest is the file's, through the file's descriptor."""

    def __init__(
        self, base: FsHandle, xattr: str, access: int, action: int, identity: tuple[int, int], mode: int
    ) -> None:
        name = xattr[len(XATTR_STREAM_PREFIX) :]
        super().__init__(
            share=base.share, fd=base._fd, parent_fd=base._parent_fd, name=base._name, rel=base._rel,
            smb_path=f"{base.smb_path}:{name}", is_directory=False, granted_access=access,
            create_action=action, identity=identity, via_link=base._via_link, mode=mode,
        )  # fmt: skip
        base._fd, base._parent_fd = -1, None  # this handle owns them now
        self._xattr = xattr
        self._guard = threading.Lock()  # read-modify-write of the attribute

    def __repr__(self) -> str:
        return f"<FsStreamHandle {self.smb_path!r}{' closed' if self.closed else ''}>"

    def _stream_suffix(self) -> str:
        return ":" + self._xattr[len(XATTR_STREAM_PREFIX) :]

    def _value(self) -> bytes:
        value = _getxattr(self._fd, self._xattr)
        if value is None:
            raise FsError(STATUS_FILE_DELETED, f"stream {self.smb_path!r} is gone")
        return value

    def stat(self) -> FileStat:
        info = super().stat()
        size = len(self._value())
        attributes = info.attributes & ~FileAttributes.DIRECTORY or FileAttributes.NORMAL
        return dataclasses.replace(
            info, end_of_file=size, allocation_size=_round_up(size), attributes=attributes, is_directory=False
        )

    def pread(self, length: int, offset: int) -> bytes:
        self._need(_DATA_READ, "read")
        self._check_range(offset, length)
        return self._value()[offset : offset + length]

    def readinto(self, buffer: memoryview, offset: int) -> int:
        data = self.pread(len(buffer), offset)
        buffer[: len(data)] = data
        return len(data)

    def readinto_nowait(self, buffer: memoryview, offset: int) -> int | None:
        """Never from the loop: reading the attribute may wait for the disk."""
        return None

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        self._need(_DATA_WRITE, "write")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        self._check_range(offset, len(view))
        if offset + len(view) > MAX_STREAM_SIZE:
            raise FsError(STATUS_DISK_FULL, f"a stream write up to {offset + len(view)}")
        if not view:
            return 0  # a write of nothing extends nothing
        with self._guard:
            value = bytearray(self._value())
            if offset > len(value):
                value += bytes(offset - len(value))
            value[offset : offset + len(view)] = view
            _set_stream(self._fd, self._xattr, value)
        return len(view)

    def flush(self) -> None:
        self._need(_DATA_WRITE, "flush")

    def truncate(self, size: int) -> None:
        self._need(AccessMask.FILE_WRITE_DATA, "set end of file")
        self._check_range(size, 0)
        if size > MAX_STREAM_SIZE:  # before making the zeros: a client may ask for 2**62
            raise FsError(STATUS_DISK_FULL, f"a stream of {size} bytes")
        with self._guard:
            value = self._value()
            _set_stream(self._fd, self._xattr, value[:size] + bytes(max(0, size - len(value))))

    def set_allocation_size(self, size: int, *, check_access: bool = True) -> None:
        if check_access:
            self._need(AccessMask.FILE_WRITE_DATA, "set allocation")
        self._check_range(size, 0)
        with self._guard:
            value = self._value()
            if size < len(value):
                _set_stream(self._fd, self._xattr, value[:size])

    def check_delete(self, *, check_empty: bool = True, ignore_readonly: bool = False) -> None:
        """A stream may go whenever the open has DELETE access (its file stays)."""
        self._need(AccessMask.DELETE, "delete")
        if self.share.read_only:
            raise FsError(NTStatus.ACCESS_DENIED, f"deleting {self.smb_path!r}")

    def rename(
        self,
        new_smb_path: str,
        replace: bool,
        before_rename: Callable[[tuple[int, int], tuple[int, int] | None], None] | None = None,
    ) -> None:
        """A stream is renamed within its file only: ``:NEW`` or ``:NEW:$DATA``. An existing
        stream of that name is STATUS_OBJECT_NAME_COLLISION, or replaced with ``replace``; the
        file's unnamed stream cannot be a target (STATUS_INVALID_PARAMETER)."""
        self._need(AccessMask.DELETE, "rename")
        if self.share.read_only:
            raise FsError(NTStatus.ACCESS_DENIED, f"renaming {self.smb_path!r}")
        if not new_smb_path.startswith(":"):
            raise FsError(
                NTStatus.INVALID_PARAMETER, f"a stream renamed to {new_smb_path!r}, not to a stream"
            )
        _, name = split_stream("x" + new_smb_path)
        if name is None:
            raise FsError(NTStatus.INVALID_PARAMETER, "a stream renamed to the file's unnamed stream")
        with self._guard:
            target = _stream_xattr(self._fd, name)
            if target == self._xattr:
                target = None  # a change of case
            elif target is not None and not replace:
                raise FsError(NTStatus.OBJECT_NAME_COLLISION, f"stream {name!r} exists")
            if before_rename is not None:
                file = file_identity(self._identity)
                before_rename(file, None if target is None else stream_identity(file, name))
            value = self._value()
            new = XATTR_STREAM_PREFIX + name
            _set_stream(self._fd, new, value, 0 if replace or target is None else os.XATTR_CREATE)
            try:
                if target is not None and target != new:
                    os.removexattr(self._fd, target)
                if new != self._xattr:
                    os.removexattr(self._fd, self._xattr)
            except OSError as exc:
                raise _os_error(exc, f"rename of stream {self.smb_path!r}") from None
            self._xattr = new
            self.smb_path = f"{self.smb_path.rpartition(':')[0]}:{name}"

    def _delete(self) -> None:
        try:
            os.removexattr(self._fd, self._xattr)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                log.warning("delete on close of %r failed: %s", self.smb_path, exc)
