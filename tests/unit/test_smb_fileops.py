"""File-operation bodies against smbprotocol's independent encoders, and hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbcore.errors import RemoteProtocolError
from smbcore.fileops import (
    CloseRequest,
    CreateContext,
    CreateRequest,
    CreateResponse,
    FileTimes,
    LockElement,
    LockRequest,
    QueryDirectoryRequest,
    QueryInfoRequest,
    ReadRequest,
    SetInfoRequest,
    WriteRequest,
    decode_output_buffer_response,
    decode_read_response,
    encode_close_response,
    encode_output_buffer_response,
    encode_read_response_head,
    encode_write_response,
)
from smbcore.header import HEADER_SIZE
from smbcore.ntstatus import NTStatus
from smbprotocol import open as smbopen
from smbprotocol.create_contexts import CreateContextName, SMB2CreateContextRequest

FID = bytes(range(16))
PAD = bytes(HEADER_SIZE)


def their(message: object) -> bytes:
    return PAD + message.pack()  # type: ignore[attr-defined]


def test_create_request_from_smbprotocol() -> None:
    req = smbopen.SMB2CreateRequest()
    req["impersonation_level"] = 2
    req["desired_access"] = 0x12019F
    req["file_attributes"] = 0x80
    req["share_access"] = 0x7
    req["create_disposition"] = 3
    req["create_options"] = 0x40
    req["buffer_path"] = "dir\\file.txt".encode("utf-16-le")
    ctx = SMB2CreateContextRequest()
    ctx["buffer_name"] = CreateContextName.SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST
    ctx["buffer_data"] = b""
    ctx2 = SMB2CreateContextRequest()
    ctx2["buffer_name"] = CreateContextName.SMB2_CREATE_QUERY_ON_DISK_ID
    ctx2["buffer_data"] = b""
    req["buffer_contexts"] = SMB2CreateContextRequest.pack_multiple([ctx, ctx2])
    ours = CreateRequest.decode(their(req))
    assert ours.name == "dir\\file.txt"
    assert (ours.desired_access, ours.file_attributes, ours.share_access) == (0x12019F, 0x80, 0x7)
    assert (ours.disposition, ours.options) == (3, 0x40)
    assert [c.name for c in ours.contexts] == [b"MxAc", b"QFid"]


@pytest.mark.parametrize("tag", [b"", b"x", b"xx", b"xxx"])
def test_a_create_context_tag_under_4_bytes_is_invalid_parameter(tag: bytes) -> None:
    """smbtorture's smb2.create.blob: Windows refuses tags of 0-3 bytes, takes any longer one."""
    with pytest.raises(RemoteProtocolError) as info:
        CreateRequest.decode(PAD + CreateRequest(0x80, 0, 7, 1, 0, "f", (CreateContext(tag, b""),)).encode())
    assert info.value.status == NTStatus.INVALID_PARAMETER
    long_tag = CreateRequest(0x80, 0, 7, 1, 0, "f", (CreateContext(b"x" * 17, b""),))
    assert CreateRequest.decode(PAD + long_tag.encode()) == long_tag


def test_create_round_trip_and_smbprotocol_reads_our_response() -> None:
    req = CreateRequest(
        0x80, 0, 7, 1, 0x21, "a\\b", (CreateContext(b"MxAc", b""), CreateContext(b"ExtA", b"x" * 9))
    )
    assert CreateRequest.decode(PAD + req.encode()) == req
    times = FileTimes(1, 2, 3, 4, 4096, 10, 0x20)
    resp = CreateResponse(2, times, FID)
    theirs = smbopen.SMB2CreateResponse()
    theirs.unpack(resp.encode())
    assert theirs["create_action"].get_value() == 2
    assert theirs["end_of_file"].get_value() == 10
    assert theirs["file_id"].pack() == FID
    assert CreateResponse.decode(PAD + resp.encode()) == resp


def test_read_write_close_flush_lock_from_smbprotocol() -> None:
    read = smbopen.SMB2ReadRequest()
    read["length"] = 65536
    read["offset"] = 1 << 33
    read["file_id"] = FID
    ours = ReadRequest.parse(their(read))
    assert (ours.length, ours.offset, ours.file_id, ours.channel) == (65536, 1 << 33, FID, 0)

    write = smbopen.SMB2WriteRequest()
    write["offset"] = 7
    write["file_id"] = FID
    write["buffer"] = b"hello world"
    w = WriteRequest.decode(their(write))
    assert (bytes(w.data), w.offset, w.file_id) == (b"hello world", 7, FID)

    close = smbopen.SMB2CloseRequest()
    close["flags"] = 1
    close["file_id"] = FID
    c = CloseRequest.parse(their(close))
    assert (c.flags, c.file_id) == (1, FID)

    lock = smbopen.SMB2LockRequest()
    element = smbopen.SMB2LockElement()
    element["offset"] = 10
    element["length"] = 20
    element["flags"] = 2
    lock["file_id"] = FID
    lock["locks"] = [element]
    lr = LockRequest.decode(their(lock))
    assert lr.locks == (LockElement(10, 20, 2),) and lr.file_id == FID


def test_our_responses_decode_in_smbprotocol() -> None:
    data = b"0123456789"
    rr = smbopen.SMB2ReadResponse()
    rr.unpack(encode_read_response_head(len(data)) + data)
    assert rr["buffer"].get_value() == data
    assert bytes(decode_read_response(PAD + encode_read_response_head(len(data)) + data)) == data
    wr = smbopen.SMB2WriteResponse()
    wr.unpack(encode_write_response(1234))
    assert wr["count"].get_value() == 1234
    cr = smbopen.SMB2CloseResponse()
    cr.unpack(encode_close_response(1, FileTimes(1, 2, 3, 4, 5, 6, 0x10)))
    assert cr["end_of_file"].get_value() == 6 and cr["file_attributes"].get_value() == 0x10
    qr = smbopen.SMB2QueryDirectoryResponse()
    qr.unpack(encode_output_buffer_response(b"abcdefgh"))
    assert qr["buffer"].get_value() == b"abcdefgh"
    assert decode_output_buffer_response(PAD + encode_output_buffer_response(b"xyz")) == b"xyz"
    assert decode_output_buffer_response(PAD + encode_output_buffer_response(b"")) == b""


def test_query_requests_from_smbprotocol() -> None:
    qd = smbopen.SMB2QueryDirectoryRequest()
    qd["file_information_class"] = 37
    qd["flags"] = 1
    qd["file_id"] = FID
    qd["buffer"] = "*".encode("utf-16-le")
    qd["output_buffer_length"] = 65536
    q = QueryDirectoryRequest.decode(their(qd))
    assert (q.info_class, q.flags, q.pattern, q.output_length) == (37, 1, "*", 65536)
    qi = smbopen.SMB2QueryInfoRequest()
    qi["info_type"] = 1
    qi["file_info_class"] = 18
    qi["output_buffer_length"] = 4096
    qi["file_id"] = FID
    i = QueryInfoRequest.decode(their(qi))
    assert (i.info_type, i.info_class, i.output_length, i.file_id) == (1, 18, 4096, FID)
    si = smbopen.SMB2SetInfoRequest()
    si["info_type"] = 1
    si["file_info_class"] = 20
    si["file_id"] = FID
    si["buffer"] = (5).to_bytes(8, "little")
    s = SetInfoRequest.decode(their(si))
    assert (s.info_class, s.buffer) == (20, (5).to_bytes(8, "little"))
    assert SetInfoRequest.decode(PAD + s.encode()) == s
    assert QueryInfoRequest.decode(PAD + i.encode()) == i
    assert QueryDirectoryRequest.decode(PAD + q.encode()) == q


DECODERS = [
    CreateRequest.decode, CreateResponse.decode, ReadRequest.parse, WriteRequest.decode, CloseRequest.parse,
    QueryDirectoryRequest.decode, QueryInfoRequest.decode, SetInfoRequest.decode, LockRequest.decode,
    decode_read_response, decode_output_buffer_response,
]  # fmt: skip


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(RemoteProtocolError):
            decode(PAD + data)


@pytest.mark.parametrize("count", [0, 65])
def test_lock_counts_out_of_range(count: int) -> None:
    body = (48).to_bytes(2, "little") + count.to_bytes(2, "little") + bytes(20) + bytes(24 * count)
    with pytest.raises(RemoteProtocolError, match="LOCK with"):
        LockRequest.decode(PAD + body)


def test_oversized_write_length_is_refused() -> None:
    write = smbopen.SMB2WriteRequest()
    write["file_id"] = FID
    write["buffer"] = b"abc"
    raw = bytearray(their(write))
    raw[HEADER_SIZE + 4 : HEADER_SIZE + 8] = (1 << 30).to_bytes(4, "little")
    with pytest.raises(RemoteProtocolError, match="WRITE data"):
        WriteRequest.decode(raw)
