"""DCE/RPC over a named pipe: connection-oriented PDUs, NDR32, and the server side of one
association, sans-IO.

* PDUs: [C706] chapter 12 (connection-oriented RPC PDUs) with the [MS-RPCE] 2.2.2 extensions:
  bind, bind_ack, bind_nak, alter_context, alter_context_resp, request, response, fault.
  Each PDU type is one frozen dataclass whose ``encode``/``decode`` stand side by side.
* NDR32: [C706] chapter 14, little-endian, only what the interfaces here need: aligned
  integers, unique and embedded ref pointers with deferred referents, conformant arrays and
  conformant varying ``[string]`` UTF-16 strings (:class:`NdrReader`, :class:`NdrWriter`).
* :class:`RpcConnection`: one association (one pipe instance). Bytes written to the pipe go
  in (:meth:`RpcConnection.receive_data`); whole PDUs to read from the pipe come out
  (:meth:`RpcConnection.data_to_send`), one pipe message each. It negotiates presentation
  contexts (NDR32 only; the bind-time-feature-negotiation context of [MS-RPCE] 3.3.1.5.3 is
  answered with negotiate_ack), reassembles fragmented requests, dispatches them to an
  :class:`Interface` and fragments the responses to the negotiated size.

Errors: a malformed call's stub is an :class:`NdrError` and a call the interface refuses an
:class:`RpcFault`; both become a fault PDU for that call and the association carries on. A
malformed or out-of-order PDU is an :class:`RpcProtocolError`: the answer is a bind_nak (to a
bind) or a fault with nca_proto_error, and the association ends (:attr:`RpcConnection.closed`),
as Windows and Samba end it.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Generic, Protocol, TypeVar

from .errors import RemoteProtocolError
from .wire import Buffer, Structure, raw, read_bytes, structure, u8, u16, u32

log = logging.getLogger(__name__)

RPC_VERS = 5
#: Data representation: little-endian integers, ASCII characters, IEEE floats ([C706] 14.1).
DREP_LE = b"\x10\x00\x00\x00"
#: The connection-oriented header ([C706] 12.6.3.1) every PDU starts with.
HEADER_SIZE = 16
#: [C706] 12.6.3.1: a fragment's authentication verifier follows an 8-byte sec_trailer.
SEC_TRAILER_SIZE = 8


class PType(IntEnum):
    """[C706] 12.6.3.1 PDU types (connection-oriented ones)."""

    REQUEST = 0
    RESPONSE = 2
    FAULT = 3
    BIND = 11
    BIND_ACK = 12
    BIND_NAK = 13
    ALTER_CONTEXT = 14
    ALTER_CONTEXT_RESP = 15
    AUTH3 = 16
    SHUTDOWN = 17
    CO_CANCEL = 18
    ORPHANED = 19


class PfcFlags(IntFlag):
    """[C706] 12.6.3.1 pfc_flags ([MS-RPCE] 2.2.2.3: 0x04 is PFC_SUPPORT_HEADER_SIGN in a bind)."""

    FIRST_FRAG = 0x01
    LAST_FRAG = 0x02
    PENDING_CANCEL = 0x04
    CONC_MPX = 0x10
    DID_NOT_EXECUTE = 0x20
    MAYBE = 0x40
    OBJECT_UUID = 0x80


WHOLE = PfcFlags.FIRST_FRAG | PfcFlags.LAST_FRAG


class FaultStatus(IntEnum):
    """Fault and reject status codes ([C706] appendix E, [MS-RPCE] 2.2.2.11 and 3.1.1.5.5)."""

    ACCESS_DENIED = 0x00000005
    BAD_STUB_DATA = 0x000006F7  # nca_s_fault_ndr / RPC_X_BAD_STUB_DATA
    INVALID_TAG = 0x1C000006
    CONTEXT_MISMATCH = 0x1C00001A
    REMOTE_NO_MEMORY = 0x1C00001B
    OP_RNG_ERROR = 0x1C010002
    UNK_IF = 0x1C010003
    PROTO_ERROR = 0x1C01000B


class ContextResult(IntEnum):
    """[C706] 12.6.3.1 p_cont_def_result_t; NEGOTIATE_ACK is [MS-RPCE] 2.2.2.4."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    PROVIDER_REJECTION = 2
    NEGOTIATE_ACK = 3


class ProviderReason(IntEnum):
    """[C706] 12.6.3.1 p_provider_reason_t."""

    NOT_SPECIFIED = 0
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
    PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
    LOCAL_LIMIT_EXCEEDED = 3


class BindNakReason(IntEnum):
    """[C706] 12.6.3.1 p_reject_reason_t with [MS-RPCE] 2.2.2.5."""

    NOT_SPECIFIED = 0
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2
    PROTOCOL_VERSION_NOT_SUPPORTED = 4
    AUTHENTICATION_TYPE_NOT_RECOGNIZED = 8


class BindTimeFeatures(IntFlag):
    """[MS-RPCE] 2.2.2.14 BindTimeFeatureNegotiationBitmask (first octet)."""

    SECURITY_CONTEXT_MULTIPLEXING = 0x01
    KEEP_CONNECTION_ON_ORPHAN = 0x02


# -- errors --------------------------------------------------------------------------------------


class RpcFault(RemoteProtocolError):
    """A call fails with ``fault`` (a fault PDU answers it); the association carries on."""

    def __init__(self, message: str, fault: int) -> None:
        super().__init__(message)
        self.fault = fault


class NdrError(RpcFault):
    """A call's stub data does not decode (nca_s_fault_ndr, as Windows answers bad stub data)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FaultStatus.BAD_STUB_DATA)


class RpcProtocolError(RemoteProtocolError):
    """A malformed or out-of-order PDU: answered, then the association ends. Before a bind
    the answer is a bind_nak with ``bind_nak_reason``, after it a fault with ``fault``."""

    def __init__(
        self,
        message: str,
        fault: int = FaultStatus.PROTO_ERROR,
        bind_nak_reason: int = BindNakReason.NOT_SPECIFIED,
    ) -> None:
        super().__init__(message)
        self.fault = fault
        self.bind_nak_reason = bind_nak_reason


# -- syntax identifiers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntaxId:
    """[C706] 12.6.3.1 p_syntax_id_t: an interface or transfer syntax UUID and its version
    (major in the low 16 bits of if_version, minor in the high)."""

    uuid: uuid.UUID
    major: int
    minor: int = 0

    SIZE = 20

    def encode(self) -> bytes:
        return self.uuid.bytes_le + self.major.to_bytes(2, "little") + self.minor.to_bytes(2, "little")

    @classmethod
    def decode(cls, buf: Buffer, offset: int) -> SyntaxId:
        data = read_bytes(buf, offset, cls.SIZE, "p_syntax_id_t")
        return cls(
            uuid.UUID(bytes_le=bytes(data[:16])),
            int.from_bytes(data[16:18], "little"),
            int.from_bytes(data[18:20], "little"),
        )

    def __str__(self) -> str:
        return f"{self.uuid}/{self.major}.{self.minor}"


#: The NDR transfer syntax ([C706] appendix I, version 2.0), the only one served here.
NDR32 = SyntaxId(uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2, 0)
#: NDR64 ([MS-RPCE] 2.2.5), recognised to be declined.
NDR64 = SyntaxId(uuid.UUID("71710533-beba-4937-8319-b5dbef9ccc36"), 1, 0)
#: [MS-RPCE] 3.3.1.5.3: transfer syntaxes with this UUID prefix (version 1.0) offer bind-time
#: features; the eight octets after the prefix carry the bitmask.
BIND_TIME_FEATURE_PREFIX = bytes.fromhex("6cb71c2c98124540")
NULL_SYNTAX = SyntaxId(uuid.UUID(int=0), 0, 0)


def bind_time_features(syntax: SyntaxId) -> BindTimeFeatures | None:
    """The bitmask a bind-time-feature-negotiation transfer syntax offers, or None."""
    if syntax.uuid.bytes[:8] != BIND_TIME_FEATURE_PREFIX or (syntax.major, syntax.minor) != (1, 0):
        return None
    return BindTimeFeatures(syntax.uuid.bytes[8] & 0x03)


def bind_time_feature_syntax(features: int) -> SyntaxId:
    """The transfer syntax a client proposes to offer ``features`` (for clients and tests)."""
    return SyntaxId(uuid.UUID(bytes=BIND_TIME_FEATURE_PREFIX + bytes([features]) + bytes(7)), 1, 0)


# -- PDUs ----------------------------------------------------------------------------------------


@structure
@dataclass(frozen=True, slots=True)
class CommonHeader(Structure):
    """[C706] 12.6.3.1 the common fields of every connection-oriented PDU."""

    rpc_vers: int = u8(RPC_VERS)
    rpc_vers_minor: int = u8(0)
    ptype: int = u8(0)
    pfc_flags: int = u8(0)
    drep: bytes = raw(4, DREP_LE)
    frag_length: int = u16(0)
    auth_length: int = u16(0)
    call_id: int = u32(0)


def parse_header(buf: Buffer) -> CommonHeader:
    """The common header of a PDU, checked: version 5.0/5.1, little-endian NDR, a frag_length
    that holds the header and the authentication verifier it announces."""
    if len(buf) < HEADER_SIZE:
        raise RpcProtocolError(f"PDU of {len(buf)} bytes is shorter than the header")
    hdr = CommonHeader.decode(buf)
    unsupported = BindNakReason.PROTOCOL_VERSION_NOT_SUPPORTED
    if hdr.rpc_vers != RPC_VERS or hdr.rpc_vers_minor not in (0, 1):
        raise RpcProtocolError(
            f"RPC version {hdr.rpc_vers}.{hdr.rpc_vers_minor}", bind_nak_reason=unsupported
        )
    if hdr.drep[0] & 0xF0 != 0x10 or hdr.drep[0] & 0x0F:
        raise RpcProtocolError(
            f"unsupported data representation {hdr.drep.hex()}", bind_nak_reason=unsupported
        )
    if hdr.frag_length < HEADER_SIZE:
        raise RpcProtocolError(f"frag_length {hdr.frag_length} shorter than the header")
    if hdr.auth_length and hdr.auth_length + SEC_TRAILER_SIZE > hdr.frag_length - HEADER_SIZE:
        raise RpcProtocolError(f"auth_length {hdr.auth_length} does not fit frag_length {hdr.frag_length}")
    return hdr


def _body(pdu: Buffer, hdr: CommonHeader) -> memoryview:
    """The PDU body between the header and the authentication trailer."""
    if len(pdu) < hdr.frag_length:
        raise RpcProtocolError(f"PDU of {len(pdu)} bytes, frag_length says {hdr.frag_length}")
    end = hdr.frag_length - (hdr.auth_length + SEC_TRAILER_SIZE if hdr.auth_length else 0)
    return memoryview(pdu)[HEADER_SIZE:end]


def _pdu(ptype: PType, flags: int, call_id: int, body: bytes, auth_length: int = 0) -> bytes:
    hdr = CommonHeader(RPC_VERS, 0, ptype, flags, DREP_LE, HEADER_SIZE + len(body), auth_length, call_id)
    return hdr.to_bytes() + body


@dataclass(frozen=True, slots=True)
class ContextElement:
    """[C706] 12.6.3.1 p_cont_elem_t: a presentation context proposed in a bind."""

    context_id: int
    abstract_syntax: SyntaxId
    transfer_syntaxes: tuple[SyntaxId, ...]

    def encode(self) -> bytes:
        head = self.context_id.to_bytes(2, "little") + bytes([len(self.transfer_syntaxes), 0])
        return head + self.abstract_syntax.encode() + b"".join(t.encode() for t in self.transfer_syntaxes)


@structure
@dataclass(frozen=True, slots=True)
class _BindFixed(Structure):
    max_xmit_frag: int = u16(0)
    max_recv_frag: int = u16(0)
    assoc_group_id: int = u32(0)
    n_context_elem: int = u8(0)
    reserved: int = u8(0)
    reserved2: int = u16(0)


@dataclass(frozen=True, slots=True)
class Bind:
    """[C706] 12.6.4.3 bind and 12.6.4.1 alter_context (same body; ``ptype`` tells which).
    An authentication verifier, if any, is kept raw (this server accepts none)."""

    call_id: int
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    contexts: tuple[ContextElement, ...]
    ptype: PType = PType.BIND
    flags: int = WHOLE
    auth_length: int = 0

    def encode(self) -> bytes:
        fixed = _BindFixed(self.max_xmit_frag, self.max_recv_frag, self.assoc_group_id, len(self.contexts))
        body = fixed.to_bytes() + b"".join(c.encode() for c in self.contexts)
        return _pdu(self.ptype, self.flags, self.call_id, body)

    @classmethod
    def decode(cls, pdu: Buffer) -> Bind:
        hdr = parse_header(pdu)
        if hdr.ptype not in (PType.BIND, PType.ALTER_CONTEXT):
            raise RpcProtocolError(f"PDU type {hdr.ptype} is not a bind")
        body = _body(pdu, hdr)
        try:
            fixed = _BindFixed.decode(body)
            contexts = []
            offset = _BindFixed.SIZE
            for _ in range(fixed.n_context_elem):
                head = read_bytes(body, offset, 4, "p_cont_elem_t")
                n_transfer = head[2]
                abstract = SyntaxId.decode(body, offset + 4)
                offset += 4 + SyntaxId.SIZE
                transfers = tuple(
                    SyntaxId.decode(body, offset + i * SyntaxId.SIZE) for i in range(n_transfer)
                )
                offset += n_transfer * SyntaxId.SIZE
                contexts.append(ContextElement(int.from_bytes(head[0:2], "little"), abstract, transfers))
        except RpcProtocolError:
            raise
        except RemoteProtocolError as exc:
            raise RpcProtocolError(f"bind: {exc.args[0]}") from None
        return cls(
            hdr.call_id, fixed.max_xmit_frag, fixed.max_recv_frag, fixed.assoc_group_id, tuple(contexts),
            PType(hdr.ptype), hdr.pfc_flags, hdr.auth_length,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContextResultEntry:
    """[C706] 12.6.3.1 p_result_t; for NEGOTIATE_ACK ``reason`` carries the feature bitmask."""

    result: int
    reason: int = 0
    transfer_syntax: SyntaxId = NULL_SYNTAX

    SIZE = 4 + SyntaxId.SIZE

    def encode(self) -> bytes:
        head = self.result.to_bytes(2, "little") + self.reason.to_bytes(2, "little")
        return head + self.transfer_syntax.encode()


@structure
@dataclass(frozen=True, slots=True)
class _BindAckFixed(Structure):
    max_xmit_frag: int = u16(0)
    max_recv_frag: int = u16(0)
    assoc_group_id: int = u32(0)


@dataclass(frozen=True, slots=True)
class BindAck:
    """[C706] 12.6.4.4 bind_ack and 12.6.4.2 alter_context_resp. The secondary address is a
    port_any_t: a length counting the terminating NUL, then the ASCII characters (none for an
    empty address); the result list starts 4-aligned from the start of the PDU."""

    call_id: int
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    secondary_address: str
    results: tuple[ContextResultEntry, ...]
    ptype: PType = PType.BIND_ACK
    flags: int = WHOLE

    def encode(self) -> bytes:
        address = self.secondary_address.encode("ascii") + b"\x00" if self.secondary_address else b""
        body = bytearray(
            _BindAckFixed(self.max_xmit_frag, self.max_recv_frag, self.assoc_group_id).to_bytes()
        )
        body += len(address).to_bytes(2, "little") + address
        body += bytes(-(HEADER_SIZE + len(body)) % 4)
        body += bytes([len(self.results), 0, 0, 0])
        body += b"".join(r.encode() for r in self.results)
        return _pdu(self.ptype, self.flags, self.call_id, bytes(body))

    @classmethod
    def decode(cls, pdu: Buffer) -> BindAck:
        hdr = parse_header(pdu)
        if hdr.ptype not in (PType.BIND_ACK, PType.ALTER_CONTEXT_RESP):
            raise RpcProtocolError(f"PDU type {hdr.ptype} is not a bind_ack")
        body = _body(pdu, hdr)
        try:
            fixed = _BindAckFixed.decode(body)
            offset = _BindAckFixed.SIZE
            length = int.from_bytes(read_bytes(body, offset, 2, "sec_addr length"), "little")
            address = bytes(read_bytes(body, offset + 2, length, "sec_addr"))
            offset += 2 + length
            offset += -(HEADER_SIZE + offset) % 4
            count = read_bytes(body, offset, 4, "p_result_list")[0]
            offset += 4
            results = []
            for _ in range(count):
                entry = read_bytes(body, offset, ContextResultEntry.SIZE, "p_result_t")
                results.append(
                    ContextResultEntry(
                        int.from_bytes(entry[0:2], "little"),
                        int.from_bytes(entry[2:4], "little"),
                        SyntaxId.decode(entry, 4),
                    )
                )
                offset += ContextResultEntry.SIZE
        except RpcProtocolError:
            raise
        except RemoteProtocolError as exc:
            raise RpcProtocolError(f"bind_ack: {exc.args[0]}") from None
        text = address.rstrip(b"\x00").decode("ascii", errors="replace")
        return cls(
            hdr.call_id, fixed.max_xmit_frag, fixed.max_recv_frag, fixed.assoc_group_id, text,
            tuple(results), PType(hdr.ptype), hdr.pfc_flags,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BindNak:
    """[C706] 12.6.4.5 bind_nak: the reject reason and the protocol versions supported
    (padded to a multiple of 4 octets)."""

    call_id: int
    reason: int
    versions: tuple[tuple[int, int], ...] = ((RPC_VERS, 0),)

    def encode(self) -> bytes:
        body = self.reason.to_bytes(2, "little") + bytes([len(self.versions)])
        body += b"".join(bytes(v) for v in self.versions)
        body += bytes(-(HEADER_SIZE + len(body)) % 4)
        return _pdu(PType.BIND_NAK, WHOLE, self.call_id, body)

    @classmethod
    def decode(cls, pdu: Buffer) -> BindNak:
        hdr = parse_header(pdu)
        if hdr.ptype != PType.BIND_NAK:
            raise RpcProtocolError(f"PDU type {hdr.ptype} is not a bind_nak")
        body = _body(pdu, hdr)
        if len(body) < 3:
            raise RpcProtocolError("bind_nak: truncated")
        count = body[2]
        if len(body) < 3 + 2 * count:
            raise RpcProtocolError("bind_nak: truncated versions")
        versions = tuple((body[3 + 2 * i], body[4 + 2 * i]) for i in range(count))
        return cls(hdr.call_id, int.from_bytes(body[0:2], "little"), versions)


@structure
@dataclass(frozen=True, slots=True)
class _RequestFixed(Structure):
    alloc_hint: int = u32(0)
    p_cont_id: int = u16(0)
    opnum: int = u16(0)


@dataclass(frozen=True, slots=True)
class Request:
    """[C706] 12.6.4.9 request: one fragment of a call's input stub."""

    call_id: int
    context_id: int
    opnum: int
    stub: bytes
    flags: int = WHOLE
    alloc_hint: int = 0
    object_uuid: uuid.UUID | None = None
    auth_length: int = 0

    def encode(self) -> bytes:
        flags = self.flags | (PfcFlags.OBJECT_UUID if self.object_uuid is not None else 0)
        body = _RequestFixed(self.alloc_hint, self.context_id, self.opnum).to_bytes()
        if self.object_uuid is not None:
            body += self.object_uuid.bytes_le
        return _pdu(PType.REQUEST, flags, self.call_id, body + self.stub)

    @classmethod
    def decode(cls, pdu: Buffer) -> Request:
        hdr = parse_header(pdu)
        if hdr.ptype != PType.REQUEST:
            raise RpcProtocolError(f"PDU type {hdr.ptype} is not a request")
        body = _body(pdu, hdr)
        if len(body) < _RequestFixed.SIZE:
            raise RpcProtocolError("request: truncated")
        fixed = _RequestFixed.decode(body)
        offset = _RequestFixed.SIZE
        object_uuid = None
        if hdr.pfc_flags & PfcFlags.OBJECT_UUID:
            if len(body) < offset + 16:
                raise RpcProtocolError("request: truncated object UUID")
            object_uuid = uuid.UUID(bytes_le=bytes(body[offset : offset + 16]))
            offset += 16
        return cls(
            hdr.call_id, fixed.p_cont_id, fixed.opnum, bytes(body[offset:]), hdr.pfc_flags,
            fixed.alloc_hint, object_uuid, hdr.auth_length,
        )  # fmt: skip


@structure
@dataclass(frozen=True, slots=True)
class _ResponseFixed(Structure):
    alloc_hint: int = u32(0)
    p_cont_id: int = u16(0)
    cancel_count: int = u8(0)
    reserved: int = u8(0)


@dataclass(frozen=True, slots=True)
class Response:
    """[C706] 12.6.4.10 response: one fragment of a call's output stub; ``alloc_hint`` is the
    stub length from this fragment on."""

    call_id: int
    context_id: int
    stub: bytes
    flags: int = WHOLE
    alloc_hint: int = 0
    cancel_count: int = 0

    def encode(self) -> bytes:
        body = _ResponseFixed(self.alloc_hint, self.context_id, self.cancel_count).to_bytes()
        return _pdu(PType.RESPONSE, self.flags, self.call_id, body + self.stub)

    @classmethod
    def decode(cls, pdu: Buffer) -> Response:
        hdr = parse_header(pdu)
        if hdr.ptype != PType.RESPONSE:
            raise RpcProtocolError(f"PDU type {hdr.ptype} is not a response")
        body = _body(pdu, hdr)
        if len(body) < _ResponseFixed.SIZE:
            raise RpcProtocolError("response: truncated")
        fixed = _ResponseFixed.decode(body)
        stub = bytes(body[_ResponseFixed.SIZE :])
        return cls(hdr.call_id, fixed.p_cont_id, stub, hdr.pfc_flags, fixed.alloc_hint, fixed.cancel_count)


@structure
@dataclass(frozen=True, slots=True)
class _FaultFixed(Structure):
    alloc_hint: int = u32(0)
    p_cont_id: int = u16(0)
    cancel_count: int = u8(0)
    reserved: int = u8(0)
    status: int = u32(0)
    reserved2: int = u32(0)


@dataclass(frozen=True, slots=True)
class Fault:
    """[C706] 12.6.4.7 fault: the call failed with ``status``."""

    call_id: int
    status: int
    context_id: int = 0
    flags: int = WHOLE
    alloc_hint: int = 0
    cancel_count: int = 0

    def encode(self) -> bytes:
        body = _FaultFixed(self.alloc_hint, self.context_id, self.cancel_count, 0, self.status).to_bytes()
        return _pdu(PType.FAULT, self.flags, self.call_id, body)

    @classmethod
    def decode(cls, pdu: Buffer) -> Fault:
        hdr = parse_header(pdu)
        if hdr.ptype != PType.FAULT:
            raise RpcProtocolError(f"PDU type {hdr.ptype} is not a fault")
        body = _body(pdu, hdr)
        if len(body) < _FaultFixed.SIZE:
            raise RpcProtocolError("fault: truncated")
        f = _FaultFixed.decode(body)
        return cls(hdr.call_id, f.status, f.p_cont_id, hdr.pfc_flags, f.alloc_hint, f.cancel_count)


Pdu = Bind | BindAck | BindNak | Request | Response | Fault

_DECODERS: dict[int, Callable[[Buffer], Pdu]] = {
    PType.BIND: Bind.decode,
    PType.ALTER_CONTEXT: Bind.decode,
    PType.BIND_ACK: BindAck.decode,
    PType.ALTER_CONTEXT_RESP: BindAck.decode,
    PType.BIND_NAK: BindNak.decode,
    PType.REQUEST: Request.decode,
    PType.RESPONSE: Response.decode,
    PType.FAULT: Fault.decode,
}


def decode_pdu(pdu: Buffer) -> Pdu:
    """Any PDU of the types above, whole; other types and malformed input raise
    :class:`RpcProtocolError`."""
    hdr = parse_header(pdu)
    decoder = _DECODERS.get(hdr.ptype)
    if decoder is None:
        raise RpcProtocolError(f"PDU type {hdr.ptype} is not handled here")
    return decoder(memoryview(pdu)[: hdr.frag_length])


class PduFramer:
    """Splits a byte stream into PDUs by frag_length (a PDU may span pipe messages, and a
    message may hold several PDUs). ``max_frag`` bounds a fragment before it is buffered."""

    def __init__(self, max_frag: int) -> None:
        self.max_frag = max_frag
        self._buf = bytearray()

    def receive_data(self, data: Buffer) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_pdu(self) -> bytes | None:
        """The next whole PDU, None until one is complete; a bad header raises
        :class:`RpcProtocolError` (the stream cannot be resynchronised after it)."""
        if len(self._buf) < HEADER_SIZE:
            return None
        hdr = parse_header(self._buf)
        if hdr.frag_length > self.max_frag:
            raise RpcProtocolError(f"frag_length {hdr.frag_length} above {self.max_frag}")
        if len(self._buf) < hdr.frag_length:
            return None
        pdu = bytes(self._buf[: hdr.frag_length])
        del self._buf[: hdr.frag_length]
        return pdu

    def peek_header(self) -> CommonHeader | None:
        """The header of the buffered (possibly incomplete) PDU, undecoded fields unchecked."""
        if len(self._buf) < HEADER_SIZE:
            return None
        return CommonHeader.decode(self._buf)


# -- NDR32 ---------------------------------------------------------------------------------------

T = TypeVar("T")

#: Where Windows starts numbering the referents of unique pointers (any non-zero value will do).
FIRST_REFERENT = 0x00020000


class Deferred(Generic[T]):
    """The referent of a pointer, filled in when the reader reaches the deferred part;
    ``present`` tells a non-NULL pointer from a NULL one."""

    __slots__ = ("present", "value")

    def __init__(self, value: T | None = None, present: bool = False) -> None:
        self.value = value
        self.present = present


class NdrReader:
    """Unmarshals NDR32 little-endian ([C706] 14.2-14.3) with bounds checks; every failure is
    an :class:`NdrError`. Pointer referents are read in :meth:`deferred`, depth-first in the
    order the pointers were met, as NDR lays them out."""

    def __init__(self, data: Buffer) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self._pending: list[list[Callable[[], None]]] = [[]]

    def _take(self, size: int, what: str) -> memoryview:
        if self.pos + size > len(self.data):
            raise NdrError(f"NDR {what}: needs {size} bytes at {self.pos}, stub has {len(self.data)}")
        view = self.data[self.pos : self.pos + size]
        self.pos += size
        return view

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def u8(self) -> int:
        return self._take(1, "u8")[0]

    def u16(self) -> int:
        self.align(2)
        return int.from_bytes(self._take(2, "u16"), "little")

    def u32(self) -> int:
        self.align(4)
        return int.from_bytes(self._take(4, "u32"), "little")

    def unique(self, read: Callable[[], T]) -> Deferred[T]:
        """A [unique] pointer: a referent id (0 for NULL); the referent is read later."""
        slot: Deferred[T] = Deferred()
        if self.u32():
            slot.present = True
            self._pending[-1].append(lambda: setattr(slot, "value", read()))
        return slot

    def ref(self, read: Callable[[], T]) -> Deferred[T]:
        """An embedded [ref] pointer: never NULL."""
        slot: Deferred[T] = Deferred(present=True)
        if not self.u32():
            raise NdrError(f"NULL [ref] pointer at {self.pos - 4}")
        self._pending[-1].append(lambda: setattr(slot, "value", read()))
        return slot

    def deferred(self) -> None:
        """Read the referents of the pointers met since the last call, each followed by its own."""
        queue, self._pending[-1] = self._pending[-1], []
        for read in queue:
            self._pending.append([])
            read()
            self.deferred()
            self._pending.pop()

    def conformance(self, element_size: int, what: str) -> int:
        """The max_count of a conformant array, bounded by the bytes left (no huge allocations)."""
        count = self.u32()
        if count * element_size > len(self.data) - self.pos:
            raise NdrError(f"NDR {what}: {count} elements cannot fit the stub")
        return count

    def string(self) -> str:
        """A conformant varying ``[string] wchar_t*`` referent: max_count, offset 0,
        actual_count UTF-16 units including the terminating NUL."""
        maximum = self.u32()
        offset = self.u32()
        actual = self.u32()
        if offset != 0 or actual > maximum or actual == 0:
            raise NdrError(f"NDR string: max {maximum} offset {offset} actual {actual}")
        raw_chars = self._take(2 * actual, "string")
        if bytes(raw_chars[-2:]) != b"\x00\x00":
            raise NdrError("NDR string without its terminating NUL")
        try:
            return bytes(raw_chars[:-2]).decode("utf-16-le")
        except UnicodeDecodeError:
            raise NdrError("NDR string: invalid UTF-16") from None

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


class NdrWriter:
    """Marshals NDR32 little-endian; the mirror of :class:`NdrReader`. Pointers get referent
    ids from ``first_referent`` on, in steps of 4 (as Windows and Samba number them)."""

    def __init__(self, first_referent: int = FIRST_REFERENT) -> None:
        self.buf = bytearray()
        self._referent = first_referent
        self._pending: list[list[Callable[[], None]]] = [[]]

    def align(self, n: int) -> None:
        self.buf += bytes(-len(self.buf) % n)

    def u8(self, value: int) -> None:
        self.buf.append(value)

    def u16(self, value: int) -> None:
        self.align(2)
        self.buf += value.to_bytes(2, "little")

    def u32(self, value: int) -> None:
        self.align(4)
        self.buf += value.to_bytes(4, "little")

    def pointer(self, write: Callable[[], None] | None) -> None:
        """A [unique] (or embedded [ref]) pointer: NULL for None, else a referent id now and
        the referent written by :meth:`deferred`."""
        if write is None:
            self.u32(0)
            return
        self.u32(self._referent)
        self._referent += 4
        self._pending[-1].append(write)

    def deferred(self) -> None:
        queue, self._pending[-1] = self._pending[-1], []
        for write in queue:
            self._pending.append([])
            write()
            self.deferred()
            self._pending.pop()

    def string(self, text: str) -> None:
        """A conformant varying [string] with its terminating NUL."""
        data = text.encode("utf-16-le") + b"\x00\x00"
        count = len(data) // 2
        self.u32(count)
        self.u32(0)
        self.u32(count)
        self.buf += data

    def getvalue(self) -> bytes:
        return bytes(self.buf)


# -- the server side of an association -----------------------------------------------------------


class Interface(Protocol):
    """An RPC interface a pipe serves: its abstract syntax and a call dispatcher that returns the
    output stub or raises :class:`RpcFault` (:class:`NdrError` for stub data that does not decode)."""

    @property
    def syntax(self) -> SyntaxId: ...

    def call(self, opnum: int, stub: memoryview) -> bytes: ...


@dataclass(frozen=True)
class RpcLimits:
    """Limits of one association, with Windows's values over named pipes as defaults."""

    #: Largest fragment accepted and sent (what bind_ack offers; clients then agree to it).
    max_frag: int = 4280
    #: Smallest fragment size negotiated, whatever a client offers ([C706] needs 1432; Windows 2048).
    min_frag: int = 2048
    #: Largest reassembled request stub.
    max_request: int = 1 << 20
    #: Presentation contexts one association may hold.
    max_contexts: int = 16


class AssocState(enum.Enum):
    AWAIT_BIND = "await-bind"
    BOUND = "bound"
    CLOSED = "closed"


#: The association's transition table: the PDU types each state accepts.
ACCEPTS: dict[AssocState, frozenset[int]] = {
    AssocState.AWAIT_BIND: frozenset({PType.BIND}),
    AssocState.BOUND: frozenset({PType.REQUEST, PType.ALTER_CONTEXT, PType.CO_CANCEL, PType.ORPHANED}),
    AssocState.CLOSED: frozenset(),
}


@dataclass(eq=False)
class _Context:
    context_id: int
    interface: Interface


@dataclass(eq=False)
class _Call:
    """A request being reassembled from its fragments."""

    call_id: int
    context: _Context
    opnum: int
    stub: bytearray = field(default_factory=bytearray)


class RpcConnection:
    """The server side of one connection-oriented association (one pipe instance)."""

    def __init__(
        self,
        interfaces: Sequence[Interface],
        *,
        secondary_address: str,
        assoc_group_id: int,
        limits: RpcLimits | None = None,
    ) -> None:
        self.interfaces = list(interfaces)
        self.secondary_address = secondary_address
        self.assoc_group_id = assoc_group_id
        self.limits = limits or RpcLimits()
        self.state = AssocState.AWAIT_BIND
        self.max_xmit_frag = self.limits.max_frag
        self.features = BindTimeFeatures(0)
        self.contexts: dict[int, _Context] = {}
        self._framer = PduFramer(self.limits.max_frag)
        self._call: _Call | None = None
        self._out: list[bytes] = []

    @property
    def closed(self) -> bool:
        return self.state is AssocState.CLOSED

    @property
    def partial(self) -> bool:
        """Whether part of a PDU is buffered, waiting for the rest."""
        return self._framer.buffered > 0

    def data_to_send(self) -> list[bytes]:
        """PDUs produced since the last call, in order; each is one pipe message."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: Buffer) -> None:
        """Bytes written to the pipe. Never raises for what the peer sent: protocol errors
        are answered (bind_nak or fault) and end the association."""
        if self.closed:
            return
        self._framer.receive_data(data)
        while not self.closed:
            first = self._framer.peek_header()
            try:
                pdu = self._framer.next_pdu()
                if pdu is None:
                    return
                self._handle(pdu)
            except RpcProtocolError as exc:
                self._fail(exc, first)

    def _fail(self, exc: RpcProtocolError, hdr: CommonHeader | None) -> None:
        log.info("ending RPC association after a protocol error", extra={"error": str(exc)})
        call_id = hdr.call_id if hdr is not None else 0
        if self.state is AssocState.AWAIT_BIND:
            self._out.append(BindNak(call_id, exc.bind_nak_reason).encode())
        else:
            if self._call is not None:  # the fault goes to the call being reassembled
                call_id = self._call.call_id
            flags = WHOLE | PfcFlags.DID_NOT_EXECUTE
            self._out.append(Fault(call_id, exc.fault, flags=flags).encode())
        self._call = None
        self.state = AssocState.CLOSED

    def _handle(self, pdu: bytes) -> None:
        hdr = parse_header(pdu)
        if hdr.ptype not in ACCEPTS[self.state]:
            raise RpcProtocolError(
                f"PDU type {hdr.ptype} in state {self.state.value}",
                bind_nak_reason=BindNakReason.PROTOCOL_VERSION_NOT_SUPPORTED,  # as Samba answers
            )
        if hdr.ptype == PType.BIND:
            self._bind(Bind.decode(pdu))
        elif hdr.ptype == PType.ALTER_CONTEXT:
            self._alter_context(Bind.decode(pdu))
        elif hdr.ptype == PType.REQUEST:
            self._request(Request.decode(pdu))
        elif hdr.ptype == PType.ORPHANED and self._call is not None and self._call.call_id == hdr.call_id:
            # [MS-RPCE] 3.3.1.5.10: the client abandoned the call; drop what was received of it.
            self._call = None
        # CO_CANCEL: every call here completes at once; there is nothing to cancel.

    # -- presentation contexts ([C706] 12.6.4.3, [MS-RPCE] 3.3.1.5.3 and 3.3.1.5.6) ------------

    def _bind(self, bind: Bind) -> None:
        if bind.auth_length:
            raise RpcProtocolError(
                "bind with an authentication verifier",
                bind_nak_reason=BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED,
            )
        results = self._negotiate(bind)
        agreed = min(bind.max_xmit_frag, bind.max_recv_frag, self.limits.max_frag)
        self.max_xmit_frag = max(agreed, self.limits.min_frag) & ~7
        if bind.assoc_group_id:
            self.assoc_group_id = bind.assoc_group_id  # joining a group: nothing here is shared
        self.state = AssocState.BOUND
        ack = BindAck(
            bind.call_id, self.max_xmit_frag, self.max_xmit_frag, self.assoc_group_id,
            self.secondary_address, results,
        )  # fmt: skip
        self._out.append(ack.encode())

    def _alter_context(self, alter: Bind) -> None:
        if alter.auth_length:
            raise RpcProtocolError("alter_context with an authentication verifier")
        results = self._negotiate(alter)
        resp = BindAck(
            alter.call_id, self.max_xmit_frag, self.max_xmit_frag, self.assoc_group_id, "", results,
            PType.ALTER_CONTEXT_RESP,
        )  # fmt: skip
        self._out.append(resp.encode())

    def _negotiate(self, bind: Bind) -> tuple[ContextResultEntry, ...]:
        if not bind.contexts:
            raise RpcProtocolError("bind without presentation contexts")
        results: list[ContextResultEntry] = []
        accepted: set[SyntaxId] = set()
        features_seen = False
        for element in bind.contexts:
            if not element.transfer_syntaxes:
                raise RpcProtocolError(f"context {element.context_id} without transfer syntaxes")
            offered = bind_time_features(element.transfer_syntaxes[0])
            if offered is not None:
                if features_seen:
                    raise RpcProtocolError("two bind-time feature negotiation contexts")
                features_seen = True
                # No security contexts here, so no multiplexing of them; orphaned calls are
                # dropped and the connection kept.
                self.features = offered & BindTimeFeatures.KEEP_CONNECTION_ON_ORPHAN
                results.append(ContextResultEntry(ContextResult.NEGOTIATE_ACK, int(self.features)))
                continue
            results.append(self._context(element, accepted))
        return tuple(results)

    def _context(self, element: ContextElement, accepted: set[SyntaxId]) -> ContextResultEntry:
        abstract = element.abstract_syntax
        interface = next(
            (i for i in self.interfaces
             if i.syntax.uuid == abstract.uuid and i.syntax.major == abstract.major
             and abstract.minor <= i.syntax.minor),
            None,
        )  # fmt: skip
        if interface is None:
            return ContextResultEntry(
                ContextResult.PROVIDER_REJECTION, ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED
            )
        rejected = ContextResultEntry(
            ContextResult.PROVIDER_REJECTION, ProviderReason.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED
        )
        if NDR32 not in element.transfer_syntaxes or interface.syntax in accepted:
            return rejected  # one context per interface and bind: the others are declined
        existing = self.contexts.get(element.context_id)
        if existing is not None:
            if existing.interface is not interface:
                raise RpcProtocolError(f"context {element.context_id} rebound to another interface")
        elif len(self.contexts) >= self.limits.max_contexts:
            return ContextResultEntry(ContextResult.USER_REJECTION, ProviderReason.LOCAL_LIMIT_EXCEEDED)
        else:
            self.contexts[element.context_id] = _Context(element.context_id, interface)
        accepted.add(interface.syntax)
        return ContextResultEntry(ContextResult.ACCEPTANCE, 0, NDR32)

    # -- calls ([C706] 12.6.4.9-10, 12.6.4.7) ----------------------------------------------------

    def _request(self, req: Request) -> None:
        if req.auth_length:
            raise RpcProtocolError(
                "request with an authentication verifier on an unauthenticated association"
            )
        call = self._call
        if req.flags & PfcFlags.FIRST_FRAG:
            if call is not None:
                raise RpcProtocolError(f"call {req.call_id} started while call {call.call_id} is incomplete")
            context = self.contexts.get(req.context_id)
            if context is None:
                fault = Fault(
                    req.call_id, FaultStatus.UNK_IF, req.context_id, WHOLE | PfcFlags.DID_NOT_EXECUTE
                )
                self._out.append(fault.encode())
                return
            if req.alloc_hint > self.limits.max_request:
                raise RpcProtocolError(f"request alloc_hint {req.alloc_hint} above {self.limits.max_request}")
            call = self._call = _Call(req.call_id, context, req.opnum)
        elif call is None or (call.call_id, call.context.context_id, call.opnum) != (
            req.call_id,
            req.context_id,
            req.opnum,
        ):
            raise RpcProtocolError(f"request fragment of call {req.call_id} that is not in progress")
        if len(call.stub) + len(req.stub) > self.limits.max_request:
            raise RpcProtocolError(f"request stub above {self.limits.max_request} bytes")
        call.stub += req.stub
        if not req.flags & PfcFlags.LAST_FRAG:
            return
        self._call = None
        self._dispatch(call)

    def _dispatch(self, call: _Call) -> None:
        context_id = call.context.context_id
        try:
            stub = call.context.interface.call(call.opnum, memoryview(call.stub))
        except RpcFault as exc:
            log.info("RPC call failed", extra={"opnum": call.opnum, "error": str(exc)})
            flags = WHOLE
            if exc.fault in (FaultStatus.OP_RNG_ERROR, FaultStatus.UNK_IF):
                flags |= PfcFlags.DID_NOT_EXECUTE
            self._out.append(Fault(call.call_id, exc.fault, context_id, flags).encode())
            return
        self._out.extend(fragment_response(call.call_id, context_id, stub, self.max_xmit_frag))


RESPONSE_HEADER_SIZE = HEADER_SIZE + _ResponseFixed.SIZE


def fragment_response(call_id: int, context_id: int, stub: bytes, max_frag: int) -> list[bytes]:
    """A call's output stub as response PDUs of at most ``max_frag`` bytes; every fragment but
    the last carries a multiple of 8 stub bytes, and alloc_hint counts the stub still to come."""
    room = (max_frag - RESPONSE_HEADER_SIZE) & ~7
    if room <= 0:
        raise ValueError(f"fragment size {max_frag} leaves no room for stub data")
    pdus = []
    offset = 0
    while True:
        chunk = stub[offset : offset + room]
        flags = (PfcFlags.FIRST_FRAG if offset == 0 else 0) | (
            PfcFlags.LAST_FRAG if offset + room >= len(stub) else 0
        )
        pdus.append(Response(call_id, context_id, chunk, flags, len(stub) - offset).encode())
        offset += room
        if offset >= len(stub):
            return pdus


def reassemble_response(pdus: Sequence[Buffer]) -> bytes:
    """The output stub of a call from its response fragments (for clients and tests); a fault
    raises :class:`RpcFault`."""
    stub = bytearray()
    for i, pdu in enumerate(pdus):
        decoded = decode_pdu(pdu)
        if isinstance(decoded, Fault):
            raise RpcFault(f"call {decoded.call_id} failed with {decoded.status:#010x}", decoded.status)
        if not isinstance(decoded, Response):
            raise RpcProtocolError(f"expected a response, got {type(decoded).__name__}")
        if bool(decoded.flags & PfcFlags.FIRST_FRAG) != (i == 0):
            raise RpcProtocolError("response fragments out of order")
        stub += decoded.stub
        if decoded.flags & PfcFlags.LAST_FRAG:
            if i != len(pdus) - 1:
                raise RpcProtocolError("response fragments after the last one")
            return bytes(stub)
    raise RpcProtocolError("response without its last fragment")
