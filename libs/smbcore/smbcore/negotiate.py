"""SMB2 NEGOTIATE request and response with negotiate contexts (MS-SMB2 2.2.3, 2.2.4).

Bodies are decoded from the message buffer *after* the 64-byte header: offsets in the
body are relative to the start of the header, so every decoder takes the whole message
and the body's offset in it. Unknown negotiate contexts are kept as
:class:`UnknownContext` and ignored by the state machines, as MS-SMB2 3.3.5.4 requires.
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
    u16,
    u32,
    u64,
)


class Dialect(IntEnum):
    SMB_2_0_2 = 0x0202
    SMB_2_1 = 0x0210
    SMB_3_0 = 0x0300
    SMB_3_0_2 = 0x0302
    SMB_3_1_1 = 0x0311
    WILDCARD = 0x02FF


class SecurityMode(IntFlag):
    SIGNING_ENABLED = 0x0001
    SIGNING_REQUIRED = 0x0002


class Capabilities(IntFlag):
    DFS = 0x00000001
    LEASING = 0x00000002
    LARGE_MTU = 0x00000004
    MULTI_CHANNEL = 0x00000008
    PERSISTENT_HANDLES = 0x00000010
    DIRECTORY_LEASING = 0x00000020
    ENCRYPTION = 0x00000040
    NOTIFICATIONS = 0x00000080


class ContextType(IntEnum):
    PREAUTH_INTEGRITY_CAPABILITIES = 0x0001
    ENCRYPTION_CAPABILITIES = 0x0002
    COMPRESSION_CAPABILITIES = 0x0003
    NETNAME_NEGOTIATE_CONTEXT_ID = 0x0005
    TRANSPORT_CAPABILITIES = 0x0006
    RDMA_TRANSFORM_CAPABILITIES = 0x0007
    SIGNING_CAPABILITIES = 0x0008


HASH_SHA512 = 0x0001

#: Most negotiate contexts a request may carry before we call it abuse (Windows allows few).
MAX_CONTEXTS = 32


@structure
@dataclass(frozen=True, slots=True)
class _RequestFixed(Structure):
    """MS-SMB2 2.2.3 NEGOTIATE Request, the 36 fixed bytes."""

    structure_size: int = u16(36)
    dialect_count: int = u16(0)
    security_mode: int = u16(0)
    reserved: int = u16(0)
    capabilities: int = u32(0)
    client_guid: bytes = raw(16)
    context_offset: int = u32(0)  # 3.1.1; else ClientStartTime (8 bytes with the next two)
    context_count: int = u16(0)
    reserved2: int = u16(0)


@structure
@dataclass(frozen=True, slots=True)
class _ResponseFixed(Structure):
    """MS-SMB2 2.2.4 NEGOTIATE Response, the 64 fixed bytes (StructureSize 65 counts one buffer byte)."""

    structure_size: int = u16(65)
    security_mode: int = u16(0)
    dialect: int = u16(0)
    context_count: int = u16(0)
    server_guid: bytes = raw(16)
    capabilities: int = u32(0)
    max_transact_size: int = u32(0)
    max_read_size: int = u32(0)
    max_write_size: int = u32(0)
    system_time: int = u64(0)
    server_start_time: int = u64(0)
    security_buffer_offset: int = u16(0)
    security_buffer_length: int = u16(0)
    context_offset: int = u32(0)


@structure
@dataclass(frozen=True, slots=True)
class _ContextHeader(Structure):
    """MS-SMB2 2.2.3.1 NEGOTIATE_CONTEXT header."""

    context_type: int = u16(0)
    data_length: int = u16(0)
    reserved: int = u32(0)


# -- negotiate contexts ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreauthIntegrity:
    """MS-SMB2 2.2.3.1.1"""

    hash_algorithms: tuple[int, ...]
    salt: bytes

    def encode(self) -> bytes:
        return (
            len(self.hash_algorithms).to_bytes(2, "little")
            + len(self.salt).to_bytes(2, "little")
            + b"".join(a.to_bytes(2, "little") for a in self.hash_algorithms)
            + self.salt
        )

    @classmethod
    def decode(cls, data: memoryview) -> PreauthIntegrity:
        count, salt_len = _u16s(data, 2, "PREAUTH_INTEGRITY_CAPABILITIES")
        if count == 0:
            raise RemoteProtocolError("PREAUTH_INTEGRITY_CAPABILITIES without hash algorithms")
        algorithms = _u16_array(data, 4, count, "HashAlgorithms")
        salt = bytes(read_bytes(data, 4 + 2 * count, salt_len, "Salt"))
        return cls(algorithms, salt)


@dataclass(frozen=True, slots=True)
class EncryptionCapabilities:
    """MS-SMB2 2.2.3.1.2"""

    ciphers: tuple[int, ...]

    def encode(self) -> bytes:
        return len(self.ciphers).to_bytes(2, "little") + b"".join(
            c.to_bytes(2, "little") for c in self.ciphers
        )

    @classmethod
    def decode(cls, data: memoryview) -> EncryptionCapabilities:
        (count,) = _u16s(data, 1, "ENCRYPTION_CAPABILITIES")
        if count == 0:
            raise RemoteProtocolError("ENCRYPTION_CAPABILITIES without ciphers")
        return cls(_u16_array(data, 2, count, "Ciphers"))


@dataclass(frozen=True, slots=True)
class SigningCapabilities:
    """MS-SMB2 2.2.3.1.7"""

    algorithms: tuple[int, ...]

    def encode(self) -> bytes:
        return len(self.algorithms).to_bytes(2, "little") + b"".join(
            a.to_bytes(2, "little") for a in self.algorithms
        )

    @classmethod
    def decode(cls, data: memoryview) -> SigningCapabilities:
        (count,) = _u16s(data, 1, "SIGNING_CAPABILITIES")
        if count == 0:
            raise RemoteProtocolError("SIGNING_CAPABILITIES without algorithms")
        return cls(_u16_array(data, 2, count, "SigningAlgorithms"))


@dataclass(frozen=True, slots=True)
class NetnameContext:
    """MS-SMB2 2.2.3.1.4: the server name the client connects to."""

    name: str

    def encode(self) -> bytes:
        return self.name.encode("utf-16-le")

    @classmethod
    def decode(cls, data: memoryview) -> NetnameContext:
        return cls(read_utf16(data, 0, len(data) - len(data) % 2, "NetName"))


@dataclass(frozen=True, slots=True)
class TransportCapabilities:
    """MS-SMB2 2.2.3.1.5"""

    flags: int

    def encode(self) -> bytes:
        return self.flags.to_bytes(4, "little")

    @classmethod
    def decode(cls, data: memoryview) -> TransportCapabilities:
        return cls(int.from_bytes(read_bytes(data, 0, 4, "TRANSPORT_CAPABILITIES"), "little"))


@dataclass(frozen=True, slots=True)
class RdmaTransformCapabilities:
    """MS-SMB2 2.2.3.1.6"""

    transform_ids: tuple[int, ...]

    def encode(self) -> bytes:
        ids = b"".join(t.to_bytes(2, "little") for t in self.transform_ids)
        return len(self.transform_ids).to_bytes(2, "little") + bytes(6) + ids

    @classmethod
    def decode(cls, data: memoryview) -> RdmaTransformCapabilities:
        (count,) = _u16s(data, 1, "RDMA_TRANSFORM_CAPABILITIES")
        return cls(_u16_array(data, 8, count, "RDMATransformIds"))


@dataclass(frozen=True, slots=True)
class UnknownContext:
    """A context this implementation does not act on (compression included); kept, ignored."""

    context_type: int
    data: bytes

    def encode(self) -> bytes:
        return self.data


NegotiateContext = (
    PreauthIntegrity
    | EncryptionCapabilities
    | SigningCapabilities
    | NetnameContext
    | TransportCapabilities
    | RdmaTransformCapabilities
    | UnknownContext
)

_CONTEXT_TYPES: dict[type, ContextType] = {
    PreauthIntegrity: ContextType.PREAUTH_INTEGRITY_CAPABILITIES,
    EncryptionCapabilities: ContextType.ENCRYPTION_CAPABILITIES,
    SigningCapabilities: ContextType.SIGNING_CAPABILITIES,
    NetnameContext: ContextType.NETNAME_NEGOTIATE_CONTEXT_ID,
    TransportCapabilities: ContextType.TRANSPORT_CAPABILITIES,
    RdmaTransformCapabilities: ContextType.RDMA_TRANSFORM_CAPABILITIES,
}
_DECODERS = {t: cls for cls, t in _CONTEXT_TYPES.items()}


def _u16s(data: memoryview, count: int, what: str) -> tuple[int, ...]:
    return _u16_array(data, 0, count, what)


def _u16_array(data: memoryview, offset: int, count: int, what: str) -> tuple[int, ...]:
    raw_bytes = read_bytes(data, offset, 2 * count, what)
    return tuple(int.from_bytes(raw_bytes[i : i + 2], "little") for i in range(0, 2 * count, 2))


def context_type_of(ctx: NegotiateContext) -> int:
    if isinstance(ctx, UnknownContext):
        return ctx.context_type
    return _CONTEXT_TYPES[type(ctx)]


def encode_contexts(contexts: tuple[NegotiateContext, ...]) -> bytes:
    """Contexts, each 8-byte aligned relative to the first (which the caller aligns)."""
    out = bytearray()
    for i, ctx in enumerate(contexts):
        if i:
            out += bytes(align8(len(out)) - len(out))
        data = ctx.encode()
        out += _ContextHeader(context_type_of(ctx), len(data), 0).to_bytes()
        out += data
    return bytes(out)


def decode_contexts(msg: Buffer, offset: int, count: int) -> tuple[NegotiateContext, ...]:
    if count > MAX_CONTEXTS:
        raise RemoteProtocolError(f"{count} negotiate contexts (at most {MAX_CONTEXTS})")
    contexts: list[NegotiateContext] = []
    for _ in range(count):
        header = _ContextHeader.decode(msg, offset)
        data = read_bytes(msg, offset + _ContextHeader.SIZE, header.data_length, "negotiate context data")
        decoder = _DECODERS.get(header.context_type)  # type: ignore[call-overload]
        contexts.append(decoder.decode(data) if decoder else UnknownContext(header.context_type, bytes(data)))
        offset = align8(offset + _ContextHeader.SIZE + header.data_length)
    return tuple(contexts)


# -- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NegotiateRequest:
    """MS-SMB2 2.2.3"""

    dialects: tuple[int, ...]
    security_mode: int
    capabilities: int
    client_guid: bytes
    contexts: tuple[NegotiateContext, ...] = ()

    def __post_init__(self) -> None:
        if not self.dialects:
            raise ValueError("a NEGOTIATE request needs at least one dialect")
        if len(self.client_guid) != 16:
            raise ValueError("ClientGuid is 16 bytes")

    def context(self, kind: type[NegotiateContext]) -> NegotiateContext | None:
        return next((c for c in self.contexts if type(c) is kind), None)

    def encode(self) -> bytes:
        """The body (after the 64-byte header)."""
        dialects = b"".join(d.to_bytes(2, "little") for d in self.dialects)
        body_end = HEADER_SIZE + _RequestFixed.SIZE + len(dialects)
        ctx_offset = align8(body_end) if self.contexts else 0
        fixed = _RequestFixed(
            36,
            len(self.dialects),
            self.security_mode,
            0,
            self.capabilities,
            self.client_guid,
            ctx_offset,
            len(self.contexts),
            0,
        )
        out = fixed.to_bytes() + dialects
        if self.contexts:
            out += bytes(ctx_offset - body_end) + encode_contexts(self.contexts)
        return out

    @classmethod
    def decode(cls, msg: Buffer, body: int = HEADER_SIZE) -> NegotiateRequest:
        fixed = _RequestFixed.decode(msg, body)
        check_structure_size("NEGOTIATE request", fixed.structure_size, 36)
        if fixed.dialect_count == 0:
            raise RemoteProtocolError("NEGOTIATE request without dialects", NTStatus.INVALID_PARAMETER)
        dialects = _u16_array(memoryview(msg), body + _RequestFixed.SIZE, fixed.dialect_count, "Dialects")
        contexts: tuple[NegotiateContext, ...] = ()
        if Dialect.SMB_3_1_1 in dialects and fixed.context_count:
            if fixed.context_offset % 8 or fixed.context_offset < HEADER_SIZE + _RequestFixed.SIZE:
                raise RemoteProtocolError(
                    f"NegotiateContextOffset {fixed.context_offset} misaligned or inside the header"
                )
            contexts = decode_contexts(msg, fixed.context_offset, fixed.context_count)
        return cls(dialects, fixed.security_mode, fixed.capabilities, fixed.client_guid, contexts)


@dataclass(frozen=True, slots=True)
class NegotiateResponse:
    """MS-SMB2 2.2.4"""

    security_mode: int
    dialect: int
    server_guid: bytes
    capabilities: int
    max_transact_size: int
    max_read_size: int
    max_write_size: int
    system_time: int
    server_start_time: int
    security_buffer: bytes
    contexts: tuple[NegotiateContext, ...] = ()

    def context(self, kind: type[NegotiateContext]) -> NegotiateContext | None:
        return next((c for c in self.contexts if type(c) is kind), None)

    def encode(self) -> bytes:
        sec_offset = HEADER_SIZE + _ResponseFixed.SIZE
        sec_end = sec_offset + len(self.security_buffer)
        ctx_offset = align8(sec_end) if self.contexts else 0
        fixed = _ResponseFixed(
            65,
            self.security_mode,
            self.dialect,
            len(self.contexts),
            self.server_guid,
            self.capabilities,
            self.max_transact_size,
            self.max_read_size,
            self.max_write_size,
            self.system_time,
            self.server_start_time,
            sec_offset if self.security_buffer else 0,
            len(self.security_buffer),
            ctx_offset,
        )
        out = fixed.to_bytes() + self.security_buffer
        if self.contexts:
            out += bytes(ctx_offset - sec_end) + encode_contexts(self.contexts)
        elif not self.security_buffer:
            out += b"\x00"  # the variable part is at least one byte (StructureSize 65)
        return out

    @classmethod
    def decode(cls, msg: Buffer, body: int = HEADER_SIZE) -> NegotiateResponse:
        fixed = _ResponseFixed.decode(msg, body)
        check_structure_size("NEGOTIATE response", fixed.structure_size, 65)
        security = bytes(
            read_bytes(msg, fixed.security_buffer_offset, fixed.security_buffer_length, "SecurityBuffer")
        )
        contexts: tuple[NegotiateContext, ...] = ()
        if fixed.dialect == Dialect.SMB_3_1_1 and fixed.context_count:
            if fixed.context_offset % 8:
                raise RemoteProtocolError(f"NegotiateContextOffset {fixed.context_offset} not 8-byte aligned")
            contexts = decode_contexts(msg, fixed.context_offset, fixed.context_count)
        return cls(
            fixed.security_mode,
            fixed.dialect,
            fixed.server_guid,
            fixed.capabilities,
            fixed.max_transact_size,
            fixed.max_read_size,
            fixed.max_write_size,
            fixed.system_time,
            fixed.server_start_time,
            security,
            contexts,
        )
