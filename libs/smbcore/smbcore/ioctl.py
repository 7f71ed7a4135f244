"""SMB2 IOCTL request/response (MS-SMB2 2.2.31, 2.2.32) and the FSCTLs the server core
answers itself: VALIDATE_NEGOTIATE_INFO (2.2.31.4, 2.2.32.6) and
QUERY_NETWORK_INTERFACE_INFO (2.2.32.5)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import RemoteProtocolError
from .header import HEADER_SIZE
from .wire import Buffer, Structure, check_structure_size, raw, read_bytes, structure, u16, u32

#: FileId of an IOCTL that targets no open (both halves all ones).
NO_FILE_ID = b"\xff" * 16
SMB2_0_IOCTL_IS_FSCTL = 0x00000001


class CtlCode(IntEnum):
    FSCTL_DFS_GET_REFERRALS = 0x00060194
    FSCTL_PIPE_TRANSCEIVE = 0x0011C017
    FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
    FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204


@structure
@dataclass(frozen=True, slots=True)
class _IoctlRequestFixed(Structure):
    structure_size: int = u16(57)
    reserved: int = u16(0)
    ctl_code: int = u32(0)
    file_id: bytes = raw(16)
    input_offset: int = u32(0)
    input_count: int = u32(0)
    max_input_response: int = u32(0)
    output_offset: int = u32(0)
    output_count: int = u32(0)
    max_output_response: int = u32(0)
    flags: int = u32(0)
    reserved2: int = u32(0)


@dataclass(frozen=True, slots=True)
class IoctlRequest:
    """MS-SMB2 2.2.31 (input only; output buffers in requests are unused by every FSCTL here)."""

    ctl_code: int
    file_id: bytes
    input: bytes
    max_output_response: int
    flags: int = SMB2_0_IOCTL_IS_FSCTL

    def encode(self) -> bytes:
        offset = HEADER_SIZE + _IoctlRequestFixed.SIZE
        fixed = _IoctlRequestFixed(
            57, 0, self.ctl_code, self.file_id, offset if self.input else 0, len(self.input), 0,
            0, 0, self.max_output_response, self.flags, 0,
        )  # fmt: skip
        return fixed.to_bytes() + self.input

    @classmethod
    def decode(cls, msg: Buffer) -> IoctlRequest:
        f = _IoctlRequestFixed.decode(msg, HEADER_SIZE)
        check_structure_size("IOCTL request", f.structure_size, 57)
        data = bytes(read_bytes(msg, f.input_offset, f.input_count, "IOCTL input")) if f.input_count else b""
        return cls(f.ctl_code, f.file_id, data, f.max_output_response, f.flags)


@structure
@dataclass(frozen=True, slots=True)
class _IoctlResponseFixed(Structure):
    structure_size: int = u16(49)
    reserved: int = u16(0)
    ctl_code: int = u32(0)
    file_id: bytes = raw(16)
    input_offset: int = u32(0)
    input_count: int = u32(0)
    output_offset: int = u32(0)
    output_count: int = u32(0)
    flags: int = u32(0)
    reserved2: int = u32(0)


def encode_ioctl_response(ctl_code: int, file_id: bytes, output: bytes) -> bytes:
    """MS-SMB2 2.2.32 with an output buffer and no input echo."""
    offset = HEADER_SIZE + _IoctlResponseFixed.SIZE
    fixed = _IoctlResponseFixed(49, 0, ctl_code, file_id, offset, 0, offset, len(output), 0, 0)
    return fixed.to_bytes() + output


def decode_ioctl_response(msg: Buffer) -> tuple[int, bytes]:
    """(CtlCode, output) of an IOCTL response; for the client and tests."""
    f = _IoctlResponseFixed.decode(msg, HEADER_SIZE)
    check_structure_size("IOCTL response", f.structure_size, 49)
    return f.ctl_code, bytes(read_bytes(msg, f.output_offset, f.output_count, "IOCTL output"))


# -- FSCTL_VALIDATE_NEGOTIATE_INFO ---------------------------------------------------------


@structure
@dataclass(frozen=True, slots=True)
class _ValidateFixed(Structure):
    capabilities: int = u32(0)
    guid: bytes = raw(16)
    security_mode: int = u16(0)
    dialect_count: int = u16(0)


@dataclass(frozen=True, slots=True)
class ValidateNegotiateInfo:
    """MS-SMB2 2.2.31.4 (request); the response (2.2.32.6) has one dialect."""

    capabilities: int
    guid: bytes
    security_mode: int
    dialects: tuple[int, ...]

    def encode(self) -> bytes:
        fixed = _ValidateFixed(self.capabilities, self.guid, self.security_mode, len(self.dialects))
        return fixed.to_bytes() + b"".join(d.to_bytes(2, "little") for d in self.dialects)

    def encode_response(self) -> bytes:
        """2.2.32.6: Capabilities, Guid, SecurityMode, Dialect (the one negotiated)."""
        (dialect,) = self.dialects
        return _ValidateFixed(self.capabilities, self.guid, self.security_mode, dialect).to_bytes()

    @classmethod
    def decode(cls, data: bytes) -> ValidateNegotiateInfo:
        f = _ValidateFixed.decode(data)
        raw_dialects = read_bytes(
            data, _ValidateFixed.SIZE, 2 * f.dialect_count, "VALIDATE_NEGOTIATE_INFO dialects"
        )
        dialects = tuple(
            int.from_bytes(raw_dialects[i : i + 2], "little") for i in range(0, len(raw_dialects), 2)
        )
        return cls(f.capabilities, f.guid, f.security_mode, dialects)

    @classmethod
    def decode_response(cls, data: Buffer) -> ValidateNegotiateInfo:
        """2.2.32.6 (for the client): the field a request uses for DialectCount is the Dialect."""
        f = _ValidateFixed.decode(data)
        return cls(f.capabilities, f.guid, f.security_mode, (f.dialect_count,))


# -- FSCTL_QUERY_NETWORK_INTERFACE_INFO ------------------------------------------------------


class InterfaceCapability(IntFlag):
    RSS = 0x00000001
    RDMA = 0x00000002


AF_INET = 0x0002
AF_INET6 = 0x0017
_ENTRY_SIZE = 152


@dataclass(frozen=True, slots=True)
class NetworkInterfaceInfo:
    """One NETWORK_INTERFACE_INFO entry (MS-SMB2 2.2.32.5): one address of one interface."""

    if_index: int
    capabilities: int
    link_speed: int  # bit/s
    address: str

    def encode(self, last: bool) -> bytes:
        out = bytearray(_ENTRY_SIZE)
        out[0:4] = (0 if last else _ENTRY_SIZE).to_bytes(4, "little")
        out[4:8] = self.if_index.to_bytes(4, "little")
        out[8:12] = self.capabilities.to_bytes(4, "little")
        out[16:24] = self.link_speed.to_bytes(8, "little")
        ip = ipaddress.ip_address(self.address)
        if ip.version == 4:
            out[24:26] = AF_INET.to_bytes(2, "little")
            out[28:32] = ip.packed
        else:
            out[24:26] = AF_INET6.to_bytes(2, "little")
            out[32:48] = ip.packed
        return bytes(out)


def encode_interfaces(entries: list[NetworkInterfaceInfo]) -> bytes:
    return b"".join(e.encode(i == len(entries) - 1) for i, e in enumerate(entries))


def decode_interfaces(data: bytes) -> list[NetworkInterfaceInfo]:
    """Parse the chained entries (for the client); malformed chains are remote errors."""
    entries: list[NetworkInterfaceInfo] = []
    offset = 0
    while True:
        entry = read_bytes(data, offset, _ENTRY_SIZE, "NETWORK_INTERFACE_INFO")
        nxt = int.from_bytes(entry[0:4], "little")
        family = int.from_bytes(entry[16 + 8 : 16 + 10], "little")
        if family == AF_INET:
            address = str(ipaddress.IPv4Address(bytes(entry[28:32])))
        elif family == AF_INET6:
            address = str(ipaddress.IPv6Address(bytes(entry[32:48])))
        else:
            raise RemoteProtocolError(f"NETWORK_INTERFACE_INFO with address family {family:#x}")
        entries.append(
            NetworkInterfaceInfo(
                if_index=int.from_bytes(entry[4:8], "little"),
                capabilities=int.from_bytes(entry[8:12], "little"),
                link_speed=int.from_bytes(entry[16:24], "little"),
                address=address,
            )
        )
        if nxt == 0:
            return entries
        if nxt < _ENTRY_SIZE or len(entries) > 4096:
            raise RemoteProtocolError(f"NETWORK_INTERFACE_INFO Next {nxt}")
        offset += nxt


__all__ = [
    "NO_FILE_ID",
    "CtlCode",
    "InterfaceCapability",
    "IoctlRequest",
    "NetworkInterfaceInfo",
    "ValidateNegotiateInfo",
    "decode_interfaces",
    "decode_ioctl_response",
    "encode_interfaces",
    "encode_ioctl_response",
]
