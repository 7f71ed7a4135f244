"""smbcore's wire layer: framing, the SMB2 header, NEGOTIATE, checked against smbprotocol's
independent encoder and fed hostile bytes."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smbcore.errors import RemoteProtocolError
from smbcore.framing import FrameDecoder, frame_header
from smbcore.header import HEADER_SIZE, Command, Flags, Header, decode_header
from smbcore.negotiate import (
    Capabilities,
    Dialect,
    EncryptionCapabilities,
    NegotiateRequest,
    NegotiateResponse,
    NetnameContext,
    PreauthIntegrity,
    SecurityMode,
    SigningCapabilities,
    UnknownContext,
)
from smbprotocol import connection as smbp
from smbprotocol.header import SMB2HeaderRequest

SALT = bytes(range(32))
GUID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def smbprotocol_negotiate() -> bytes:
    """A NEGOTIATE request as smbprotocol's client builds it (header + body)."""
    req = smbp.SMB3NegotiateRequest()
    req["dialects"] = [0x0300, 0x0302, 0x0311]
    req["security_mode"] = smbp.SecurityMode.SMB2_NEGOTIATE_SIGNING_ENABLED
    req["client_guid"] = GUID
    req["capabilities"] = smbp.Capabilities.SMB2_GLOBAL_CAP_ENCRYPTION
    contexts = []
    for ctype, data_cls, key, value in [
        (1, smbp.SMB2PreauthIntegrityCapabilities, None, None),
        (2, smbp.SMB2EncryptionCapabilities, "ciphers", [2, 1, 4, 3]),
        (5, smbp.SMB2NetnameNegotiateContextId, "net_name", "server1"),
        (8, smbp.SMB2SigningCapabilities, "signing_algorithms", [2, 1, 0]),
    ]:
        ctx = smbp.SMB2NegotiateContextRequest()
        ctx["context_type"] = ctype
        ctx["data"] = data_cls()
        if key is None:
            ctx["data"]["hash_algorithms"] = [1]
            ctx["data"]["salt"] = SALT
        else:
            ctx["data"][key] = value
        contexts.append(ctx)
    contexts[-1]["padding"].size = 0
    contexts[-1]["padding"] = b""
    req["negotiate_context_list"] = contexts
    header = SMB2HeaderRequest()
    header["command"] = 0
    header["message_id"] = 0
    header["data"] = req
    return header.pack()


def test_decode_smbprotocol_negotiate_request() -> None:
    msg = smbprotocol_negotiate()
    header = decode_header(msg)
    assert header.command == Command.NEGOTIATE and not header.is_response
    req = NegotiateRequest.decode(msg)
    assert req.dialects == (0x0300, 0x0302, 0x0311)
    assert req.client_guid == GUID.bytes_le
    assert req.security_mode == SecurityMode.SIGNING_ENABLED
    assert req.capabilities == Capabilities.ENCRYPTION
    assert req.contexts == (
        PreauthIntegrity((1,), SALT),
        EncryptionCapabilities((2, 1, 4, 3)),
        NetnameContext("server1"),
        SigningCapabilities((2, 1, 0)),
    )


def test_encode_request_matches_smbprotocol_byte_for_byte() -> None:
    msg = smbprotocol_negotiate()
    ours = NegotiateRequest(
        (0x0300, 0x0302, 0x0311),
        SecurityMode.SIGNING_ENABLED,
        Capabilities.ENCRYPTION,
        GUID.bytes_le,
        (
            PreauthIntegrity((1,), SALT),
            EncryptionCapabilities((2, 1, 4, 3)),
            NetnameContext("server1"),
            SigningCapabilities((2, 1, 0)),
        ),
    )
    assert ours.encode() == msg[HEADER_SIZE:]


def test_response_round_trip_through_smbprotocol() -> None:
    response = NegotiateResponse(
        security_mode=SecurityMode.SIGNING_ENABLED | SecurityMode.SIGNING_REQUIRED,
        dialect=Dialect.SMB_3_1_1,
        server_guid=uuid.UUID(int=7).bytes_le,
        capabilities=Capabilities.LARGE_MTU | Capabilities.MULTI_CHANNEL,
        max_transact_size=8 << 20,
        max_read_size=8 << 20,
        max_write_size=8 << 20,
        system_time=133_000_000_000_000_000,
        server_start_time=0,
        security_buffer=b"\x60\x28" + bytes(40),
        contexts=(PreauthIntegrity((1,), SALT), EncryptionCapabilities((2,)), SigningCapabilities((1,))),
    )
    body = response.encode()
    header = Header(command=Command.NEGOTIATE, flags=Flags.SERVER_TO_REDIR, credits=1).to_bytes()
    theirs = smbp.SMB2NegotiateResponse()
    theirs.unpack(body)
    assert theirs["dialect_revision"].get_value() == 0x0311
    assert theirs["max_read_size"].get_value() == 8 << 20
    assert theirs["buffer"].get_value() == response.security_buffer
    ctx_types = [c["context_type"].get_value() for c in theirs["negotiate_context_list"].get_value()]
    assert ctx_types == [1, 2, 8]
    assert NegotiateResponse.decode(header + body) == response


def test_unknown_context_is_kept_not_fatal() -> None:
    req = NegotiateRequest(
        (0x0311,), 1, 0, bytes(16), (UnknownContext(0x0003, b"\x01\x00\x00\x00"), PreauthIntegrity((1,), b""))
    )
    decoded = NegotiateRequest.decode(bytes(64) + req.encode())
    assert decoded.contexts == req.contexts


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.__setitem__(slice(64, 66), (35).to_bytes(2, "little")), "StructureSize 35"),
        (lambda b: b.__setitem__(slice(66, 68), (0).to_bytes(2, "little")), "without dialects"),
        (lambda b: b.__setitem__(slice(66, 68), (900).to_bytes(2, "little")), "Dialects"),
        (lambda b: b.__setitem__(slice(92, 96), (101).to_bytes(4, "little")), "misaligned"),
        (lambda b: b.__setitem__(slice(96, 98), (200).to_bytes(2, "little")), "negotiate contexts"),
    ],
)
def test_malformed_negotiate_is_a_remote_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    msg = bytearray(smbprotocol_negotiate())
    mutate(msg)
    with pytest.raises(RemoteProtocolError, match=message):
        NegotiateRequest.decode(msg)


def test_truncated_anywhere_is_a_remote_error() -> None:
    msg = smbprotocol_negotiate()
    for cut in range(HEADER_SIZE, len(msg) - 1):
        try:
            NegotiateRequest.decode(msg[:cut])
        except RemoteProtocolError:
            continue
        # A cut inside trailing padding may still decode; then it must decode to the same thing.
        assert NegotiateRequest.decode(msg[:cut]) == NegotiateRequest.decode(msg)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_the_protocol_error(data: bytes) -> None:
    for decoder in (NegotiateRequest.decode, NegotiateResponse.decode):
        with contextlib.suppress(RemoteProtocolError):
            decoder(bytes(64) + data)
    with contextlib.suppress(RemoteProtocolError):
        decode_header(data)


@given(
    st.lists(st.sampled_from([0x0202, 0x0210, 0x0300, 0x0302, 0x0311]), min_size=1, max_size=8),
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=64),
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.text(max_size=20),
)
def test_request_round_trip(
    dialects: list[int], guid: bytes, salt: bytes, ciphers: list[int], name: str
) -> None:
    req = NegotiateRequest(
        (*dialects, 0x0311),
        3,
        0x7F,
        guid,
        (PreauthIntegrity((1,), salt), EncryptionCapabilities(tuple(ciphers)), NetnameContext(name)),
    )
    assert NegotiateRequest.decode(bytes(64) + req.encode()) == req


# -- framing -----------------------------------------------------------------------------


def test_frames_whole_byte_by_byte_and_with_trailing_partial() -> None:
    pdus = [b"\xfeSMB" + bytes(60), b"x" * 1000, b"y"]
    stream = b"".join(frame_header(len(p)) + p for p in pdus)
    for chunk in (len(stream), 1, 7):
        dec = FrameDecoder(max_pdu=1 << 20)
        got = []
        for i in range(0, len(stream), chunk):
            dec.receive_data(stream[i : i + chunk])
            while (pdu := dec.next_pdu()) is not None:
                got.append(bytes(pdu))
        assert got == pdus
    dec = FrameDecoder(max_pdu=1 << 20)
    dec.receive_data(stream + b"\x00\x00\x00\x10abc")
    assert [bytes(p) for p in iter(dec.next_pdu, None)] == pdus
    assert dec.buffered == 7


def test_oversized_and_bad_frames_are_refused_before_buffering() -> None:
    dec = FrameDecoder(max_pdu=1024)
    dec.receive_data(frame_header(1025))
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum"):
        dec.next_pdu()
    dec = FrameDecoder(max_pdu=1024)
    dec.receive_data(b"\x81\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="non-zero first byte"):
        dec.next_pdu()
    dec = FrameDecoder(max_pdu=1024)
    dec.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="empty"):
        dec.next_pdu()


def test_held_views_survive_more_data() -> None:
    dec = FrameDecoder(max_pdu=1024)
    dec.receive_data(frame_header(3) + b"abc" + frame_header(3))
    held = dec.next_pdu()
    assert held is not None
    dec.receive_data(b"def")
    assert bytes(held) == b"abc"
    nxt = dec.next_pdu()
    assert nxt is not None and bytes(nxt) == b"def"


def test_header_fields() -> None:
    h = Header(command=Command.READ, flags=Flags.ASYNC_COMMAND | Flags.SERVER_TO_REDIR, reserved_or_async=77)
    back = decode_header(h.to_bytes())
    assert back.is_async and back.async_id == 77 and back.tree_id == 0 and back.is_response
    h = Header(command=Command.WRITE, reserved_or_async=Header.sync_field(5), status=0x0003)
    back = decode_header(h.to_bytes())
    assert back.tree_id == 5 and back.channel_sequence == 3
    with pytest.raises(RemoteProtocolError, match="unknown SMB2 command"):
        decode_header(Header(command=0x99).to_bytes())
    with pytest.raises(RemoteProtocolError, match="not an SMB2 message"):
        decode_header(b"\xffSMB" + bytes(60))
