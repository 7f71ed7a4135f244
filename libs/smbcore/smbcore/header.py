"""The SMB2 packet header, sync and async forms (MS-SMB2 2.2.1.1, 2.2.1.2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import RemoteProtocolError
from .ntstatus import NTStatus
from .wire import Buffer, Structure, Truncated, raw, structure, u16, u32, u64

PROTOCOL_ID = b"\xfeSMB"
TRANSFORM_PROTOCOL_ID = b"\xfdSMB"
COMPRESSION_PROTOCOL_ID = b"\xfcSMB"
SMB1_PROTOCOL_ID = b"\xffSMB"
HEADER_SIZE = 64
SIGNATURE_OFFSET = 48


class Command(IntEnum):
    NEGOTIATE = 0x0000
    SESSION_SETUP = 0x0001
    LOGOFF = 0x0002
    TREE_CONNECT = 0x0003
    TREE_DISCONNECT = 0x0004
    CREATE = 0x0005
    CLOSE = 0x0006
    FLUSH = 0x0007
    READ = 0x0008
    WRITE = 0x0009
    LOCK = 0x000A
    IOCTL = 0x000B
    CANCEL = 0x000C
    ECHO = 0x000D
    QUERY_DIRECTORY = 0x000E
    CHANGE_NOTIFY = 0x000F
    QUERY_INFO = 0x0010
    SET_INFO = 0x0011
    OPLOCK_BREAK = 0x0012


class Flags(IntFlag):
    SERVER_TO_REDIR = 0x00000001
    ASYNC_COMMAND = 0x00000002
    RELATED_OPERATIONS = 0x00000004
    SIGNED = 0x00000008
    PRIORITY_MASK = 0x00000070
    DFS_OPERATIONS = 0x10000000
    REPLAY_OPERATION = 0x20000000


@structure
@dataclass(frozen=True, slots=True)
class Header(Structure):
    """MS-SMB2 2.2.1: 64 bytes. ``reserved_or_async`` holds Reserved+TreeId (sync, as
    ``tree_id << 32 | reserved``) or AsyncId (async); use the properties."""

    protocol_id: bytes = raw(4, PROTOCOL_ID)
    structure_size: int = u16(64)
    credit_charge: int = u16(0)
    status: int = u32(0)  # requests: ChannelSequence (low 16 bits) + Reserved
    command: int = u16(0)
    credits: int = u16(0)  # CreditRequest / CreditResponse
    flags: int = u32(0)
    next_command: int = u32(0)
    message_id: int = u64(0)
    reserved_or_async: int = u64(0)
    session_id: int = u64(0)
    signature: bytes = raw(16)

    @property
    def is_async(self) -> bool:
        return bool(self.flags & Flags.ASYNC_COMMAND)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & Flags.SERVER_TO_REDIR)

    @property
    def tree_id(self) -> int:
        return 0 if self.is_async else self.reserved_or_async >> 32

    @property
    def async_id(self) -> int:
        return self.reserved_or_async if self.is_async else 0

    @property
    def channel_sequence(self) -> int:
        return self.status & 0xFFFF

    @staticmethod
    def sync_field(tree_id: int) -> int:
        return (tree_id & 0xFFFFFFFF) << 32


def decode_header(buf: Buffer, offset: int = 0) -> Header:
    """Decode and validate an SMB2 header at ``offset`` (the start of one message)."""
    if len(buf) - offset < HEADER_SIZE:
        raise Truncated("SMB2 header", offset, HEADER_SIZE, len(buf))
    header = Header.decode(buf, offset)
    if header.protocol_id != PROTOCOL_ID:
        raise RemoteProtocolError(f"not an SMB2 message (protocol id {header.protocol_id.hex()})")
    if header.structure_size != HEADER_SIZE:
        raise RemoteProtocolError(f"SMB2 header StructureSize {header.structure_size}, expected 64")
    try:
        Command(header.command)
    except ValueError:
        raise RemoteProtocolError(
            f"unknown SMB2 command 0x{header.command:04x}", NTStatus.INVALID_PARAMETER
        ) from None
    return header
