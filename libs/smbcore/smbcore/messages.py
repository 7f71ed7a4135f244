"""Session- and tree-level SMB2 message bodies (MS-SMB2 2.2.2, 2.2.5 - 2.2.10, 2.2.28).

Each body is decoded from the whole message (offsets in SMB2 are relative to the start of
the header) and encodes to the bytes that follow the 64-byte header.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import RemoteProtocolError
from .header import HEADER_SIZE
from .wire import (
    Buffer,
    Structure,
    check_structure_size,
    read_bytes,
    read_utf16,
    structure,
    u8,
    u16,
    u32,
    u64,
)

# -- ERROR response (2.2.2) ---------------------------------------------------------------


@structure
@dataclass(frozen=True, slots=True)
class ErrorResponse(Structure):
    """MS-SMB2 2.2.2: 8 fixed bytes; :func:`encode_error` adds the mandatory data byte."""

    structure_size: int = u16(9)
    error_context_count: int = u8(0)
    reserved: int = u8(0)
    byte_count: int = u32(0)


def encode_error(data: bytes = b"") -> bytes:
    """An error body; with no ErrorData, one zero byte still follows (StructureSize 9)."""
    return ErrorResponse(9, 0, 0, len(data)).to_bytes() + (data or b"\x00")


# -- fixed 4-byte bodies: ECHO, LOGOFF, TREE_DISCONNECT (requests and responses) ------------


@structure
@dataclass(frozen=True, slots=True)
class Empty4(Structure):
    """MS-SMB2 2.2.7/2.2.8 LOGOFF, 2.2.11/2.2.12 TREE_DISCONNECT, 2.2.28/2.2.29 ECHO."""

    structure_size: int = u16(4)
    reserved: int = u16(0)

    @classmethod
    def parse(cls, msg: Buffer, what: str) -> Empty4:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size(what, body.structure_size, 4)
        return body


EMPTY4 = Empty4().to_bytes()


# -- SESSION_SETUP (2.2.5, 2.2.6) -----------------------------------------------------------


class SessionSetupFlags(IntFlag):
    BINDING = 0x01


class SessionFlags(IntFlag):
    IS_GUEST = 0x0001
    IS_NULL = 0x0002
    ENCRYPT_DATA = 0x0004


@structure
@dataclass(frozen=True, slots=True)
class _SessionSetupRequestFixed(Structure):
    structure_size: int = u16(25)
    flags: int = u8(0)
    security_mode: int = u8(0)
    capabilities: int = u32(0)
    channel: int = u32(0)
    security_buffer_offset: int = u16(0)
    security_buffer_length: int = u16(0)
    previous_session_id: int = u64(0)


@dataclass(frozen=True, slots=True)
class SessionSetupRequest:
    """MS-SMB2 2.2.5"""

    flags: int
    security_mode: int
    capabilities: int
    previous_session_id: int
    security_buffer: bytes

    @property
    def binding(self) -> bool:
        return bool(self.flags & SessionSetupFlags.BINDING)

    def encode(self) -> bytes:
        offset = HEADER_SIZE + _SessionSetupRequestFixed.SIZE
        fixed = _SessionSetupRequestFixed(
            25,
            self.flags,
            self.security_mode,
            self.capabilities,
            0,
            offset,
            len(self.security_buffer),
            self.previous_session_id,
        )
        return fixed.to_bytes() + self.security_buffer

    @classmethod
    def decode(cls, msg: Buffer) -> SessionSetupRequest:
        f = _SessionSetupRequestFixed.decode(msg, HEADER_SIZE)
        check_structure_size("SESSION_SETUP request", f.structure_size, 25)
        token = bytes(read_bytes(msg, f.security_buffer_offset, f.security_buffer_length, "SecurityBuffer"))
        return cls(f.flags, f.security_mode, f.capabilities, f.previous_session_id, token)


@structure
@dataclass(frozen=True, slots=True)
class _SessionSetupResponseFixed(Structure):
    structure_size: int = u16(9)
    session_flags: int = u16(0)
    security_buffer_offset: int = u16(0)
    security_buffer_length: int = u16(0)


@dataclass(frozen=True, slots=True)
class SessionSetupResponse:
    """MS-SMB2 2.2.6"""

    session_flags: int
    security_buffer: bytes

    def encode(self) -> bytes:
        offset = HEADER_SIZE + _SessionSetupResponseFixed.SIZE if self.security_buffer else 0
        fixed = _SessionSetupResponseFixed(9, self.session_flags, offset, len(self.security_buffer))
        return fixed.to_bytes() + (self.security_buffer or b"\x00")

    @classmethod
    def decode(cls, msg: Buffer) -> SessionSetupResponse:
        f = _SessionSetupResponseFixed.decode(msg, HEADER_SIZE)
        check_structure_size("SESSION_SETUP response", f.structure_size, 9)
        token = bytes(read_bytes(msg, f.security_buffer_offset, f.security_buffer_length, "SecurityBuffer"))
        return cls(f.session_flags, token)


# -- TREE_CONNECT (2.2.9, 2.2.10) -----------------------------------------------------------


class ShareType(IntEnum):
    DISK = 0x01
    PIPE = 0x02
    PRINT = 0x03


class ShareFlags(IntFlag):
    MANUAL_CACHING = 0x00000000
    NO_CACHING = 0x00000030
    DFS = 0x00000001
    ACCESS_BASED_DIRECTORY_ENUM = 0x00000800
    ENCRYPT_DATA = 0x00008000


class ShareCapabilities(IntFlag):
    DFS = 0x00000008
    CONTINUOUS_AVAILABILITY = 0x00000010
    SCALEOUT = 0x00000020
    CLUSTER = 0x00000040
    ASYMMETRIC = 0x00000080


@structure
@dataclass(frozen=True, slots=True)
class _TreeConnectRequestFixed(Structure):
    structure_size: int = u16(9)
    flags: int = u16(0)
    path_offset: int = u16(0)
    path_length: int = u16(0)


#: A UNC path longer than this is malformed (Windows' own limit on share paths is far lower).
MAX_TREE_PATH_BYTES = 2 * 1024


@dataclass(frozen=True, slots=True)
class TreeConnectRequest:
    """MS-SMB2 2.2.9: ``path`` is ``\\\\server\\share``."""

    flags: int
    path: str

    @property
    def share_name(self) -> str:
        """The share part of the path (``IPC$``, ``data``), as given."""
        parts = self.path.lstrip("\\").split("\\")
        return parts[1] if len(parts) >= 2 else ""

    def encode(self) -> bytes:
        path = self.path.encode("utf-16-le")
        fixed = _TreeConnectRequestFixed(
            9, self.flags, HEADER_SIZE + _TreeConnectRequestFixed.SIZE, len(path)
        )
        return fixed.to_bytes() + path

    @classmethod
    def decode(cls, msg: Buffer) -> TreeConnectRequest:
        f = _TreeConnectRequestFixed.decode(msg, HEADER_SIZE)
        check_structure_size("TREE_CONNECT request", f.structure_size, 9)
        if f.path_length > MAX_TREE_PATH_BYTES:
            raise RemoteProtocolError(f"TREE_CONNECT path of {f.path_length} bytes")
        return cls(f.flags, read_utf16(msg, f.path_offset, f.path_length, "TREE_CONNECT path"))


@structure
@dataclass(frozen=True, slots=True)
class TreeConnectResponse(Structure):
    """MS-SMB2 2.2.10"""

    structure_size: int = u16(16)
    share_type: int = u8(ShareType.DISK)
    reserved: int = u8(0)
    share_flags: int = u32(0)
    capabilities: int = u32(0)
    maximal_access: int = u32(0)

    @classmethod
    def parse(cls, msg: Buffer) -> TreeConnectResponse:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size("TREE_CONNECT response", body.structure_size, 16)
        return body
