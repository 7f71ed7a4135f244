"""SMB2 file-operation message bodies (MS-SMB2 2.2.13 - 2.2.22, 2.2.26, 2.2.33 - 2.2.40).

Requests decode from the whole message (offsets count from the header); responses encode
to the bytes after the header. READ and WRITE payloads stay ``memoryview`` slices of the
received message: nothing here copies file data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import RemoteProtocolError
from .header import HEADER_SIZE
from .ntstatus import NTStatus
from .wire import (
    Buffer,
    Structure,
    align8,
    check_structure_size,
    raw,
    read_bytes,
    read_utf16,
    structure,
    u8,
    u16,
    u32,
    u64,
)

FILE_ID_SIZE = 16
#: Most create contexts one CREATE may carry before we call it abuse.
MAX_CREATE_CONTEXTS = 32
MAX_NAME_BYTES = 2 * 32767


class CreateDisposition(IntEnum):
    SUPERSEDE = 0
    OPEN = 1
    CREATE = 2
    OPEN_IF = 3
    OVERWRITE = 4
    OVERWRITE_IF = 5


class CreateOptions(IntFlag):
    DIRECTORY_FILE = 0x00000001
    WRITE_THROUGH = 0x00000002
    SEQUENTIAL_ONLY = 0x00000004
    NON_DIRECTORY_FILE = 0x00000040
    DELETE_ON_CLOSE = 0x00001000
    OPEN_REPARSE_POINT = 0x00200000


class CreateAction(IntEnum):
    SUPERSEDED = 0
    OPENED = 1
    CREATED = 2
    OVERWRITTEN = 3


# -- CREATE (2.2.13, 2.2.14) ------------------------------------------------------------------


@structure
@dataclass(frozen=True, slots=True)
class _CreateRequestFixed(Structure):
    structure_size: int = u16(57)
    security_flags: int = u8(0)
    oplock_level: int = u8(0)
    impersonation_level: int = u32(0)
    create_flags: int = u64(0)
    reserved: int = u64(0)
    desired_access: int = u32(0)
    file_attributes: int = u32(0)
    share_access: int = u32(0)
    disposition: int = u32(0)
    options: int = u32(0)
    name_offset: int = u16(0)
    name_length: int = u16(0)
    contexts_offset: int = u32(0)
    contexts_length: int = u32(0)


@structure
@dataclass(frozen=True, slots=True)
class _CreateContextHeader(Structure):
    """MS-SMB2 2.2.13.2"""

    next: int = u32(0)
    name_offset: int = u16(0)
    name_length: int = u16(0)
    reserved: int = u16(0)
    data_offset: int = u16(0)
    data_length: int = u32(0)


@dataclass(frozen=True, slots=True)
class CreateContext:
    name: bytes
    data: bytes


def encode_create_contexts(contexts: tuple[CreateContext, ...]) -> bytes:
    out = bytearray()
    for i, ctx in enumerate(contexts):
        start = len(out)
        name_offset = _CreateContextHeader.SIZE
        data_offset = align8(name_offset + len(ctx.name)) if ctx.data else 0
        end = (data_offset + len(ctx.data)) if ctx.data else name_offset + len(ctx.name)
        nxt = align8(end) if i < len(contexts) - 1 else 0
        out += _CreateContextHeader(nxt, name_offset, len(ctx.name), 0, data_offset, len(ctx.data)).to_bytes()
        out += ctx.name
        if ctx.data:
            out += bytes(start + data_offset - len(out)) + ctx.data
        if nxt:
            out += bytes(start + nxt - len(out))
    return bytes(out)


def decode_create_contexts(msg: Buffer, offset: int, length: int) -> tuple[CreateContext, ...]:
    area = read_bytes(msg, offset, length, "CREATE contexts")
    contexts: list[CreateContext] = []
    pos = 0
    while length:
        h = _CreateContextHeader.decode(area, pos)
        if h.name_length < 4:  # every tag is 4 bytes or more; Windows refuses shorter ones
            raise RemoteProtocolError(
                f"create context name of {h.name_length} bytes", NTStatus.INVALID_PARAMETER
            )
        name = bytes(read_bytes(area, pos + h.name_offset, h.name_length, "create context name"))
        data = (
            bytes(read_bytes(area, pos + h.data_offset, h.data_length, "create context data"))
            if h.data_length
            else b""
        )
        contexts.append(CreateContext(name, data))
        if len(contexts) > MAX_CREATE_CONTEXTS:
            raise RemoteProtocolError("too many create contexts")
        if h.next == 0:
            break
        if h.next % 8 or h.next < _CreateContextHeader.SIZE:
            raise RemoteProtocolError(f"create context Next {h.next}")
        pos += h.next
    return tuple(contexts)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """MS-SMB2 2.2.13; ``name`` is relative to the share, backslash-separated."""

    desired_access: int
    file_attributes: int
    share_access: int
    disposition: int
    options: int
    name: str
    contexts: tuple[CreateContext, ...] = ()
    oplock_level: int = 0
    impersonation_level: int = 2

    def encode(self) -> bytes:
        name = self.name.encode("utf-16-le")
        name_offset = HEADER_SIZE + _CreateRequestFixed.SIZE
        ctx = encode_create_contexts(self.contexts)
        ctx_offset = align8(name_offset + max(len(name), 1)) if ctx else 0  # an empty name still has a byte
        fixed = _CreateRequestFixed(
            57, 0, self.oplock_level, self.impersonation_level, 0, 0, self.desired_access,
            self.file_attributes, self.share_access, self.disposition, self.options,
            name_offset, len(name), ctx_offset, len(ctx),
        )  # fmt: skip
        body = fixed.to_bytes() + (name or b"\x00")
        if ctx:
            body += bytes(ctx_offset - HEADER_SIZE - len(body)) + ctx
        return body

    @classmethod
    def decode(cls, msg: Buffer) -> CreateRequest:
        f = _CreateRequestFixed.decode(msg, HEADER_SIZE)
        check_structure_size("CREATE request", f.structure_size, 57)
        if f.name_length > MAX_NAME_BYTES:
            raise RemoteProtocolError(f"CREATE name of {f.name_length} bytes", NTStatus.OBJECT_NAME_INVALID)
        name = read_utf16(msg, f.name_offset, f.name_length, "CREATE name") if f.name_length else ""
        try:
            disposition = CreateDisposition(f.disposition)
        except ValueError:
            raise RemoteProtocolError(f"CreateDisposition {f.disposition}") from None
        contexts = (
            decode_create_contexts(msg, f.contexts_offset, f.contexts_length) if f.contexts_length else ()
        )
        return cls(
            f.desired_access, f.file_attributes, f.share_access, disposition, f.options, name, contexts,
            f.oplock_level, f.impersonation_level,
        )  # fmt: skip


@structure
@dataclass(frozen=True, slots=True)
class FileTimes(Structure):
    """The times, sizes and attributes CREATE and CLOSE responses report (FILETIME, bytes)."""

    creation_time: int = u64(0)
    last_access_time: int = u64(0)
    last_write_time: int = u64(0)
    change_time: int = u64(0)
    allocation_size: int = u64(0)
    end_of_file: int = u64(0)
    file_attributes: int = u32(0)


@structure
@dataclass(frozen=True, slots=True)
class _CreateResponseHead(Structure):
    structure_size: int = u16(89)
    oplock_level: int = u8(0)
    flags: int = u8(0)
    create_action: int = u32(0)


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """MS-SMB2 2.2.14"""

    create_action: int
    times: FileTimes
    file_id: bytes
    contexts: tuple[CreateContext, ...] = ()
    oplock_level: int = 0

    def encode(self) -> bytes:
        ctx = encode_create_contexts(self.contexts)
        fixed_size = _CreateResponseHead.SIZE + FileTimes.SIZE + 4 + FILE_ID_SIZE + 8
        ctx_offset = HEADER_SIZE + fixed_size if ctx else 0
        out = bytearray(_CreateResponseHead(89, self.oplock_level, 0, self.create_action).to_bytes())
        out += self.times.to_bytes() + bytes(4) + self.file_id
        out += ctx_offset.to_bytes(4, "little") + len(ctx).to_bytes(4, "little")
        out += ctx or b"\x00"
        return bytes(out)

    @classmethod
    def decode(cls, msg: Buffer) -> CreateResponse:
        head = _CreateResponseHead.decode(msg, HEADER_SIZE)
        check_structure_size("CREATE response", head.structure_size, 89)
        pos = HEADER_SIZE + _CreateResponseHead.SIZE
        times = FileTimes.decode(msg, pos)
        pos += FileTimes.SIZE + 4
        file_id = bytes(read_bytes(msg, pos, FILE_ID_SIZE, "FileId"))
        ctx_offset = int.from_bytes(read_bytes(msg, pos + 16, 4, "CreateContextsOffset"), "little")
        ctx_length = int.from_bytes(read_bytes(msg, pos + 20, 4, "CreateContextsLength"), "little")
        contexts = decode_create_contexts(msg, ctx_offset, ctx_length) if ctx_length else ()
        return cls(head.create_action, times, file_id, contexts, head.oplock_level)


# -- CLOSE, FLUSH (2.2.15 - 2.2.18) -----------------------------------------------------------

CLOSE_FLAG_POSTQUERY_ATTRIB = 0x0001


@structure
@dataclass(frozen=True, slots=True)
class CloseRequest(Structure):
    structure_size: int = u16(24)
    flags: int = u16(0)
    reserved: int = u32(0)
    file_id: bytes = raw(FILE_ID_SIZE)

    @classmethod
    def parse(cls, msg: Buffer) -> CloseRequest:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size("CLOSE request", body.structure_size, 24)
        return body


def encode_close_response(flags: int, times: FileTimes | None) -> bytes:
    """MS-SMB2 2.2.16: the attributes only when POSTQUERY_ATTRIB was asked (and known)."""
    head = (60).to_bytes(2, "little") + (flags if times else 0).to_bytes(2, "little") + bytes(4)
    return head + (times.to_bytes() if times else bytes(FileTimes.SIZE))


def decode_close_response(msg: Buffer) -> FileTimes | None:
    """MS-SMB2 2.2.16 (for clients and tests): the attributes when POSTQUERY_ATTRIB was set, else None."""
    head = read_bytes(msg, HEADER_SIZE, 8, "CLOSE response")
    check_structure_size("CLOSE response", int.from_bytes(head[0:2], "little"), 60)
    times = FileTimes.decode(msg, HEADER_SIZE + 8)
    return times if int.from_bytes(head[2:4], "little") & CLOSE_FLAG_POSTQUERY_ATTRIB else None


@structure
@dataclass(frozen=True, slots=True)
class FlushRequest(Structure):
    structure_size: int = u16(24)
    reserved1: int = u16(0)
    reserved2: int = u32(0)
    file_id: bytes = raw(FILE_ID_SIZE)

    @classmethod
    def parse(cls, msg: Buffer) -> FlushRequest:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size("FLUSH request", body.structure_size, 24)
        return body


# -- READ, WRITE (2.2.19 - 2.2.22) ------------------------------------------------------------


class Channel(IntEnum):
    NONE = 0
    RDMA_V1 = 1
    RDMA_V1_INVALIDATE = 2
    RDMA_TRANSFORM = 3


@structure
@dataclass(frozen=True, slots=True)
class ReadRequest(Structure):
    """MS-SMB2 2.2.19 (fixed part; the channel info buffer, for SMB Direct, follows)."""

    structure_size: int = u16(49)
    padding: int = u8(0x50)
    flags: int = u8(0)
    length: int = u32(0)
    offset: int = u64(0)
    file_id: bytes = raw(FILE_ID_SIZE)
    minimum_count: int = u32(0)
    channel: int = u32(0)
    remaining_bytes: int = u32(0)
    channel_info_offset: int = u16(0)
    channel_info_length: int = u16(0)

    @classmethod
    def parse(cls, msg: Buffer) -> ReadRequest:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size("READ request", body.structure_size, 49)
        return body

    def channel_info(self, msg: Buffer) -> memoryview:
        """The SMB Direct buffer descriptors (MS-SMBD 2.2.3.1), empty for TCP."""
        return read_bytes(msg, self.channel_info_offset, self.channel_info_length, "ReadChannelInfo")


#: The READ response's fixed part (MS-SMB2 2.2.20): the data follows it.
READ_RESPONSE_HEAD_SIZE = 16
READ_DATA_OFFSET = HEADER_SIZE + READ_RESPONSE_HEAD_SIZE


def encode_read_response_head(data_length: int, data_remaining: int = 0) -> bytes:
    """MS-SMB2 2.2.20 without the data, which the caller appends (or sends by RDMA)."""
    return (
        (17).to_bytes(2, "little")
        + bytes([READ_DATA_OFFSET if data_length else 0, 0])
        + data_length.to_bytes(4, "little")
        + data_remaining.to_bytes(4, "little")
        + bytes(4)
    )


def decode_read_response(msg: Buffer) -> memoryview:
    """The data of a READ response (for clients and tests), a slice of ``msg``."""
    size = int.from_bytes(read_bytes(msg, HEADER_SIZE, 2, "READ response"), "little")
    check_structure_size("READ response", size, 17)
    offset = read_bytes(msg, HEADER_SIZE + 2, 1, "DataOffset")[0]
    length = int.from_bytes(read_bytes(msg, HEADER_SIZE + 4, 4, "DataLength"), "little")
    return read_bytes(msg, offset, length, "READ data")


@structure
@dataclass(frozen=True, slots=True)
class _WriteRequestFixed(Structure):
    structure_size: int = u16(49)
    data_offset: int = u16(0)
    length: int = u32(0)
    offset: int = u64(0)
    file_id: bytes = raw(FILE_ID_SIZE)
    channel: int = u32(0)
    remaining_bytes: int = u32(0)
    channel_info_offset: int = u16(0)
    channel_info_length: int = u16(0)
    flags: int = u32(0)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """MS-SMB2 2.2.21; ``data`` is a slice of the received message (empty over RDMA)."""

    offset: int
    file_id: bytes
    data: memoryview
    channel: int = Channel.NONE
    flags: int = 0
    channel_info: bytes = b""
    length: int = 0  # for RDMA: the length to pull; else len(data)

    @classmethod
    def decode(cls, msg: Buffer) -> WriteRequest:
        f = _WriteRequestFixed.decode(msg, HEADER_SIZE)
        check_structure_size("WRITE request", f.structure_size, 49)
        info = bytes(read_bytes(msg, f.channel_info_offset, f.channel_info_length, "WriteChannelInfo"))
        if f.channel == Channel.NONE:
            data = read_bytes(msg, f.data_offset, f.length, "WRITE data")
        else:
            data = memoryview(b"")
        return cls(f.offset, f.file_id, data, f.channel, f.flags, info, f.length)

    def encode_head(self) -> bytes:
        """The fixed part for a WRITE whose data follows at the usual offset (clients)."""
        length = len(self.data)
        return _WriteRequestFixed(
            49,
            HEADER_SIZE + _WriteRequestFixed.SIZE,
            length,
            self.offset,
            self.file_id,
            0,
            0,
            0,
            0,
            self.flags,
        ).to_bytes()


def encode_write_response(count: int) -> bytes:
    """MS-SMB2 2.2.22"""
    return (17).to_bytes(2, "little") + bytes(2) + count.to_bytes(4, "little") + bytes(8)


def decode_write_response(msg: Buffer) -> int:
    """MS-SMB2 2.2.22 (for clients and tests): Count, the bytes written."""
    head = read_bytes(msg, HEADER_SIZE, 8, "WRITE response")
    check_structure_size("WRITE response", int.from_bytes(head[0:2], "little"), 17)
    return int.from_bytes(head[4:8], "little")


# -- QUERY_DIRECTORY (2.2.33, 2.2.34), QUERY_INFO (2.2.37, 2.2.38), SET_INFO (2.2.39, 2.2.40) ---


class QueryDirectoryFlags(IntFlag):
    RESTART_SCANS = 0x01
    RETURN_SINGLE_ENTRY = 0x02
    INDEX_SPECIFIED = 0x04
    REOPEN = 0x10


@structure
@dataclass(frozen=True, slots=True)
class _QueryDirectoryFixed(Structure):
    structure_size: int = u16(33)
    info_class: int = u8(0)
    flags: int = u8(0)
    file_index: int = u32(0)
    file_id: bytes = raw(FILE_ID_SIZE)
    name_offset: int = u16(0)
    name_length: int = u16(0)
    output_length: int = u32(0)


@dataclass(frozen=True, slots=True)
class QueryDirectoryRequest:
    info_class: int
    flags: int
    file_id: bytes
    pattern: str
    output_length: int

    def encode(self) -> bytes:
        name = self.pattern.encode("utf-16-le")
        offset = HEADER_SIZE + _QueryDirectoryFixed.SIZE if name else 0
        fixed = _QueryDirectoryFixed(33, self.info_class, self.flags, 0, self.file_id, offset, len(name),
                                     self.output_length)  # fmt: skip
        return fixed.to_bytes() + (name or b"\x00")

    @classmethod
    def decode(cls, msg: Buffer) -> QueryDirectoryRequest:
        f = _QueryDirectoryFixed.decode(msg, HEADER_SIZE)
        check_structure_size("QUERY_DIRECTORY request", f.structure_size, 33)
        pattern = read_utf16(msg, f.name_offset, f.name_length, "search pattern") if f.name_length else ""
        return cls(f.info_class, f.flags, f.file_id, pattern, f.output_length)


def encode_output_buffer_response(data: bytes) -> bytes:
    """MS-SMB2 2.2.34 / 2.2.38: StructureSize 9, OutputBufferOffset, OutputBufferLength, data."""
    offset = HEADER_SIZE + 8 if data else 0
    return (
        (9).to_bytes(2, "little")
        + offset.to_bytes(2, "little")
        + len(data).to_bytes(4, "little")
        + (data or b"\x00")
    )


def decode_output_buffer_response(msg: Buffer) -> bytes:
    size = int.from_bytes(read_bytes(msg, HEADER_SIZE, 2, "response"), "little")
    check_structure_size("QUERY response", size, 9)
    offset = int.from_bytes(read_bytes(msg, HEADER_SIZE + 2, 2, "OutputBufferOffset"), "little")
    length = int.from_bytes(read_bytes(msg, HEADER_SIZE + 4, 4, "OutputBufferLength"), "little")
    return bytes(read_bytes(msg, offset, length, "output buffer")) if length else b""


class InfoType(IntEnum):
    FILE = 0x01
    FILESYSTEM = 0x02
    SECURITY = 0x03
    QUOTA = 0x04


@structure
@dataclass(frozen=True, slots=True)
class _QueryInfoFixed(Structure):
    structure_size: int = u16(41)
    info_type: int = u8(0)
    info_class: int = u8(0)
    output_length: int = u32(0)
    input_offset: int = u16(0)
    reserved: int = u16(0)
    input_length: int = u32(0)
    additional_information: int = u32(0)
    flags: int = u32(0)
    file_id: bytes = raw(FILE_ID_SIZE)


@dataclass(frozen=True, slots=True)
class QueryInfoRequest:
    info_type: int
    info_class: int
    output_length: int
    file_id: bytes
    additional_information: int = 0
    flags: int = 0
    input: bytes = b""

    def encode(self) -> bytes:
        offset = HEADER_SIZE + _QueryInfoFixed.SIZE if self.input else 0
        fixed = _QueryInfoFixed(
            41, self.info_type, self.info_class, self.output_length, offset, 0,
            len(self.input), self.additional_information, self.flags, self.file_id,
        )  # fmt: skip
        return fixed.to_bytes() + (self.input or b"\x00")

    @classmethod
    def decode(cls, msg: Buffer) -> QueryInfoRequest:
        f = _QueryInfoFixed.decode(msg, HEADER_SIZE)
        check_structure_size("QUERY_INFO request", f.structure_size, 41)
        data = (
            bytes(read_bytes(msg, f.input_offset, f.input_length, "QUERY_INFO input"))
            if f.input_length
            else b""
        )
        return cls(
            f.info_type, f.info_class, f.output_length, f.file_id, f.additional_information, f.flags, data
        )


@structure
@dataclass(frozen=True, slots=True)
class _SetInfoFixed(Structure):
    structure_size: int = u16(33)
    info_type: int = u8(0)
    info_class: int = u8(0)
    buffer_length: int = u32(0)
    buffer_offset: int = u16(0)
    reserved: int = u16(0)
    additional_information: int = u32(0)
    file_id: bytes = raw(FILE_ID_SIZE)


@dataclass(frozen=True, slots=True)
class SetInfoRequest:
    info_type: int
    info_class: int
    file_id: bytes
    buffer: bytes
    additional_information: int = 0

    def encode(self) -> bytes:
        offset = HEADER_SIZE + _SetInfoFixed.SIZE
        fixed = _SetInfoFixed(
            33,
            self.info_type,
            self.info_class,
            len(self.buffer),
            offset,
            0,
            self.additional_information,
            self.file_id,
        )
        return fixed.to_bytes() + (self.buffer or b"\x00")

    @classmethod
    def decode(cls, msg: Buffer) -> SetInfoRequest:
        f = _SetInfoFixed.decode(msg, HEADER_SIZE)
        check_structure_size("SET_INFO request", f.structure_size, 33)
        data = bytes(read_bytes(msg, f.buffer_offset, f.buffer_length, "SET_INFO buffer"))
        return cls(f.info_type, f.info_class, f.file_id, data, f.additional_information)


SET_INFO_RESPONSE = (2).to_bytes(2, "little")


def decode_set_info_response(msg: Buffer) -> None:
    """MS-SMB2 2.2.40 (for clients and tests): a StructureSize of 2 and nothing else."""
    size = int.from_bytes(read_bytes(msg, HEADER_SIZE, 2, "SET_INFO response"), "little")
    check_structure_size("SET_INFO response", size, 2)


# -- LOCK (2.2.26, 2.2.27) --------------------------------------------------------------------


class LockFlags(IntFlag):
    SHARED = 0x01
    EXCLUSIVE = 0x02
    UNLOCK = 0x04
    FAIL_IMMEDIATELY = 0x10


@dataclass(frozen=True, slots=True)
class LockElement:
    offset: int
    length: int
    flags: int


MAX_LOCK_ELEMENTS = 64


@dataclass(frozen=True, slots=True)
class LockRequest:
    file_id: bytes
    locks: tuple[LockElement, ...]
    lock_sequence: int = 0

    def encode(self) -> bytes:
        head = (48).to_bytes(2, "little") + len(self.locks).to_bytes(2, "little")
        head += self.lock_sequence.to_bytes(4, "little") + self.file_id
        return head + b"".join(
            e.offset.to_bytes(8, "little")
            + e.length.to_bytes(8, "little")
            + e.flags.to_bytes(4, "little")
            + bytes(4)
            for e in self.locks
        )

    @classmethod
    def decode(cls, msg: Buffer) -> LockRequest:
        head = read_bytes(msg, HEADER_SIZE, 24, "LOCK request")
        check_structure_size("LOCK request", int.from_bytes(head[0:2], "little"), 48)
        count = int.from_bytes(head[2:4], "little")
        if count == 0 or count > MAX_LOCK_ELEMENTS:
            raise RemoteProtocolError(f"LOCK with {count} elements")
        raw_locks = read_bytes(msg, HEADER_SIZE + 24, 24 * count, "LOCK elements")
        locks = tuple(
            LockElement(
                int.from_bytes(raw_locks[i : i + 8], "little"),
                int.from_bytes(raw_locks[i + 8 : i + 16], "little"),
                int.from_bytes(raw_locks[i + 16 : i + 20], "little"),
            )
            for i in range(0, 24 * count, 24)
        )
        return cls(bytes(head[8:24]), locks, int.from_bytes(head[4:8], "little"))
