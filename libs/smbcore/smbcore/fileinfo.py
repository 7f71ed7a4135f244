"""File, file-system and directory information classes ([MS-FSCC] 2.4, 2.5): pure encoders
and decoders, no I/O.

What QUERY_INFO, SET_INFO and QUERY_DIRECTORY carry for the classes Windows, Samba's
smbclient, smbprotocol and smbtorture use. A file is described by a :class:`FileStat` (built
from ``os.stat_result`` by :func:`stat_to_filestat`), a volume by a :class:`VolumeInfo` of
plain integers (built from ``os.statvfs`` by the caller), and what belongs to the open
rather than the file (its name, granted access, position, mode) by an :class:`OpenInfo`.

* :func:`encode_file_info` / :func:`encode_fs_info`: QUERY_INFO output for an information
  class. The buffer-size rules of MS-SMB2 3.3.5.20.1 are the caller's: answer
  ``STATUS_INFO_LENGTH_MISMATCH`` when OutputBufferLength is below
  :data:`FILE_INFO_MIN_SIZE` / :data:`FS_INFO_MIN_SIZE`, otherwise truncate and answer
  ``STATUS_BUFFER_OVERFLOW`` when the encoding does not fit.
* :func:`decode_set_file_info`: a SET_INFO buffer as one of the ``*Information`` dataclasses
  (each also encodes, for clients and tests). A buffer shorter than the class's fixed part is
  ``STATUS_INFO_LENGTH_MISMATCH`` (MS-SMB2 3.3.5.21.1); longer buffers are accepted.
* :func:`encode_directory_entries`: QUERY_DIRECTORY output, entries chained on 8-byte
  boundaries; :func:`decode_directory_entries` reads it back (tests, clients).

Errors are :class:`~smbcore.errors.RemoteProtocolError` (the request is at fault) carrying
the status to answer; :class:`InfoClassError` for classes we do not serve. They concern one
request only: the caller answers ``err.status`` and must not let them end the connection.

Section numbers: [MS-FSCC] renumbers section 2.4 from one edition to the next (the SMB2
rename structure is 2.4.34.2 in the 2018 edition smbprotocol cites and 2.4.42.2 in current
ones). Numbers below are those of the 2018 edition; the structure names are the stable
reference. Section 2.5 has kept its numbers.
"""

from __future__ import annotations

import hashlib
import os
import stat as statmod
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

from .errors import RemoteProtocolError
from .ntstatus import NTStatus
from .wire import Buffer, Structure, align8, read_bytes, read_utf16, structure, u8, u16, u32, u64

# -- FILETIME ([MS-DTYP] 2.3.3) ----------------------------------------------------------------

#: 1970-01-01 as a FILETIME: 100 ns intervals since 1601-01-01 UTC.
FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
_INT64_MAX = (1 << 63) - 1


def unix_ns_to_filetime(ns: int) -> int:
    """Nanoseconds since the Unix epoch to a FILETIME (clamped to 0 before 1601)."""
    return max(0, ns // 100 + FILETIME_UNIX_EPOCH)


def filetime_to_unix_ns(filetime: int) -> int:
    return (filetime - FILETIME_UNIX_EPOCH) * 100


def _i64(default: int = 0) -> Any:
    """A signed 64-bit field (LARGE_INTEGER: times that may be -1/-2, sizes)."""
    return field(default=default, metadata={"fmt": "q"})


def _clamp64(n: int) -> int:
    return max(0, min(n, _INT64_MAX))


# -- attributes and FileStat --------------------------------------------------------------------


class FileAttributes(IntFlag):
    """[MS-FSCC] 2.6 File Attributes (those a POSIX backend can report, and a few it may receive)."""

    READONLY = 0x00000001
    HIDDEN = 0x00000002
    SYSTEM = 0x00000004
    DIRECTORY = 0x00000010
    ARCHIVE = 0x00000020
    NORMAL = 0x00000080
    TEMPORARY = 0x00000100
    SPARSE_FILE = 0x00000200
    REPARSE_POINT = 0x00000400
    COMPRESSED = 0x00000800
    OFFLINE = 0x00001000
    NOT_CONTENT_INDEXED = 0x00002000
    ENCRYPTED = 0x00004000


ALLOCATION_UNIT = 4096


@dataclass(frozen=True, slots=True)
class FileStat:
    """What the information classes say about one file or directory (times are FILETIMEs)."""

    creation_time: int
    last_access_time: int
    last_write_time: int
    change_time: int
    allocation_size: int
    end_of_file: int
    attributes: FileAttributes
    file_index: int  # the inode: FileInternalInformation.IndexNumber, FileId in listings
    number_of_links: int
    delete_pending: bool
    is_directory: bool
    ea_size: int = 0
    #: The named data streams, (name, size) each, for FileStreamInformation; filled only
    #: when that class is asked for.
    streams: tuple[tuple[str, int], ...] = ()


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def stat_to_filestat(st: os.stat_result, name: str) -> FileStat:
    """A :class:`FileStat` from ``os.stat``/``os.lstat`` of the entry called ``name``.

    * POSIX keeps no creation time: it is reported as the older of mtime and ctime (what
      Samba does without a stored birth time), so it never follows the last write.
    * Attributes: DIRECTORY for directories; HIDDEN for dot-files (not ``.``/``..``);
      READONLY for a non-directory nobody may write (no ``w`` bit); ARCHIVE for every file
      (Windows sets it when a file is created or written and only backup software clears it;
      with nowhere to keep the bit, a POSIX file always reports it, as Windows and Samba
      report freshly written files). NORMAL is then never needed (valid only alone).
    * Directories report EndOfFile and AllocationSize 0 and one link, as Windows and Samba
      do; files their size, and the blocks they occupy rounded up to 4096 (or, where the
      filesystem reports no blocks, the size rounded up).
    """
    is_dir = statmod.S_ISDIR(st.st_mode)
    attrs = FileAttributes(0)
    if is_dir:
        attrs |= FileAttributes.DIRECTORY
    else:
        attrs |= FileAttributes.ARCHIVE
        if not st.st_mode & 0o222:
            attrs |= FileAttributes.READONLY
    if name.startswith(".") and name not in (".", ".."):
        attrs |= FileAttributes.HIDDEN
    if not attrs:
        attrs = FileAttributes.NORMAL
    if is_dir:
        eof = alloc = 0
    else:
        eof = st.st_size
        blocks = getattr(st, "st_blocks", 0) * 512
        alloc = _round_up(blocks if blocks else eof, ALLOCATION_UNIT)
    return FileStat(
        creation_time=unix_ns_to_filetime(min(st.st_mtime_ns, st.st_ctime_ns)),
        last_access_time=unix_ns_to_filetime(st.st_atime_ns),
        last_write_time=unix_ns_to_filetime(st.st_mtime_ns),
        change_time=unix_ns_to_filetime(st.st_ctime_ns),
        allocation_size=alloc,
        end_of_file=eof,
        attributes=attrs,
        file_index=st.st_ino,
        number_of_links=1 if is_dir else st.st_nlink,
        delete_pending=False,
        is_directory=is_dir,
    )


# -- errors and class numbers -------------------------------------------------------------------


class InfoClassError(RemoteProtocolError):
    """An information class we do not serve: ``STATUS_INVALID_INFO_CLASS``, or
    ``STATUS_NOT_SUPPORTED`` for a documented class we do not implement (MS-SMB2 3.3.5.20.1,
    3.3.5.21.1)."""

    def __init__(self, what: str, info_class: int, status: int = NTStatus.INVALID_INFO_CLASS) -> None:
        super().__init__(f"{what} information class {info_class}", status)
        self.info_class = info_class


def _length_mismatch(what: str, need: int, have: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"{what}: needs {need} bytes, buffer has {have}", NTStatus.INFO_LENGTH_MISMATCH
    )


class FileInfoClass(IntEnum):
    """[MS-FSCC] 2.4 file information classes (QUERY_INFO, SET_INFO, QUERY_DIRECTORY)."""

    DIRECTORY = 1
    FULL_DIRECTORY = 2
    BOTH_DIRECTORY = 3
    BASIC = 4
    STANDARD = 5
    INTERNAL = 6
    EA = 7
    ACCESS = 8
    NAME = 9
    RENAME = 10
    LINK = 11
    NAMES = 12
    DISPOSITION = 13
    POSITION = 14
    FULL_EA = 15
    MODE = 16
    ALIGNMENT = 17
    ALL = 18
    ALLOCATION = 19
    END_OF_FILE = 20
    ALTERNATE_NAME = 21
    STREAM = 22
    PIPE = 23
    COMPRESSION = 28
    OBJECT_ID = 29
    QUOTA = 32
    REPARSE_POINT = 33
    NETWORK_OPEN = 34
    ATTRIBUTE_TAG = 35
    ID_BOTH_DIRECTORY = 37
    ID_FULL_DIRECTORY = 38
    VALID_DATA_LENGTH = 39
    SHORT_NAME = 40
    NORMALIZED_NAME = 48
    ID = 59
    DISPOSITION_EX = 64
    RENAME_EX = 65


class FsInfoClass(IntEnum):
    """[MS-FSCC] 2.5 file system information classes."""

    VOLUME = 1
    LABEL = 2
    SIZE = 3
    DEVICE = 4
    ATTRIBUTE = 5
    CONTROL = 6
    FULL_SIZE = 7
    OBJECT_ID = 8
    DRIVER_PATH = 9
    VOLUME_FLAGS = 10
    SECTOR_SIZE = 11


class AccessMask(IntFlag):
    """[MS-SMB2] 2.2.13.1.1 File_Pipe_Printer_Access_Mask (2.2.13.1.2 for directories: same bits)."""

    FILE_READ_DATA = 0x00000001  # FILE_LIST_DIRECTORY
    FILE_WRITE_DATA = 0x00000002  # FILE_ADD_FILE
    FILE_APPEND_DATA = 0x00000004  # FILE_ADD_SUBDIRECTORY
    FILE_READ_EA = 0x00000008
    FILE_WRITE_EA = 0x00000010
    FILE_EXECUTE = 0x00000020  # FILE_TRAVERSE
    FILE_DELETE_CHILD = 0x00000040
    FILE_READ_ATTRIBUTES = 0x00000080
    FILE_WRITE_ATTRIBUTES = 0x00000100
    DELETE = 0x00010000
    READ_CONTROL = 0x00020000
    WRITE_DAC = 0x00040000
    WRITE_OWNER = 0x00080000
    SYNCHRONIZE = 0x00100000
    ACCESS_SYSTEM_SECURITY = 0x01000000
    MAXIMUM_ALLOWED = 0x02000000
    GENERIC_ALL = 0x10000000
    GENERIC_EXECUTE = 0x20000000
    GENERIC_WRITE = 0x40000000
    GENERIC_READ = 0x80000000


class FileMode(IntFlag):
    """[MS-FSCC] 2.4.24 FileModeInformation Mode."""

    WRITE_THROUGH = 0x00000002
    SEQUENTIAL_ONLY = 0x00000004
    NO_INTERMEDIATE_BUFFERING = 0x00000008
    SYNCHRONOUS_IO_ALERT = 0x00000010
    SYNCHRONOUS_IO_NONALERT = 0x00000020
    DELETE_ON_CLOSE = 0x00001000


# -- query: file information classes ([MS-FSCC] 2.4) --------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenInfo:
    """What a query reports about the open rather than the file.

    ``name`` is the path FileAllInformation and FileNameInformation report: from the share
    root with a leading backslash (``\\dir\\file.txt``; ``\\`` for the root), as Windows and
    Samba answer over SMB2. FileNormalizedNameInformation reports ``normalized_name`` (the same
    path with each name as the filesystem has it: long names in their stored case; ``name``
    when empty) without that backslash.
    """

    name: str = ""
    access_flags: int = 0
    position: int = 0
    mode: int = 0
    alignment: int = 0  # FILE_BYTE_ALIGNMENT
    normalized_name: str = ""


@structure
@dataclass(frozen=True, slots=True)
class FileBasicInformation(Structure):
    """[MS-FSCC] 2.4.7 FileBasicInformation (40 bytes, query and set)."""

    creation_time: int = _i64()
    last_access_time: int = _i64()
    last_write_time: int = _i64()
    change_time: int = _i64()
    file_attributes: int = u32()
    reserved: int = u32()


@structure
@dataclass(frozen=True, slots=True)
class FileStandardInformation(Structure):
    """[MS-FSCC] 2.4.38 FileStandardInformation (24 bytes)."""

    allocation_size: int = _i64()
    end_of_file: int = _i64()
    number_of_links: int = u32()
    delete_pending: int = u8()
    directory: int = u8()
    reserved: int = u16()


@structure
@dataclass(frozen=True, slots=True)
class FileNetworkOpenInformation(Structure):
    """[MS-FSCC] 2.4 FileNetworkOpenInformation (56 bytes)."""

    creation_time: int = _i64()
    last_access_time: int = _i64()
    last_write_time: int = _i64()
    change_time: int = _i64()
    allocation_size: int = _i64()
    end_of_file: int = _i64()
    file_attributes: int = u32()
    reserved: int = u32()


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


def encode_basic(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.7 FileBasicInformation"""
    return FileBasicInformation(
        st.creation_time, st.last_access_time, st.last_write_time, st.change_time, int(st.attributes), 0
    ).to_bytes()


def encode_standard(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.38 FileStandardInformation; a pending delete removes one link (as Samba)."""
    links = max(0, st.number_of_links - 1) if st.delete_pending else st.number_of_links
    return FileStandardInformation(
        _clamp64(st.allocation_size), _clamp64(st.end_of_file), links, int(st.delete_pending),
        int(st.is_directory), 0,
    ).to_bytes()  # fmt: skip


def encode_internal(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.20 FileInternalInformation: IndexNumber (the inode)."""
    return _U64.pack(st.file_index & 0xFFFFFFFFFFFFFFFF)


def encode_ea(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.12 FileEaInformation"""
    return _U32.pack(st.ea_size)


def encode_access(access_flags: int) -> bytes:
    """[MS-FSCC] 2.4.1 FileAccessInformation: the open's granted access."""
    return _U32.pack(access_flags & 0xFFFFFFFF)


def encode_position(position: int) -> bytes:
    """[MS-FSCC] 2.4.32 FilePositionInformation"""
    return _I64.pack(_clamp64(position))


def encode_mode(mode: int) -> bytes:
    """[MS-FSCC] 2.4.24 FileModeInformation"""
    return _U32.pack(mode & 0xFFFFFFFF)


def encode_alignment(alignment: int) -> bytes:
    """[MS-FSCC] 2.4.3 FileAlignmentInformation"""
    return _U32.pack(alignment & 0xFFFFFFFF)


def encode_name(name: str) -> bytes:
    """[MS-FSCC] 2.1.7 FILE_NAME_INFORMATION (FileNameInformation, FileNormalizedNameInformation)."""
    data = name.encode("utf-16-le")
    return _U32.pack(len(data)) + data


def encode_all(st: FileStat, open_info: OpenInfo) -> bytes:
    """[MS-FSCC] 2.4.2 FileAllInformation: 100 fixed bytes, then the name."""
    return b"".join(
        (
            encode_basic(st),
            encode_standard(st),
            encode_internal(st),
            encode_ea(st),
            encode_access(open_info.access_flags),
            encode_position(open_info.position),
            encode_mode(open_info.mode),
            encode_alignment(open_info.alignment),
            encode_name(open_info.name),
        )
    )


def encode_network_open(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4 FileNetworkOpenInformation"""
    return FileNetworkOpenInformation(
        st.creation_time, st.last_access_time, st.last_write_time, st.change_time,
        _clamp64(st.allocation_size), _clamp64(st.end_of_file), int(st.attributes), 0,
    ).to_bytes()  # fmt: skip


def encode_attribute_tag(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.6 FileAttributeTagInformation: attributes, ReparseTag 0 (no reparse points)."""
    return _U32.pack(int(st.attributes)) + _U32.pack(0)


def encode_stream(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.40 FileStreamInformation: a file's unnamed data stream ``::$DATA`` (a
    directory has none, as on NTFS), then its named streams ``:NAME:$DATA``; each entry
    8-byte aligned. Empty output for a directory without named streams."""
    entries = [] if st.is_directory else [("::$DATA", st.end_of_file, st.allocation_size)]
    entries += [(f":{name}:$DATA", size, _round_up(size, 8)) for name, size in st.streams]
    out = bytearray()
    for i, (name, size, allocation) in enumerate(entries):
        raw = name.encode("utf-16-le")
        entry = _U32.pack(len(raw)) + _I64.pack(_clamp64(size)) + _I64.pack(_clamp64(allocation)) + raw
        length = 4 + len(entry)
        padded = _round_up(length, 8) if i + 1 < len(entries) else length
        out += _U32.pack(padded if i + 1 < len(entries) else 0) + entry + bytes(padded - length)
    return bytes(out)


def encode_compression(st: FileStat) -> bytes:
    """[MS-FSCC] 2.4.9 FileCompressionInformation: nothing here is compressed, so
    CompressedFileSize is the size and CompressionFormat COMPRESSION_FORMAT_NONE (0), every
    shift 0, for files and directories alike."""
    return _I64.pack(_clamp64(st.end_of_file)) + bytes(8)


# -- short (8.3) names ([MS-FSCC] 2.1.5.2.1) -----------------------------------------------------

#: Characters an 8.3 name may hold besides letters and digits.
_SHORT_EXTRA = frozenset("!#$%&'()-@^_`{}~")


def _short_chars(text: str) -> str:
    return "".join(c for c in text.upper() if c.isascii() and (c.isalnum() or c in _SHORT_EXTRA))


def is_8dot3(name: str) -> bool:
    """Is ``name`` already a valid 8.3 name (case aside): 1-8 characters, optionally a dot and
    1-3 more, every character one an 8.3 name allows?"""
    base, dot, ext = name.partition(".")
    if not base or len(base) > 8 or (dot and not 1 <= len(ext) <= 3) or "." in ext:
        return False
    return _short_chars(base) == base.upper() and _short_chars(ext) == ext.upper()


def short_name(name: str) -> str:
    """The 8.3 name reported for ``name``: the name itself when it is one (:func:`is_8dot3`),
    otherwise up to four characters of it, ``~``, three characters of a hash of the whole
    name, and up to three characters of its last extension (``LONGNAME.TEXT`` becomes like
    ``LONG~K3Q.TEX``). Stable across restarts and servers, unique in a directory but for a
    hash collision (46656 values per prefix); :mod:`smbcore.fs` opens a name by it."""
    if is_8dot3(name):
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    digest = int.from_bytes(hashlib.blake2s(name.encode("utf-8", "surrogatepass"), digest_size=4).digest())
    code = ""
    for _ in range(3):
        digest, digit = divmod(digest, 36)
        code += "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[digit]
    prefix = _short_chars(stem)[:4] or "_"
    suffix = _short_chars(ext)[:3]
    return f"{prefix}~{code}" + (f".{suffix}" if suffix else "")


def encode_alternate_name(open_info: OpenInfo) -> bytes:
    """[MS-FSCC] 2.4.5 FileAlternateNameInformation: the short name of the open's last
    component. The share root has no name: STATUS_OBJECT_NAME_NOT_FOUND (as NTFS answers for
    a name without a short form)."""
    last = open_info.name.rpartition("\\")[2]
    if not last:
        raise RemoteProtocolError("the share root has no short name", NTStatus.OBJECT_NAME_NOT_FOUND)
    return encode_name(short_name(last))


#: What QUERY_INFO of a file class needs of the open's granted access ([MS-FSA] 2.1.5.11):
#: STATUS_ACCESS_DENIED without it. Classes not listed need nothing.
FILE_INFO_ACCESS: dict[int, int] = {
    FileInfoClass.BASIC: AccessMask.FILE_READ_ATTRIBUTES,
    FileInfoClass.ALL: AccessMask.FILE_READ_ATTRIBUTES,
    FileInfoClass.NETWORK_OPEN: AccessMask.FILE_READ_ATTRIBUTES,
    FileInfoClass.ATTRIBUTE_TAG: AccessMask.FILE_READ_ATTRIBUTES,
    FileInfoClass.FULL_EA: AccessMask.FILE_READ_EA,
}

#: Fixed part of each QUERY_INFO file class: a smaller OutputBufferLength is INFO_LENGTH_MISMATCH.
FILE_INFO_MIN_SIZE: dict[int, int] = {
    FileInfoClass.BASIC: 40,
    FileInfoClass.STANDARD: 24,
    FileInfoClass.INTERNAL: 8,
    FileInfoClass.EA: 4,
    FileInfoClass.ACCESS: 4,
    FileInfoClass.POSITION: 8,
    FileInfoClass.MODE: 4,
    FileInfoClass.ALIGNMENT: 4,
    FileInfoClass.ALL: 104,
    FileInfoClass.NETWORK_OPEN: 56,
    FileInfoClass.ATTRIBUTE_TAG: 8,
    FileInfoClass.STREAM: 32,
    FileInfoClass.NAME: 4,
    FileInfoClass.NORMALIZED_NAME: 4,
    FileInfoClass.ALTERNATE_NAME: 8,  # BlockAlign(FieldOffset(FileName) + 2, 4) ([MS-FSA] 2.1.5.11.3)
    FileInfoClass.COMPRESSION: 16,
}

#: Documented for query in [MS-FSCC] 2.4 but not served here: STATUS_NOT_SUPPORTED (MS-SMB2 3.3.5.20.1).
_QUERY_NOT_SUPPORTED = frozenset(
    {
        FileInfoClass.FULL_EA,  # answered from the EAs by the caller (encode_full_ea)
        FileInfoClass.PIPE,
        FileInfoClass.OBJECT_ID,
        FileInfoClass.QUOTA,
        FileInfoClass.REPARSE_POINT,
        FileInfoClass.ID,
    }
)


def encode_file_info(info_class: int, st: FileStat, open_info: OpenInfo | None = None) -> bytes:
    """QUERY_INFO (SMB2_0_INFO_FILE) output for ``info_class``, whole (the caller truncates)."""
    o = open_info or OpenInfo()
    if info_class == FileInfoClass.BASIC:
        return encode_basic(st)
    if info_class == FileInfoClass.STANDARD:
        return encode_standard(st)
    if info_class == FileInfoClass.INTERNAL:
        return encode_internal(st)
    if info_class == FileInfoClass.EA:
        return encode_ea(st)
    if info_class == FileInfoClass.ACCESS:
        return encode_access(o.access_flags)
    if info_class == FileInfoClass.POSITION:
        return encode_position(o.position)
    if info_class == FileInfoClass.MODE:
        return encode_mode(o.mode)
    if info_class == FileInfoClass.ALIGNMENT:
        return encode_alignment(o.alignment)
    if info_class == FileInfoClass.ALL:
        return encode_all(st, o)
    if info_class == FileInfoClass.NETWORK_OPEN:
        return encode_network_open(st)
    if info_class == FileInfoClass.ATTRIBUTE_TAG:
        return encode_attribute_tag(st)
    if info_class == FileInfoClass.STREAM:
        return encode_stream(st)
    if info_class == FileInfoClass.NAME:
        return encode_name(o.name)
    if info_class == FileInfoClass.ALTERNATE_NAME:
        return encode_alternate_name(o)
    if info_class == FileInfoClass.COMPRESSION:
        return encode_compression(st)
    if info_class == FileInfoClass.NORMALIZED_NAME:
        # Relative to the share, without the leading backslash; "" for the root (as Samba).
        name = o.normalized_name or o.name
        return encode_name(name[1:] if name.startswith("\\") else name)
    if info_class in _QUERY_NOT_SUPPORTED:
        raise InfoClassError("QUERY_INFO file", info_class, NTStatus.NOT_SUPPORTED)
    raise InfoClassError("QUERY_INFO file", info_class)


# -- set: file information classes ([MS-FSCC] 2.4) ----------------------------------------------

#: FileBasicInformation time values with a meaning of their own (MS-FSCC 2.4.7).
TIME_UNCHANGED = 0
TIME_STOP_UPDATES = -1
TIME_RESUME_UPDATES = -2


def _fixed(buf: Buffer, size: int, what: str) -> memoryview:
    if len(buf) < size:
        raise _length_mismatch(what, size, len(buf))
    return memoryview(buf)[:size]


def _non_negative(value: int, what: str) -> int:
    if value < 0:
        raise RemoteProtocolError(f"{what} {value}", NTStatus.INVALID_PARAMETER)
    return value


@dataclass(frozen=True, slots=True)
class BasicInformation:
    """FileBasicInformation as SET_INFO gives it ([MS-FSCC] 2.4.7): a time of 0 means "leave
    it", -1 "stop updating it for this handle", -2 "resume updating"; attributes 0 "leave them"."""

    creation_time: int = 0
    last_access_time: int = 0
    last_write_time: int = 0
    change_time: int = 0
    attributes: int = 0

    def encode(self) -> bytes:
        return FileBasicInformation(
            self.creation_time, self.last_access_time, self.last_write_time, self.change_time,
            self.attributes, 0,
        ).to_bytes()  # fmt: skip

    @classmethod
    def decode(cls, buf: Buffer) -> BasicInformation:
        f = FileBasicInformation.decode(_fixed(buf, FileBasicInformation.SIZE, "FileBasicInformation"))
        times = (f.creation_time, f.last_access_time, f.last_write_time, f.change_time)
        if min(times) < TIME_RESUME_UPDATES:
            raise RemoteProtocolError(f"FileBasicInformation time {min(times)}", NTStatus.INVALID_PARAMETER)
        return cls(*times, f.file_attributes)

    @staticmethod
    def new_time(value: int) -> int | None:
        """The FILETIME to set, or None when ``value`` asks for no change (0, -1, -2)."""
        return value if value > 0 else None


@dataclass(frozen=True, slots=True)
class EndOfFileInformation:
    """[MS-FSCC] 2.4.13 FileEndOfFileInformation"""

    end_of_file: int

    def encode(self) -> bytes:
        return _I64.pack(self.end_of_file)

    @classmethod
    def decode(cls, buf: Buffer) -> EndOfFileInformation:
        (value,) = _I64.unpack(_fixed(buf, 8, "FileEndOfFileInformation"))
        return cls(_non_negative(value, "EndOfFile"))


@dataclass(frozen=True, slots=True)
class AllocationInformation:
    """[MS-FSCC] 2.4.4 FileAllocationInformation"""

    allocation_size: int

    def encode(self) -> bytes:
        return _I64.pack(self.allocation_size)

    @classmethod
    def decode(cls, buf: Buffer) -> AllocationInformation:
        (value,) = _I64.unpack(_fixed(buf, 8, "FileAllocationInformation"))
        return cls(_non_negative(value, "AllocationSize"))


@dataclass(frozen=True, slots=True)
class DispositionInformation:
    """[MS-FSCC] 2.4.11 FileDispositionInformation: DeletePending, any non-zero byte is TRUE."""

    delete_pending: bool

    def encode(self) -> bytes:
        return bytes([int(self.delete_pending)])

    @classmethod
    def decode(cls, buf: Buffer) -> DispositionInformation:
        return cls(bool(_fixed(buf, 1, "FileDispositionInformation")[0]))


class DispositionFlags(IntFlag):
    """[MS-FSCC] 2.4 FileDispositionInformationEx Flags."""

    DO_NOT_DELETE = 0x00000000
    DELETE = 0x00000001
    POSIX_SEMANTICS = 0x00000002
    FORCE_IMAGE_SECTION_CHECK = 0x00000004
    ON_CLOSE = 0x00000008
    IGNORE_READONLY_ATTRIBUTE = 0x00000010


@dataclass(frozen=True, slots=True)
class DispositionInformationEx:
    """[MS-FSCC] 2.4 FileDispositionInformationEx (class 64): a 32-bit Flags field."""

    flags: int

    @property
    def delete(self) -> bool:
        return bool(self.flags & DispositionFlags.DELETE)

    def encode(self) -> bytes:
        return _U32.pack(self.flags)

    @classmethod
    def decode(cls, buf: Buffer) -> DispositionInformationEx:
        (flags,) = _U32.unpack(_fixed(buf, 4, "FileDispositionInformationEx"))
        return cls(flags)


@structure
@dataclass(frozen=True, slots=True)
class _RenameFixed(Structure):
    replace_if_exists: int = u8()
    reserved1: int = u8()
    reserved2: int = u16()
    reserved3: int = u32()
    root_directory: int = u64()
    file_name_length: int = u32()


#: Longest rename target accepted (MS-FSCC 2.1.5: 32767 UTF-16 code units).
MAX_RENAME_NAME_BYTES = 2 * 32767


@dataclass(frozen=True, slots=True)
class RenameInformation:
    """[MS-FSCC] 2.4.34.2 FileRenameInformation for SMB2 (FILE_RENAME_INFORMATION_TYPE_2):
    ReplaceIfExists(1) Reserved(7) RootDirectory(8) FileNameLength(4) FileName (UTF-16LE).

    ``file_name`` is the new path relative to the share root. RootDirectory MUST be zero for
    network operations (MS-FSCC: STATUS_INVALID_PARAMETER otherwise).
    """

    replace_if_exists: bool
    file_name: str

    def encode(self) -> bytes:
        name = self.file_name.encode("utf-16-le")
        return _RenameFixed(int(self.replace_if_exists), 0, 0, 0, 0, len(name)).to_bytes() + name

    @classmethod
    def decode(cls, buf: Buffer) -> RenameInformation:
        f = _RenameFixed.decode(_fixed(buf, _RenameFixed.SIZE, "FileRenameInformation"))
        if f.root_directory:
            raise RemoteProtocolError(
                "FileRenameInformation with a RootDirectory", NTStatus.INVALID_PARAMETER
            )
        if not f.file_name_length or f.file_name_length > MAX_RENAME_NAME_BYTES:
            raise RemoteProtocolError(
                f"FileRenameInformation FileNameLength {f.file_name_length}", NTStatus.INVALID_PARAMETER
            )
        if _RenameFixed.SIZE + f.file_name_length > len(buf):
            raise RemoteProtocolError(
                f"FileRenameInformation name of {f.file_name_length} bytes past the buffer",
                NTStatus.INVALID_PARAMETER,
            )
        name = read_utf16(buf, _RenameFixed.SIZE, f.file_name_length, "FileRenameInformation FileName")
        return cls(bool(f.replace_if_exists), name)


@dataclass(frozen=True, slots=True)
class PositionInformation:
    """[MS-FSCC] 2.4.32 FilePositionInformation"""

    current_byte_offset: int

    def encode(self) -> bytes:
        return _I64.pack(self.current_byte_offset)

    @classmethod
    def decode(cls, buf: Buffer) -> PositionInformation:
        (value,) = _I64.unpack(_fixed(buf, 8, "FilePositionInformation"))
        return cls(_non_negative(value, "CurrentByteOffset"))


#: The Mode bits SET_INFO may carry ([MS-FSA], setting FileModeInformation: others are
#: STATUS_INVALID_PARAMETER).
SETTABLE_MODE = (
    FileMode.WRITE_THROUGH
    | FileMode.SEQUENTIAL_ONLY
    | FileMode.SYNCHRONOUS_IO_ALERT
    | FileMode.SYNCHRONOUS_IO_NONALERT
)


@dataclass(frozen=True, slots=True)
class ModeInformation:
    """[MS-FSCC] 2.4.24 FileModeInformation"""

    mode: int

    def encode(self) -> bytes:
        return _U32.pack(self.mode)

    @classmethod
    def decode(cls, buf: Buffer) -> ModeInformation:
        (mode,) = _U32.unpack(_fixed(buf, 4, "FileModeInformation"))
        if mode & ~SETTABLE_MODE:
            raise RemoteProtocolError(f"FileModeInformation Mode {mode:#x}", NTStatus.INVALID_PARAMETER)
        return cls(mode)


# -- extended attributes ([MS-FSCC] 2.4.15) -----------------------------------------------------

#: [MS-ERREF] 2.3.1 statuses of EA handling (not in :class:`~smbcore.ntstatus.NTStatus`).
STATUS_INVALID_EA_NAME = 0x80000013
STATUS_NO_EAS_ON_FILE = 0xC0000052
STATUS_EA_TOO_LARGE = 0xC0000050
STATUS_EAS_NOT_SUPPORTED = 0xC000004F
FILE_NEED_EA = 0x80
_FULL_EA_HEAD = struct.Struct("<IBBH")
#: Characters an EA name may not hold ([MS-FSCC] 2.4.15: those invalid in file names, and
#: the ASCII control characters).
_EA_NAME_INVALID = frozenset('"*+,/:;<=>?[\\]|') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
#: Most EAs one FILE_FULL_EA_INFORMATION list may hold before the decoder calls it abuse.
MAX_EAS = 4096


@dataclass(frozen=True, slots=True)
class FullEa:
    """One extended attribute: an ASCII name (1-255 bytes, compared case-insensitively and
    kept upper-cased, as NTFS keeps them), a value of up to 65535 bytes, and Flags
    (FILE_NEED_EA or 0). An empty value in a SET means "remove this EA"."""

    name: str
    value: bytes = b""
    flags: int = 0

    def entry(self) -> bytes:
        name = self.name.encode("ascii")
        return _FULL_EA_HEAD.pack(0, self.flags, len(name), len(self.value)) + name + b"\x00" + self.value


def check_ea_name(name: str) -> str:
    """``name`` upper-cased, or STATUS_INVALID_EA_NAME ([MS-FSA] 2.1.5.15 FileFullEaInformation)."""
    if not name or len(name) > 255 or not name.isascii() or any(c in _EA_NAME_INVALID for c in name):
        raise RemoteProtocolError(f"EA name {name!r}", STATUS_INVALID_EA_NAME)
    return name.upper()


def encode_full_ea(eas: Iterable[FullEa], max_bytes: int | None = None) -> tuple[bytes, int]:
    """FILE_FULL_EA_INFORMATION entries, each starting on a 4-byte boundary, the last with
    NextEntryOffset 0: as many of ``eas`` as fit in ``max_bytes`` (all when None). Returns
    the bytes and how many EAs they hold."""
    out = bytearray()
    last = -1
    count = 0
    for ea in eas:
        entry = ea.entry()
        start = -(-len(out) // 4) * 4 if count else 0
        if max_bytes is not None and start + len(entry) > max_bytes:
            break
        if count:
            out += bytes(start - len(out))
            _U32.pack_into(out, last, start - last)
        out += entry
        last = start
        count += 1
    return bytes(out), count


def ea_size(eas: Iterable[FullEa]) -> int:
    """FileEaInformation.EaSize: the length of the EAs as a FILE_FULL_EA_INFORMATION list
    (0 when there are none), what a client allocates to read them all."""
    return len(encode_full_ea(eas)[0])


def decode_full_ea(buf: Buffer) -> list[FullEa]:
    """A FILE_FULL_EA_INFORMATION list (SET_INFO FileFullEaInformation, the CREATE ``ExtA``
    context). Bounds are checked before every read; a name that is not valid ASCII, or
    whose terminating NUL is missing, is STATUS_INVALID_EA_NAME."""
    eas: list[FullEa] = []
    pos = 0
    view = memoryview(buf)
    while True:
        if pos + _FULL_EA_HEAD.size > len(view):
            raise _length_mismatch("FILE_FULL_EA_INFORMATION", pos + _FULL_EA_HEAD.size, len(view))
        nxt, flags, name_len, value_len = _FULL_EA_HEAD.unpack_from(view, pos)
        name_at = pos + _FULL_EA_HEAD.size
        end = name_at + name_len + 1 + value_len
        if end > len(view) or (nxt and pos + nxt < end):
            raise RemoteProtocolError(
                f"FILE_FULL_EA_INFORMATION entry at {pos} of {end - pos} bytes", NTStatus.INVALID_PARAMETER
            )
        if view[name_at + name_len] != 0:
            raise RemoteProtocolError("EA name without its NUL", STATUS_INVALID_EA_NAME)
        try:
            name = bytes(view[name_at : name_at + name_len]).decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("EA name is not ASCII", STATUS_INVALID_EA_NAME) from None
        eas.append(
            FullEa(check_ea_name(name), bytes(view[name_at + name_len + 1 : end]), flags & FILE_NEED_EA)
        )
        if nxt == 0:
            return eas
        if len(eas) >= MAX_EAS:
            raise RemoteProtocolError("too many EAs", NTStatus.INVALID_PARAMETER)
        pos += nxt


@dataclass(frozen=True, slots=True)
class FullEaInformation:
    """SET_INFO FileFullEaInformation ([MS-FSCC] 2.4.15): EAs to set, an empty value
    removing one."""

    eas: tuple[FullEa, ...]

    def encode(self) -> bytes:
        return encode_full_ea(self.eas)[0]

    @classmethod
    def decode(cls, buf: Buffer) -> FullEaInformation:
        return cls(tuple(decode_full_ea(buf)))


SetFileInfo = (
    BasicInformation
    | EndOfFileInformation
    | AllocationInformation
    | DispositionInformation
    | DispositionInformationEx
    | RenameInformation
    | PositionInformation
    | ModeInformation
    | FullEaInformation
)

_SET_DECODERS: dict[int, Any] = {
    FileInfoClass.BASIC: BasicInformation.decode,
    FileInfoClass.END_OF_FILE: EndOfFileInformation.decode,
    FileInfoClass.ALLOCATION: AllocationInformation.decode,
    FileInfoClass.DISPOSITION: DispositionInformation.decode,
    FileInfoClass.DISPOSITION_EX: DispositionInformationEx.decode,
    FileInfoClass.RENAME: RenameInformation.decode,
    FileInfoClass.POSITION: PositionInformation.decode,
    FileInfoClass.MODE: ModeInformation.decode,
    FileInfoClass.FULL_EA: FullEaInformation.decode,
}

#: Settable per [MS-FSCC] 2.4 but not here: STATUS_NOT_SUPPORTED (MS-SMB2 3.3.5.21.1).
_SET_NOT_SUPPORTED = frozenset(
    {
        FileInfoClass.LINK,
        FileInfoClass.PIPE,
        FileInfoClass.OBJECT_ID,
        FileInfoClass.QUOTA,
        FileInfoClass.VALID_DATA_LENGTH,
        FileInfoClass.SHORT_NAME,
        FileInfoClass.RENAME_EX,
    }
)


def decode_set_file_info(info_class: int, buf: Buffer) -> SetFileInfo:
    """A SET_INFO (SMB2_0_INFO_FILE) buffer for ``info_class``."""
    decoder = _SET_DECODERS.get(info_class)
    if decoder is None:
        status = NTStatus.NOT_SUPPORTED if info_class in _SET_NOT_SUPPORTED else NTStatus.INVALID_INFO_CLASS
        raise InfoClassError("SET_INFO file", info_class, status)
    result: SetFileInfo = decoder(buf)
    return result


# -- query: file system information classes ([MS-FSCC] 2.5) ------------------------------------


class FsAttributes(IntFlag):
    """[MS-FSCC] 2.5.1 FileFsAttributeInformation FileSystemAttributes."""

    CASE_SENSITIVE_SEARCH = 0x00000001
    CASE_PRESERVED_NAMES = 0x00000002
    UNICODE_ON_DISK = 0x00000004
    PERSISTENT_ACLS = 0x00000008
    FILE_COMPRESSION = 0x00000010
    VOLUME_QUOTAS = 0x00000020
    SUPPORTS_SPARSE_FILES = 0x00000040
    SUPPORTS_REPARSE_POINTS = 0x00000080
    SUPPORTS_OBJECT_IDS = 0x00010000
    NAMED_STREAMS = 0x00040000
    READ_ONLY_VOLUME = 0x00080000
    SUPPORTS_HARD_LINKS = 0x00400000
    SUPPORTS_EXTENDED_ATTRIBUTES = 0x00800000


#: What a POSIX directory tree served by :mod:`smbcore.fs` offers before its extended attributes
#: are known (they add EAs, ACLs and named streams): names kept as given, in Unicode (an
#: :class:`~smbcore.fs.FsShare` matches them case-insensitively unless told otherwise). No sparse
#: or reparse support.
POSIX_FS_ATTRIBUTES = (
    FsAttributes.CASE_SENSITIVE_SEARCH | FsAttributes.CASE_PRESERVED_NAMES | FsAttributes.UNICODE_ON_DISK
)

FILE_DEVICE_DISK = 0x00000007
FILE_READ_ONLY_DEVICE = 0x00000002
FILE_DEVICE_IS_MOUNTED = 0x00000020
SSINFO_FLAGS_ALIGNED_DEVICE = 0x00000001
SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE = 0x00000002
BYTES_PER_SECTOR = 512


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    """A volume in plain integers, from ``os.statvfs``: ``block_size`` is ``f_frsize``,
    ``total_blocks`` ``f_blocks``, ``free_blocks`` ``f_bfree`` and ``available_blocks``
    ``f_bavail`` (what the caller may use).

    ``fs_name`` is "NTFS", as Samba reports by default (its ``fstype``): Windows clients and
    applications test for it before using features the name implies they may rely on; the
    attributes, not the name, say what is supported.
    """

    block_size: int
    total_blocks: int
    free_blocks: int
    available_blocks: int
    label: str = ""
    serial_number: int = 0
    creation_time: int = 0
    object_id: bytes = bytes(16)
    read_only: bool = False
    max_component_length: int = 255
    fs_name: str = "NTFS"
    fs_attributes: int = POSIX_FS_ATTRIBUTES

    def units(self) -> tuple[int, int]:
        """(SectorsPerAllocationUnit, BytesPerSector): 512-byte sectors when the block is a multiple."""
        size = self.block_size if self.block_size > 0 else BYTES_PER_SECTOR
        if size % BYTES_PER_SECTOR == 0:
            return size // BYTES_PER_SECTOR, BYTES_PER_SECTOR
        return 1, size


def encode_fs_volume(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.9 FileFsVolumeInformation"""
    label = v.label.encode("utf-16-le")
    return (
        _I64.pack(_clamp64(v.creation_time))
        + _U32.pack(v.serial_number & 0xFFFFFFFF)
        + _U32.pack(len(label))
        + bytes([0, 0])  # SupportsObjects FALSE, Reserved
        + label
    )


def encode_fs_size(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.8 FileFsSizeInformation"""
    spu, bps = v.units()
    return struct.pack("<qqII", _clamp64(v.total_blocks), _clamp64(v.available_blocks), spu, bps)


def encode_fs_full_size(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.4 FileFsFullSizeInformation"""
    spu, bps = v.units()
    return struct.pack(
        "<qqqII", _clamp64(v.total_blocks), _clamp64(v.available_blocks), _clamp64(v.free_blocks), spu, bps
    )


def encode_fs_device(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.10 FileFsDeviceInformation: a mounted disk (read-only when the share is)."""
    characteristics = FILE_DEVICE_IS_MOUNTED | (FILE_READ_ONLY_DEVICE if v.read_only else 0)
    return struct.pack("<II", FILE_DEVICE_DISK, characteristics)


def encode_fs_attribute(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.1 FileFsAttributeInformation"""
    name = v.fs_name.encode("utf-16-le")
    attrs = v.fs_attributes | (FsAttributes.READ_ONLY_VOLUME if v.read_only else 0)
    return struct.pack("<III", attrs, v.max_component_length, len(name)) + name


def encode_fs_sector_size(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.7 FileFsSectorSizeInformation: every sector size the BytesPerSector, aligned."""
    _, bps = v.units()
    flags = SSINFO_FLAGS_ALIGNED_DEVICE | SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE
    return struct.pack("<IIIIIII", bps, bps, bps, bps, flags, 0, 0)


def encode_fs_control(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.2 FileFsControlInformation: no content-indexing filter thresholds and no
    quotas (FileSystemControlFlags 0, FILE_VC_QUOTA_NONE; the default threshold and limit -1,
    "no limit")."""
    del v
    return struct.pack("<qqqqqII", 0, 0, 0, -1, -1, 0, 0)


def encode_fs_object_id(v: VolumeInfo) -> bytes:
    """[MS-FSCC] 2.5.6 FileFsObjectIdInformation: ObjectId(16), ExtendedInfo(48) zero."""
    return (v.object_id + bytes(16))[:16] + bytes(48)


FS_INFO_MIN_SIZE: dict[int, int] = {
    FsInfoClass.VOLUME: 24,
    FsInfoClass.SIZE: 24,
    FsInfoClass.DEVICE: 8,
    FsInfoClass.ATTRIBUTE: 16,
    FsInfoClass.CONTROL: 48,
    FsInfoClass.FULL_SIZE: 32,
    FsInfoClass.OBJECT_ID: 64,
    FsInfoClass.SECTOR_SIZE: 28,
}

_FS_ENCODERS = {
    FsInfoClass.VOLUME: encode_fs_volume,
    FsInfoClass.SIZE: encode_fs_size,
    FsInfoClass.DEVICE: encode_fs_device,
    FsInfoClass.ATTRIBUTE: encode_fs_attribute,
    FsInfoClass.CONTROL: encode_fs_control,
    FsInfoClass.FULL_SIZE: encode_fs_full_size,
    FsInfoClass.OBJECT_ID: encode_fs_object_id,
    FsInfoClass.SECTOR_SIZE: encode_fs_sector_size,
}


def encode_fs_info(info_class: int, volume: VolumeInfo) -> bytes:
    """QUERY_INFO (SMB2_0_INFO_FILESYSTEM) output for ``info_class``."""
    try:
        encoder = _FS_ENCODERS[FsInfoClass(info_class)]
    except (ValueError, KeyError):
        known = info_class in {c.value for c in FsInfoClass}
        status = NTStatus.NOT_SUPPORTED if known else NTStatus.INVALID_INFO_CLASS
        raise InfoClassError("QUERY_INFO file system", info_class, status) from None
    return encoder(volume)


# -- directory enumeration ([MS-FSCC] 2.4: QUERY_DIRECTORY) -------------------------------------

#: The enumeration classes QUERY_DIRECTORY answers, with the fixed size of one entry.
DIRECTORY_CLASSES: dict[int, int] = {
    FileInfoClass.DIRECTORY: 64,  # 2.4.10 FileDirectoryInformation
    FileInfoClass.FULL_DIRECTORY: 68,  # 2.4.14 FileFullDirectoryInformation
    FileInfoClass.BOTH_DIRECTORY: 94,  # 2.4.8 FileBothDirectoryInformation
    FileInfoClass.NAMES: 12,  # 2.4.26 FileNamesInformation
    FileInfoClass.ID_BOTH_DIRECTORY: 104,  # 2.4.17 FileIdBothDirectoryInformation
    FileInfoClass.ID_FULL_DIRECTORY: 80,  # 2.4.18 FileIdFullDirectoryInformation
}

#: NextEntryOffset, FileIndex, 4 times, EndOfFile, AllocationSize, FileAttributes, FileNameLength.
_DIR_COMMON = struct.Struct("<IIqqqqqqII")
_NAMES_HEAD = struct.Struct("<III")
SHORT_NAME_BYTES = 24


def _short_field(text: str) -> bytes:
    if text in (".", "..") or is_8dot3(text):
        return bytes(1 + 1 + SHORT_NAME_BYTES)  # ShortNameLength, Reserved1, ShortName
    short = short_name(text).encode("utf-16-le")
    return bytes([len(short), 0]) + short + bytes(SHORT_NAME_BYTES - len(short))


def _directory_entry(info_class: int, name: bytes, st: FileStat) -> bytearray:
    """One entry with NextEntryOffset 0 (patched when another follows). FileIndex is 0: its
    position in the directory is not fixed (MS-FSCC: SHOULD be 0 then). The Both classes
    carry the :func:`short_name` of a name that is not 8.3 already (empty for one that is,
    and for ``.`` and ``..``, as NTFS)."""
    if info_class == FileInfoClass.NAMES:
        return bytearray(_NAMES_HEAD.pack(0, 0, len(name)) + name)
    out = bytearray(
        _DIR_COMMON.pack(
            0, 0, st.creation_time, st.last_access_time, st.last_write_time, st.change_time,
            _clamp64(st.end_of_file), _clamp64(st.allocation_size), int(st.attributes), len(name),
        )
    )  # fmt: skip
    file_id = _U64.pack(st.file_index & 0xFFFFFFFFFFFFFFFF)
    if info_class == FileInfoClass.FULL_DIRECTORY:
        out += _U32.pack(st.ea_size)
    elif info_class == FileInfoClass.ID_FULL_DIRECTORY:
        out += _U32.pack(st.ea_size) + bytes(4) + file_id
    elif info_class == FileInfoClass.BOTH_DIRECTORY:
        out += _U32.pack(st.ea_size) + _short_field(name.decode("utf-16-le"))
    elif info_class == FileInfoClass.ID_BOTH_DIRECTORY:
        out += _U32.pack(st.ea_size) + _short_field(name.decode("utf-16-le")) + bytes(2) + file_id
    out += name
    return out


def encode_directory_entries(
    info_class: int, entries: Iterable[tuple[str, FileStat]], max_bytes: int, single: bool = False
) -> tuple[bytes, int]:
    """QUERY_DIRECTORY output: as many of ``entries`` as fit in ``max_bytes`` (just one when
    ``single``), each starting on an 8-byte boundary, the last with NextEntryOffset 0 and no
    padding after it. Returns the bytes and how many entries they hold: entries after that
    (an iterator has consumed one more, the one that did not fit) are for the next call.
    ``(b"", 0)`` when not even the first fits: the caller answers as MS-SMB2 3.3.5.18 says.
    """
    if info_class not in DIRECTORY_CLASSES:
        raise InfoClassError("QUERY_DIRECTORY", info_class)
    out = bytearray()
    last = -1
    count = 0
    for name, st in entries:
        entry = _directory_entry(info_class, name.encode("utf-16-le"), st)
        start = align8(len(out)) if count else 0
        if start + len(entry) > max_bytes:
            break
        if count:
            out += bytes(start - len(out))
            _U32.pack_into(out, last, start - last)
        out += entry
        last = start
        count += 1
        if single:
            break
    return bytes(out), count


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One decoded QUERY_DIRECTORY entry (fields a class lacks are 0 / empty)."""

    name: str
    file_index: int = 0
    creation_time: int = 0
    last_access_time: int = 0
    last_write_time: int = 0
    change_time: int = 0
    end_of_file: int = 0
    allocation_size: int = 0
    attributes: int = 0
    ea_size: int = 0
    short_name: str = ""
    file_id: int = 0


#: Most entries one QUERY_DIRECTORY output may hold before the decoder calls it abuse.
MAX_DECODED_ENTRIES = 1 << 16


def decode_directory_entries(info_class: int, buf: Buffer) -> list[DirectoryEntry]:
    """QUERY_DIRECTORY output back into entries (for clients and tests)."""
    fixed = DIRECTORY_CLASSES.get(info_class)
    if fixed is None:
        raise InfoClassError("QUERY_DIRECTORY", info_class)
    entries: list[DirectoryEntry] = []
    pos = 0
    while True:
        head = read_bytes(buf, pos, fixed, "directory entry")
        if info_class == FileInfoClass.NAMES:
            nxt, index, name_len = _NAMES_HEAD.unpack_from(head)
            name = read_utf16(buf, pos + fixed, name_len, "directory entry name")
            entries.append(DirectoryEntry(name, index))
        else:
            nxt, index, ctime, atime, wtime, chtime, eof, alloc, attrs, name_len = _DIR_COMMON.unpack_from(
                head
            )
            ea = short_len = file_id = 0
            short = ""
            if info_class != FileInfoClass.DIRECTORY:
                (ea,) = _U32.unpack_from(head, 64)
            if info_class == FileInfoClass.ID_FULL_DIRECTORY:
                (file_id,) = _U64.unpack_from(head, 72)
            if info_class in (FileInfoClass.BOTH_DIRECTORY, FileInfoClass.ID_BOTH_DIRECTORY):
                short_len = head[68]
                if short_len > SHORT_NAME_BYTES:
                    raise RemoteProtocolError(f"ShortNameLength {short_len}")
                short = read_utf16(head, 70, short_len, "short name")
            if info_class == FileInfoClass.ID_BOTH_DIRECTORY:
                (file_id,) = _U64.unpack_from(head, 96)
            name = read_utf16(buf, pos + fixed, name_len, "directory entry name")
            entries.append(
                DirectoryEntry(
                    name, index, ctime, atime, wtime, chtime, eof, alloc, attrs, ea, short, file_id
                )
            )
        if nxt == 0:
            return entries
        if len(entries) >= MAX_DECODED_ENTRIES:
            raise RemoteProtocolError("too many directory entries")
        pos += nxt
