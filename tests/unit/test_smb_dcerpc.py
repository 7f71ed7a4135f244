"""DCE/RPC PDUs, NDR32 and the server side of an association: golden PDUs both ways (captured
from Samba's smbclient against Samba's smbd), fragments, faults, and hostile input."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbcore.dcerpc import (
    NDR32,
    NDR64,
    NULL_SYNTAX,
    AssocState,
    Bind,
    BindAck,
    BindNak,
    BindNakReason,
    BindTimeFeatures,
    ContextElement,
    ContextResult,
    ContextResultEntry,
    Fault,
    FaultStatus,
    NdrError,
    NdrReader,
    NdrWriter,
    PduFramer,
    PfcFlags,
    ProviderReason,
    PType,
    Request,
    Response,
    RpcConnection,
    RpcFault,
    RpcLimits,
    RpcProtocolError,
    SyntaxId,
    bind_time_feature_syntax,
    bind_time_features,
    decode_pdu,
    fragment_response,
    reassemble_response,
)
from smbcore.srvsvc import SRVSVC, ServerInfo, SrvsvcInterface

# Captured from Samba 4.17's smbclient -L against Samba 4.17's smbd (SMB3, signed): the
# FSCTL_PIPE_TRANSCEIVE input and output on the srvsvc pipe.
SMBCLIENT_BIND = bytes.fromhex(
    "05000b03100000004800000001000000b810b810000000000100000000000100"
    "c84f324b7016d30112785a47bf6ee18803000000045d888aeb1cc9119fe80800"
    "2b10486002000000"
)
SAMBA_BIND_ACK = bytes.fromhex(
    "05000c03100000004400000001000000b810b810faaa00000d005c706970655c"
    "73727673766300000100000000000000045d888aeb1cc9119fe808002b104860"
    "02000000"
)
SMBCLIENT_SHARE_ENUM = bytes.fromhex(
    "05000003100000005c000000020000004400000000000f00000002000a000000"
    "000000000a0000003100320037002e0030002e0030002e003100000001000000"
    "01000000040002000000000000000000ffffffff0800020000000000"
)
SAMBA_SHARE_ENUM = bytes.fromhex(
    "05000203100000001801000002000000000100000000000001000000010000000c000200"
    "0300000010000200030000001400020000000000180002001c0002000000000020000200"
    "2400020003000080280002000500000000000000050000006400610074006100000000000b"
    "000000000000000b00000044006100740061002000660069006c006500730000000000060000"
    "0000000000060000006f00740068006500720000000100000000000000010000000000000005"
    "0000000000000005000000490050004300240000000000150000000000000015000000490050"
    "004300200053006500720076006900630065002000280067006f006c00640065006e00290000"
    "000000030000002c0002000000000000000000"
)

SRVSVC_CONTEXT = ContextElement(0, SRVSVC, (NDR32,))


class Echo:
    """A test interface: opnum 0 echoes the stub, opnum 1 faults, others are out of range."""

    syntax = SyntaxId(uuid.UUID("12345678-1234-abcd-ef00-0123456789ab"), 1, 0)

    def call(self, opnum: int, stub: memoryview) -> bytes:
        if opnum == 0:
            return bytes(stub)
        if opnum == 1:
            raise NdrError("bad stub")
        raise RpcFault(f"opnum {opnum}", FaultStatus.OP_RNG_ERROR)


ECHO_CONTEXT = ContextElement(0, Echo.syntax, (NDR32,))


def association(**limits: int) -> RpcConnection:
    return RpcConnection(
        [Echo()], secondary_address="\\PIPE\\echo", assoc_group_id=0x1234, limits=RpcLimits(**limits)
    )


def bound(**limits: int) -> RpcConnection:
    conn = association(**limits)
    conn.receive_data(Bind(1, 4280, 4280, 0, (ECHO_CONTEXT,)).encode())
    (ack,) = conn.data_to_send()
    assert BindAck.decode(ack).results[0].result == ContextResult.ACCEPTANCE
    return conn


def only(conn: RpcConnection) -> object:
    (pdu,) = conn.data_to_send()
    return decode_pdu(pdu)


# -- golden PDUs ---------------------------------------------------------------------------------


def test_smbclient_bind_decodes_and_encodes_back() -> None:
    bind = decode_pdu(SMBCLIENT_BIND)
    assert bind == Bind(1, 4280, 4280, 0, (SRVSVC_CONTEXT,))
    assert bind.encode() == SMBCLIENT_BIND


def test_samba_bind_ack_decodes_and_encodes_back() -> None:
    ack = decode_pdu(SAMBA_BIND_ACK)
    assert ack == BindAck(
        1, 4280, 4280, 0xAAFA, "\\pipe\\srvsvc", (ContextResultEntry(ContextResult.ACCEPTANCE, 0, NDR32),)
    )
    assert ack.encode() == SAMBA_BIND_ACK


def test_our_bind_ack_is_samba_s_byte_for_byte() -> None:
    srvsvc = SrvsvcInterface(list, ServerInfo("FERRY"))
    conn = RpcConnection([srvsvc], secondary_address="\\pipe\\srvsvc", assoc_group_id=0xAAFA)
    conn.receive_data(SMBCLIENT_BIND)
    assert conn.data_to_send() == [SAMBA_BIND_ACK]


def test_request_and_response_golden_both_ways() -> None:
    req = decode_pdu(SMBCLIENT_SHARE_ENUM)
    assert isinstance(req, Request)
    assert (req.call_id, req.context_id, req.opnum, req.alloc_hint, len(req.stub)) == (2, 0, 15, 0x44, 0x44)
    assert req.encode() == SMBCLIENT_SHARE_ENUM
    resp = decode_pdu(SAMBA_SHARE_ENUM)
    assert isinstance(resp, Response)
    assert (resp.call_id, resp.context_id, resp.alloc_hint, len(resp.stub)) == (2, 0, 0x100, 0x100)
    assert resp.encode() == SAMBA_SHARE_ENUM
    assert fragment_response(2, 0, resp.stub, 4280) == [SAMBA_SHARE_ENUM]


@pytest.mark.parametrize("pdu", [SMBCLIENT_BIND, SMBCLIENT_SHARE_ENUM, SAMBA_BIND_ACK, SAMBA_SHARE_ENUM])
def test_framer_whole_byte_by_byte_and_with_a_trailing_partial(pdu: bytes) -> None:
    framer = PduFramer(8192)
    framer.receive_data(pdu + pdu[:10])
    assert framer.next_pdu() == pdu
    assert framer.next_pdu() is None
    framer = PduFramer(8192)
    got = []
    for byte in pdu + pdu:
        framer.receive_data(bytes([byte]))
        if (one := framer.next_pdu()) is not None:
            got.append(one)
    assert got == [pdu, pdu]


def test_pdu_with_trailing_bytes_decodes_to_its_frag_length() -> None:
    assert decode_pdu(SMBCLIENT_BIND + b"garbage") == decode_pdu(SMBCLIENT_BIND)


# -- negotiation ---------------------------------------------------------------------------------


def test_bind_time_feature_negotiation_is_answered_with_negotiate_ack() -> None:
    conn = association()
    offer = bind_time_feature_syntax(
        BindTimeFeatures.SECURITY_CONTEXT_MULTIPLEXING | BindTimeFeatures.KEEP_CONNECTION_ON_ORPHAN
    )
    assert str(offer.uuid).startswith("6cb71c2c-9812-4540-0300")
    contexts = (
        ECHO_CONTEXT,
        ContextElement(1, Echo.syntax, (NDR64,)),
        ContextElement(2, Echo.syntax, (offer,)),
    )
    conn.receive_data(Bind(7, 5840, 5840, 0, contexts).encode())
    ack = only(conn)
    assert ack == BindAck(
        7, 4280, 4280, 0x1234, "\\PIPE\\echo",
        (
            ContextResultEntry(ContextResult.ACCEPTANCE, 0, NDR32),
            ContextResultEntry(
                ContextResult.PROVIDER_REJECTION, ProviderReason.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED
            ),
            # No security contexts here: only keeping the connection on orphaned calls.
            ContextResultEntry(ContextResult.NEGOTIATE_ACK, BindTimeFeatures.KEEP_CONNECTION_ON_ORPHAN),
        ),
    )  # fmt: skip
    assert bind_time_features(NDR32) is None
    assert conn.state is AssocState.BOUND


def test_ndr64_first_then_ndr32_selects_ndr32_and_unknown_interface_is_rejected() -> None:
    conn = association()
    unknown = SyntaxId(uuid.UUID(int=5), 1, 0)
    proposed = (ContextElement(0, Echo.syntax, (NDR64, NDR32)), ContextElement(1, unknown, (NDR32,)))
    conn.receive_data(Bind(1, 4280, 4280, 0, proposed).encode())
    ack = only(conn)
    assert isinstance(ack, BindAck)
    assert ack.results == (
        ContextResultEntry(ContextResult.ACCEPTANCE, 0, NDR32),
        ContextResultEntry(ContextResult.PROVIDER_REJECTION, ProviderReason.ABSTRACT_SYNTAX_NOT_SUPPORTED),
    )


def test_fragment_sizes_are_negotiated_down_and_floored() -> None:
    conn = association()
    conn.receive_data(Bind(1, 3001, 5000, 0, (ECHO_CONTEXT,)).encode())
    ack = only(conn)
    assert isinstance(ack, BindAck)
    assert (ack.max_xmit_frag, ack.max_recv_frag) == (3000, 3000)  # min, 8-aligned
    conn = association()
    conn.receive_data(Bind(1, 100, 100, 0, (ECHO_CONTEXT,)).encode())
    ack = only(conn)
    assert isinstance(ack, BindAck) and ack.max_xmit_frag == 2048


def test_alter_context_adds_a_context() -> None:
    conn = bound()
    conn.receive_data(
        Bind(2, 4280, 4280, 0, (ContextElement(3, Echo.syntax, (NDR32,)),), PType.ALTER_CONTEXT).encode()
    )
    resp = only(conn)
    assert resp == BindAck(
        2, 4280, 4280, 0x1234, "", (ContextResultEntry(ContextResult.ACCEPTANCE, 0, NDR32),),
        PType.ALTER_CONTEXT_RESP,
    )  # fmt: skip
    conn.receive_data(Request(3, 3, 0, b"abc").encode())
    assert only(conn) == Response(3, 3, b"abc", alloc_hint=3)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (Request(1, 0, 0, b"").encode(), BindNakReason.PROTOCOL_VERSION_NOT_SUPPORTED),
        (b"\x04" + SMBCLIENT_BIND[1:], BindNakReason.PROTOCOL_VERSION_NOT_SUPPORTED),
        (Bind(1, 4280, 4280, 0, ()).encode(), BindNakReason.NOT_SPECIFIED),
        (Bind(1, 4280, 4280, 0, (ContextElement(0, Echo.syntax, ()),)).encode(), BindNakReason.NOT_SPECIFIED),
    ],
    ids=["request-first", "version-4", "no-contexts", "no-transfer-syntax"],
)
def test_bad_first_pdu_gets_a_bind_nak_and_ends(first: bytes, reason: int) -> None:
    conn = association()
    conn.receive_data(first)
    nak = only(conn)
    assert nak == BindNak(1, reason)
    assert conn.closed
    conn.receive_data(SMBCLIENT_BIND)
    assert conn.data_to_send() == []


def test_bind_with_authentication_is_declined() -> None:
    pdu = bytearray(Bind(1, 4280, 4280, 0, (ECHO_CONTEXT,)).encode() + bytes(8 + 16))
    pdu[8:10] = len(pdu).to_bytes(2, "little")
    pdu[10:12] = (16).to_bytes(2, "little")
    conn = association()
    conn.receive_data(bytes(pdu))
    assert only(conn) == BindNak(1, BindNakReason.AUTHENTICATION_TYPE_NOT_RECOGNIZED)


def test_bind_nak_pads_to_four_octets() -> None:
    pdu = BindNak(9, BindNakReason.NOT_SPECIFIED).encode()
    assert len(pdu) == 24 and pdu[8:10] == b"\x18\x00"
    assert BindNak.decode(pdu) == BindNak(9, 0)


# -- calls and faults ----------------------------------------------------------------------------


def test_call_answers_and_the_association_carries_on_after_faults() -> None:
    conn = bound()
    conn.receive_data(Request(2, 0, 0, b"hello").encode())
    assert only(conn) == Response(2, 0, b"hello", alloc_hint=5)
    conn.receive_data(Request(3, 0, 99, b"").encode())
    assert only(conn) == Fault(
        3, FaultStatus.OP_RNG_ERROR, 0, PfcFlags.FIRST_FRAG | PfcFlags.LAST_FRAG | PfcFlags.DID_NOT_EXECUTE
    )
    conn.receive_data(Request(4, 0, 1, b"").encode())
    assert only(conn) == Fault(4, FaultStatus.BAD_STUB_DATA, 0)
    conn.receive_data(Request(5, 7, 0, b"").encode())
    assert only(conn) == Fault(
        5, FaultStatus.UNK_IF, 7, PfcFlags.FIRST_FRAG | PfcFlags.LAST_FRAG | PfcFlags.DID_NOT_EXECUTE
    )
    conn.receive_data(Request(6, 0, 0, b"still here").encode())
    assert only(conn) == Response(6, 0, b"still here", alloc_hint=10)


def test_fragmented_request_is_reassembled_and_a_long_answer_fragmented() -> None:
    conn = bound()
    payload = bytes(range(256)) * 40  # 10240 bytes: three request fragments, several responses
    pieces = [payload[:4000], payload[4000:8000], payload[8000:]]
    flags = [PfcFlags.FIRST_FRAG, 0, PfcFlags.LAST_FRAG]
    pdus = b"".join(
        Request(2, 0, 0, piece, flag, alloc_hint=len(payload) - 4000 * i).encode()
        for i, (piece, flag) in enumerate(zip(pieces, flags, strict=True))
    )
    conn.receive_data(pdus)
    out = conn.data_to_send()
    assert len(out) == 3
    assert all(len(p) <= 4280 for p in out)
    decoded = [decode_pdu(p) for p in out]
    assert all(isinstance(d, Response) and len(d.stub) % 8 == 0 for d in decoded[:-1])
    assert [d.alloc_hint for d in decoded] == [10240, 10240 - 4256, 10240 - 2 * 4256]  # type: ignore[union-attr]
    assert reassemble_response(out) == payload


def test_fragment_of_another_call_is_a_protocol_error() -> None:
    conn = bound()
    conn.receive_data(Request(2, 0, 0, b"a", PfcFlags.FIRST_FRAG).encode())
    conn.receive_data(Request(3, 0, 0, b"b", PfcFlags.LAST_FRAG).encode())
    fault = only(conn)
    assert isinstance(fault, Fault) and (fault.call_id, fault.status) == (2, FaultStatus.PROTO_ERROR)
    assert conn.closed


def test_orphaned_drops_the_call_in_progress() -> None:
    conn = bound()
    conn.receive_data(Request(2, 0, 0, b"a", PfcFlags.FIRST_FRAG).encode())
    orphaned = bytearray(Request(2, 0, 0, b"").encode()[:16])
    orphaned[2] = PType.ORPHANED
    orphaned[8:10] = (16).to_bytes(2, "little")
    conn.receive_data(bytes(orphaned))
    conn.receive_data(Request(4, 0, 0, b"next").encode())
    assert only(conn) == Response(4, 0, b"next", alloc_hint=4)


def test_request_above_the_limit_ends_the_association() -> None:
    conn = bound(max_request=1000)
    conn.receive_data(Request(2, 0, 0, bytes(600), PfcFlags.FIRST_FRAG).encode())
    conn.receive_data(Request(2, 0, 0, bytes(600), PfcFlags.LAST_FRAG).encode())
    fault = only(conn)
    assert isinstance(fault, Fault) and fault.status == FaultStatus.PROTO_ERROR
    assert conn.closed


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x05\x00\x00\x03\x10\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00",  # frag_length 8
        b"\x06\x00\x00\x03\x10\x00\x00\x00\x10\x00\x00\x00\x09\x00\x00\x00",  # version 6
        b"\x05\x00\x00\x03\x00\x00\x00\x00\x10\x00\x00\x00\x09\x00\x00\x00",  # big-endian
        b"\x05\x00\x11\x03\x10\x00\x00\x00\x10\x00\x00\x00\x09\x00\x00\x00",  # shutdown from a client
        b"\x05\x00\x00\x03\x10\x00\x00\x00\xff\xff\x00\x00\x09\x00\x00\x00",  # frag_length 65535
    ],
)
def test_garbage_after_bind_gets_a_protocol_error_fault(garbage: bytes) -> None:
    conn = bound()
    conn.receive_data(garbage)
    fault = only(conn)
    assert isinstance(fault, Fault) and fault.status == FaultStatus.PROTO_ERROR
    assert fault.flags & PfcFlags.DID_NOT_EXECUTE
    assert conn.closed


def test_reassemble_response_refuses_faults_and_disorder() -> None:
    with pytest.raises(RpcFault) as info:
        reassemble_response([Fault(1, FaultStatus.OP_RNG_ERROR).encode()])
    assert info.value.fault == FaultStatus.OP_RNG_ERROR
    first, second = fragment_response(1, 0, bytes(5000), 4280)
    with pytest.raises(RpcProtocolError):
        reassemble_response([second, first])
    with pytest.raises(RpcProtocolError):
        reassemble_response([first])


# -- NDR -----------------------------------------------------------------------------------------


def test_ndr_pointers_are_deferred_depth_first() -> None:
    w = NdrWriter()
    w.pointer(lambda: (w.u32(7), w.pointer(lambda: w.string("in"))))
    w.pointer(lambda: w.string("b"))
    w.pointer(None)
    w.deferred()
    data = w.getvalue()
    assert data.hex() == (
        "00000200" "04000200" "00000000"  # three pointers
        "07000000" "08000200"  # the first referent and its own pointer
        "03000000" "00000000" "03000000" "69006e000000" "0000"  # "in", aligned for what follows
        "02000000" "00000000" "02000000" "62000000"  # "b"
    )  # fmt: skip
    r = NdrReader(data)
    inner: list[object] = []

    def first() -> int:
        value = r.u32()
        inner.append(r.unique(r.string))
        return value

    a, b, c = r.unique(first), r.unique(r.string), r.unique(r.string)
    r.deferred()
    assert (a.value, b.value, c.present) == (7, "b", False)
    assert inner[0].value == "in"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("020000000000000002000000610062000000", "terminating NUL"),
        ("020000000100000001000000610000000000", "offset"),
        ("010000000000000002000000610000000000", "actual"),
        ("0200000000000000020000006100", "needs"),
        ("00000000000000000000000000", "actual 0"),
        ("020000000000000002000000 00d8 0000".replace(" ", ""), "UTF-16"),
    ],
)
def test_ndr_string_errors(data: str, message: str) -> None:
    with pytest.raises(NdrError, match=message):
        NdrReader(bytes.fromhex(data)).string()


def test_ndr_ref_pointer_may_not_be_null_and_conformance_is_bounded() -> None:
    with pytest.raises(NdrError, match="NULL"):
        NdrReader(bytes(4)).ref(lambda: 0)
    with pytest.raises(NdrError, match="cannot fit"):
        NdrReader(b"\xff\xff\xff\x00").conformance(4, "array")


# -- hostile input -------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_the_protocol_error(data: bytes) -> None:
    # Only the protocol error (a subclass of the core's remote error) may come out.
    with contextlib.suppress(RpcProtocolError):
        decode_pdu(data)


@given(st.binary(max_size=120), st.integers(0, 2))
def test_arbitrary_bytes_after_a_valid_header_parse_or_raise(tail: bytes, which: int) -> None:
    head = [SMBCLIENT_BIND, SMBCLIENT_SHARE_ENUM, SAMBA_BIND_ACK][which]
    data = bytearray(head[:16] + tail)
    data[8:10] = len(data).to_bytes(2, "little")
    with contextlib.suppress(RpcProtocolError):
        decode_pdu(bytes(data))


@given(st.lists(st.binary(max_size=200), max_size=5), st.booleans())
def test_the_association_answers_anything_without_raising(chunks: list[bytes], bind_first: bool) -> None:
    conn = bound() if bind_first else association()
    for chunk in chunks:
        conn.receive_data(chunk)
        for pdu in conn.data_to_send():
            assert isinstance(decode_pdu(pdu), BindAck | BindNak | Response | Fault)


syntaxes = st.builds(SyntaxId, st.uuids(), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
contexts = st.builds(
    ContextElement, st.integers(0, 0xFFFF), syntaxes, st.lists(syntaxes, max_size=3).map(tuple)
)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.lists(contexts, max_size=4).map(tuple),
    st.sampled_from([PType.BIND, PType.ALTER_CONTEXT]),
)
def test_bind_round_trip(
    call_id: int, xmit: int, recv: int, group: int, ctxs: tuple[ContextElement, ...], ptype: PType
) -> None:
    bind = Bind(call_id, xmit, recv, group, ctxs, ptype)
    assert Bind.decode(bind.encode()) == bind


@given(
    st.integers(0, 2**32 - 1),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
    st.lists(st.builds(ContextResultEntry, st.integers(0, 3), st.integers(0, 0xFFFF), syntaxes), max_size=4),
)
def test_bind_ack_round_trip(call_id: int, address: str, results: list[ContextResultEntry]) -> None:
    ack = BindAck(call_id, 4280, 4280, 5, address, tuple(results))
    assert BindAck.decode(ack.encode()) == ack


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=64),
    st.sampled_from([0, 1, 2, 3]),
    st.none() | st.uuids(),
)
def test_request_response_fault_round_trips(
    call_id: int, ctx: int, opnum: int, stub: bytes, flags: int, obj: uuid.UUID | None
) -> None:
    req = Request(call_id, ctx, opnum, stub, flags | (PfcFlags.OBJECT_UUID if obj else 0), len(stub), obj)
    assert Request.decode(req.encode()) == req
    resp = Response(call_id, ctx, stub, flags, len(stub))
    assert Response.decode(resp.encode()) == resp
    fault = Fault(call_id, opnum * 0x10001, ctx, flags)
    assert Fault.decode(fault.encode()) == fault


@given(st.binary(max_size=20000), st.integers(2048, 8192))
def test_fragmentation_round_trip(stub: bytes, max_frag: int) -> None:
    pdus = fragment_response(9, 1, stub, max_frag)
    assert all(len(p) <= max_frag for p in pdus)
    assert reassemble_response(pdus) == stub


def test_null_syntax_is_twenty_zero_bytes() -> None:
    assert NULL_SYNTAX.encode() == bytes(20)
