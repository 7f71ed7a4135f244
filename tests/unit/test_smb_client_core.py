"""The sans-IO SMB client core: credit arithmetic, framing, golden vectors, signing rules,
interim and compound responses, timeouts, and hostile input; driven in memory against
Ferry's server core (with a fake file service) or against hand-made responses."""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from smbcore import crypto
from smbcore.auth import ClientAuthenticator, ServerAuthenticator, UserDatabase
from smbcore.client import (
    ClientConfig,
    ClientConnection,
    CompoundResponse,
    ConnState,
    Done,
    Event,
    InterimResponse,
    IoctlResult,
    Negotiated,
    OutputBuffer,
    ReadResult,
    Request,
    RequestState,
    RequestTimedOut,
    Response,
    Session,
    SessionEstablished,
    SessionFailed,
    SessionState,
    TreeConnect,
    WriteResult,
    _Purpose,
)
from smbcore.client_errors import (
    BadNetworkName,
    ConnectionLost,
    LogonFailure,
    SecurityRequirementError,
    SMBConnectionError,
    SMBFileExistsError,
    SMBFileNotFoundError,
    SMBStatusError,
    SMBTimeoutError,
    status_error,
)
from smbcore.credits import ClientCredits, credit_charge
from smbcore.errors import LocalProtocolError, RemoteProtocolError, SMBProtocolError
from smbcore.fileops import (
    CloseRequest,
    CreateAction,
    CreateRequest,
    CreateResponse,
    FileTimes,
    QueryInfoRequest,
    ReadRequest,
    encode_close_response,
    encode_output_buffer_response,
    encode_read_response_head,
    encode_write_response,
)
from smbcore.framing import frame_header
from smbcore.header import Command, Flags, Header, decode_header
from smbcore.ioctl import NO_FILE_ID
from smbcore.messages import EMPTY4, ShareType, encode_error
from smbcore.negotiate import Dialect, NegotiateRequest
from smbcore.ntstatus import NTStatus
from smbcore.pdureader import PDUReader
from smbcore.server import FileOperation, FileResult, ServerConnection, ServerIdentity, Share
from smbprotocol import connection as smbp
from smbprotocol.header import SMB2HeaderRequest

MiB = 1 << 20
GUID = bytes(range(16))
PASSWORD = "Pa55-word!"
TIMES = FileTimes(1, 2, 3, 4, 4096, 11, 0x20)


def fixed_randbytes(seed: int = 1) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: bytes(rng.getrandbits(8) for _ in range(n))


# -- the credit-charge formula and the client's sequence window ------------------------------------


@pytest.mark.parametrize(
    ("send", "receive", "charge"),
    [(0, 0, 1), (1, 0, 1), (65536, 0, 1), (65537, 0, 2), (0, 65537, 2), (8 * MiB, 0, 128),
     (100, 8 * MiB, 128), (8 * MiB + 1, 0, 129)],
)  # fmt: skip
def test_credit_charge(send: int, receive: int, charge: int) -> None:
    assert credit_charge(send, receive) == charge
    assert credit_charge(send, receive, multi_credit=False) == 0


def test_credit_charge_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError, match="negative"):
        credit_charge(-1, 0)


def test_client_credits_start_with_one_and_ask_for_the_target() -> None:
    credits = ClientCredits(target=64)
    assert credits.available == 1 and credits.next_message_id == 0
    assert credits.can_send(0) and not credits.can_send(2)
    message_id, request, extra = credits.take(0)  # NEGOTIATE: charge 0 still costs one id
    assert (message_id, request, extra) == (0, 64, 63)
    assert credits.available == 0 and credits.in_flight == 1
    credits.granted(64)
    credits.responded(0, extra)
    assert credits.available == 64 and credits.in_flight == 0
    message_id, request, extra = credits.take(128 // 2)  # a 4 MiB READ
    assert (message_id, request, extra) == (1, 64, 0)  # at the target: ask only for what it spends
    assert credits.next_message_id == 65


def test_client_credits_share_the_deficit_between_requests_in_flight() -> None:
    credits = ClientCredits(target=100)
    credits.take(1)
    credits.granted(10)
    credits.responded(1, 99)
    asks = [credits.take(1) for _ in range(10)]
    assert sum(extra for _, _, extra in asks) == 90  # together they ask for the deficit, once
    assert [mid for mid, _, _ in asks] == list(range(1, 11))
    with pytest.raises(ValueError, match="charge"):
        credits.take(1)


@given(st.lists(st.tuples(st.integers(0, 130), st.integers(0, 200)), max_size=60), st.integers(1, 2000))
def test_client_credits_invariants(steps: list[tuple[int, int]], target: int) -> None:
    """Whatever the server grants: ids are consecutive, the balance never goes negative, and a
    request asks beyond its cost only for what takes held + in flight + asked up to the target."""
    credits = ClientCredits(target)
    in_flight: list[tuple[int, int]] = []
    expected_id = 0
    for charge, grant in steps:
        if credits.can_send(charge):
            asked_before = sum(e for _, e in in_flight)
            held_before = credits.available + credits.in_flight
            message_id, request, extra = credits.take(charge)
            assert message_id == expected_id
            expected_id += max(charge, 1)
            assert request == max(charge, 1) + extra and request <= 0xFFFF
            in_flight.append((charge, extra))
            assert extra == 0 or held_before + asked_before + extra <= target
        elif in_flight:
            done, extra = in_flight.pop(0)
            credits.granted(grant)
            credits.responded(done, extra)
        assert credits.available >= 0 and credits.in_flight == sum(max(c, 1) for c, _ in in_flight)


# -- framing that receives in place ----------------------------------------------------------------


def frames(*pdus: bytes) -> bytes:
    return b"".join(frame_header(len(p)) + p for p in pdus)


def read_all(reader: PDUReader, stream: bytes, sizes: Callable[[], int]) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), sizes(), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        reader.buffer_updated(n)
        pos += n
        while (pdu := reader.next_pdu()) is not None:
            out.append(bytes(pdu))
    return out


PDUS = [b"a" * 100, b"b" * 70_000, b"c", b"d" * 300_000, b"e" * 65_536, b"f" * 20]


@pytest.mark.parametrize("step", [1, 3, 4096, 65_536, 1 << 30])
def test_pdu_reader_whole_and_in_pieces(step: int) -> None:
    reader = PDUReader(1 << 20, staging=128 * 1024, direct_threshold=64 * 1024)
    stream = frames(*PDUS)
    assert read_all(reader, stream, lambda: step) == PDUS
    assert reader.buffered == 0


def test_pdu_reader_hands_out_buffers_that_later_receives_do_not_touch() -> None:
    reader = PDUReader(1 << 20, staging=8192, direct_threshold=4096)
    stream = frames(b"x" * 100, b"y" * 10_000, b"z" * 100)
    got: list[memoryview] = []
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        reader.buffer_updated(n)
        pos += n
        while (pdu := reader.next_pdu()) is not None:
            got.append(pdu)
    assert [bytes(p) for p in got] == [b"x" * 100, b"y" * 10_000, b"z" * 100]


@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8), st.integers(1, 5000))
def test_pdu_reader_any_split(pdus: list[bytes], step: int) -> None:
    reader = PDUReader(4096, staging=2048, direct_threshold=1024)
    assert read_all(reader, frames(*pdus), lambda: step) == pdus


@pytest.mark.parametrize(
    ("stream", "match"),
    [(b"\x01\x00\x00\x04abcd", "non-zero first byte"), (b"\x00\x00\x00\x00", "empty"),
     (b"\x00\x10\x00\x00", "exceeds")],
)  # fmt: skip
def test_pdu_reader_refuses_bad_frames(stream: bytes, match: str) -> None:
    reader = PDUReader(4096)
    buf = reader.get_buffer()
    buf[: len(stream)] = stream
    reader.buffer_updated(len(stream))
    with pytest.raises(RemoteProtocolError, match=match):
        reader.next_pdu()


@given(st.binary(max_size=5000))
def test_pdu_reader_arbitrary_bytes_parse_or_raise(data: bytes) -> None:
    reader = PDUReader(2048, staging=1024, direct_threshold=512)
    with contextlib.suppress(RemoteProtocolError):
        read_all(reader, data, lambda: 333)


# -- signing a WRITE around its data -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(crypto.SigningAlgorithm))
def test_sign_parts_in_place_equals_signing_the_joined_message(algorithm: crypto.SigningAlgorithm) -> None:
    signer = crypto.make_signer(algorithm, bytes(range(16)))
    head = bytearray(Header(command=Command.WRITE, message_id=7).to_bytes() + b"\x31" * 48)
    tail = memoryview(bytes(range(256)) * 300)
    joined = bytearray(head) + tail
    expected = signer.sign_in_place(joined)
    assert signer.sign_parts_in_place(head, tail) == expected
    assert bytes(head) + bytes(tail) == bytes(joined)
    assert signer.verify(bytes(head) + bytes(tail))


# -- golden vectors -----------------------------------------------------------------------------------

#: The client's NEGOTIATE request (3.0, 3.0.2, 3.1.1; the default ciphers and signing algorithms;
#: NetName "srv") with ClientGuid 00..0f and the pre-auth salt of fixed_randbytes(1).
GOLDEN_NEGOTIATE_REQUEST = (
    "fe534d424000000000000000000000040000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000024000300030000004c000000000102030405060708090a0b0c0d0e0f70000000"
    "0400000011030203000300000000000001002600000000000100200001002291d8cdc310411e7ec27378a661c935187c"
    "07e4d5636e9bc3c400b27244b8cd000002000a0000000000040002000400010003000000000000000800060000000000"
    "02000200010000000500060000000000730072007600"
)

#: Samba 4.17's NEGOTIATE response to the request above (dialect 3.1.1, AES-128-GCM, AES-GMAC).
GOLDEN_SAMBA_NEGOTIATE_RESPONSE = bytes.fromhex(
    "fe534d424000000000000000000001000100000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000004100030011030300666572727974657374000000000000000f00000000008000"
    "0000800000008000bac8227b377ddd01000000000000000080004a00d0000000604806062b0601050502a03e303ca00e"
    "300c060a2b06010401823702020aa32a3028a0261b246e6f745f646566696e65645f696e5f5246433431373840706c65"
    "6173655f69676e6f72650000000000000100260000000000010020000100b9509c8332087e5dc2441b88001205930003"
    "f91d7a3c81dccddee8d176b6a07a000002000400000000000100020000000000080004000000000001000200"
)


def golden_client() -> ClientConnection:
    return ClientConnection(ClientConfig(), client_guid=GUID, server_name="srv", randbytes=fixed_randbytes(1))


def negotiate_request_bytes() -> bytes:
    client = golden_client()
    client.start_negotiate(0.0)
    ((pdu,),) = client.data_to_send()
    return bytes(pdu)


def test_negotiate_request_golden_vector() -> None:
    pdu = negotiate_request_bytes()
    assert pdu.hex() == GOLDEN_NEGOTIATE_REQUEST
    request = NegotiateRequest.decode(pdu)
    assert request.dialects == (0x0311, 0x0302, 0x0300)
    assert request.client_guid == GUID


def test_negotiate_request_as_smbprotocol_reads_it() -> None:
    header = SMB2HeaderRequest()
    header.unpack(negotiate_request_bytes())
    assert header["command"].get_value() == Command.NEGOTIATE
    assert header["message_id"].get_value() == 0
    body = smbp.SMB3NegotiateRequest()
    body.unpack(header["data"].get_value())
    assert [d for d in body["dialects"].get_value()] == [0x0311, 0x0302, 0x0300]
    assert body["security_mode"].get_value() == 3  # signing enabled and required
    contexts = {c["context_type"].get_value(): c for c in body["negotiate_context_list"].get_value()}
    assert contexts[2]["data"]["ciphers"].get_value() == [2, 4, 1, 3]
    assert contexts[8]["data"]["signing_algorithms"].get_value() == [2, 1]


def feed(client: ClientConnection, data: bytes, step: int) -> None:
    reader = PDUReader(1 << 20)
    read_all_into(client, reader, frame_header(len(data)) + data, step)


def read_all_into(client: ClientConnection, reader: PDUReader, stream: bytes, step: int) -> None:
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), step, len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        reader.buffer_updated(n)
        pos += n
        while (pdu := reader.next_pdu()) is not None:
            client.receive_pdu(pdu, 0.0)


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
@pytest.mark.parametrize("garbage", [b"", b"\x00" * 8, b"trailing garbage"])
def test_samba_negotiate_response_whole_byte_by_byte_and_with_garbage(step: int, garbage: bytes) -> None:
    client = golden_client()
    client.start_negotiate(0.0)
    client.data_to_send()
    feed(client, GOLDEN_SAMBA_NEGOTIATE_RESPONSE + garbage, step)
    (event,) = client.events()
    assert event == Negotiated(
        Dialect.SMB_3_1_1, crypto.CipherId.AES_128_GCM, crypto.SigningAlgorithm.AES_GMAC, 8 * MiB, 8 * MiB,
        8 * MiB, b"ferrytest" + bytes(7), 0x0F,
    )  # fmt: skip
    assert client.state is ConnState.READY
    assert client.credits.available == 1  # Samba grants one credit for NEGOTIATE
    assert client.server_requires_signing and client.multi_credit
    assert client.gss_token.startswith(b"\x60\x48")


def test_negotiate_response_that_names_something_not_offered_is_refused() -> None:
    client = ClientConnection(ClientConfig(ciphers=(crypto.CipherId.AES_256_GCM,)), client_guid=GUID)
    client.start_negotiate(0.0)
    client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="cipher"):
        client.receive_pdu(GOLDEN_SAMBA_NEGOTIATE_RESPONSE, 0.0)
    assert client.state is ConnState.FAILED
    with pytest.raises(LocalProtocolError):
        client.receive_pdu(GOLDEN_SAMBA_NEGOTIATE_RESPONSE, 0.0)


# -- in memory against Ferry's server core ---------------------------------------------------------


@dataclass
class FakeFiles:
    """File operations answered from memory: one file whose bytes are ``data``."""

    data: bytearray = field(default_factory=lambda: bytearray(b"0123456789"))
    hold: bool = False  # keep operations waiting (to answer them by hand)
    held: list[FileOperation] = field(default_factory=list)

    def answer(self, server: ServerConnection, op: FileOperation) -> None:
        if self.hold:
            self.held.append(op)
            return
        request = op.request
        if op.command is Command.CREATE:
            server.complete(
                op.op_id, FileResult(NTStatus.SUCCESS, handle=object()), (CreateAction.OPENED, TIMES)
            )
        elif op.command is Command.READ:
            assert isinstance(request, ReadRequest)
            chunk = bytes(self.data[request.offset : request.offset + request.length])
            body = encode_read_response_head(len(chunk)) + chunk
            status = NTStatus.SUCCESS if chunk else NTStatus.END_OF_FILE
            server.complete(op.op_id, FileResult(status, body))
        elif op.command is Command.WRITE:
            data = bytes(request.data)  # type: ignore[union-attr]
            self.data[request.offset : request.offset + len(data)] = data  # type: ignore[union-attr]
            server.complete(op.op_id, FileResult(NTStatus.SUCCESS, encode_write_response(len(data))))
        elif op.command is Command.CLOSE:
            assert isinstance(request, CloseRequest)
            server.complete(
                op.op_id, FileResult(NTStatus.SUCCESS, encode_close_response(request.flags, TIMES))
            )
        elif op.command is Command.QUERY_INFO:
            server.complete(op.op_id, FileResult(NTStatus.SUCCESS, encode_output_buffer_response(b"info")))
        else:
            server.complete(op.op_id, FileResult(NTStatus.NOT_SUPPORTED))


def joined(pieces: object) -> bytes:
    """A PDU from the server core, whole or as the pieces it is made of."""
    if isinstance(pieces, bytes | bytearray | memoryview):
        return bytes(pieces)
    return b"".join(bytes(p) for p in pieces)  # type: ignore[attr-defined]


@dataclass
class Pair:
    client: ClientConnection
    server: ServerConnection
    files: FakeFiles = field(default_factory=FakeFiles)
    now: float = 0.0
    tamper: Callable[[bytes], bytes] | None = None

    def pump(self) -> list[Event]:
        for _ in range(100):
            out = self.client.data_to_send()
            if not out:
                break
            for pieces in out:
                self.server.receive_pdu(b"".join(bytes(p) for p in pieces))
                for op in self.server.events():
                    self.files.answer(self.server, op)
            for pieces in self.server.data_to_send():
                pdu = joined(pieces)
                self.client.receive_pdu(self.tamper(pdu) if self.tamper else pdu, self.now)
        return self.client.events()

    def negotiate(self) -> Negotiated:
        self.client.start_negotiate(self.now)
        (event,) = self.pump()
        assert isinstance(event, Negotiated)
        return event

    def login(self, user: str = "alice", password: str = PASSWORD, **kw: bool) -> Session:
        session = self.client.start_session(ClientAuthenticator(user, password), self.now, **kw)
        (event,) = self.pump()
        assert isinstance(event, SessionEstablished | SessionFailed)
        return session

    def call(self, make: Callable[[float], Request]) -> Response:
        request = make(self.now)
        events = self.pump()
        (event,) = events
        assert isinstance(event, Response) and event.request is request
        return event

    def tree(self, session: Session, share: str = "data") -> TreeConnect:
        response = self.call(lambda now: self.client.tree_connect(session, share, now))
        return response.expect(TreeConnect)

    def server_session(self, session: Session) -> crypto.Signer:
        signer = self.server.sessions[session.session_id].signer
        assert signer is not None
        return signer


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UserDatabase:
    db = UserDatabase(tmp_path_factory.mktemp("users") / "users.db")
    db.add_user("alice", PASSWORD)
    return db


def make_pair(
    users: UserDatabase, dialects: tuple[int, ...] = (0x0311, 0x0302, 0x0300), **config: object
) -> Pair:
    server = ServerConnection(
        identity=ServerIdentity(b"S" * 16),
        shares={
            "data": Share("data"),
            "secret": Share("secret", encrypt=True),
            "IPC$": Share("IPC$", ShareType.PIPE),
        },
        authenticator_factory=lambda: ServerAuthenticator(users),
        initial_token=ServerAuthenticator.initial_token(),
    )
    client = ClientConnection(
        ClientConfig(dialects=dialects, **config),  # type: ignore[arg-type]
        client_guid=GUID,
        server_name="srv",
    )
    return Pair(client, server)


def ready(
    users: UserDatabase, dialects: tuple[int, ...] = (0x0311,), **kw: object
) -> tuple[Pair, Session, TreeConnect]:
    pair = make_pair(users, dialects, **kw)
    pair.negotiate()
    session = pair.login()
    tree = pair.tree(session)
    return pair, session, tree


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("dialect", [0x0311, 0x0302, 0x0300])
def test_keys_agree_with_the_server_on_every_dialect(
    users: UserDatabase, dialect: int, encrypted: bool
) -> None:
    pair = make_pair(users, (dialect,))
    negotiated = pair.negotiate()
    assert negotiated.dialect == dialect
    session = pair.login(require_encryption=encrypted)
    assert session.state is SessionState.VALID and session.encrypted is encrypted
    theirs = pair.server.sessions[session.session_id]
    assert session.keys == theirs.keys
    tree = pair.tree(session)
    validate = pair.client.validate_negotiate(tree, 0.0)
    if dialect == 0x0311:
        assert validate is None
    else:
        assert validate is not None
        (event,) = pair.pump()
        assert isinstance(event, Response) and event.status == NTStatus.SUCCESS
        assert isinstance(event.body, IoctlResult)
        assert pair.client.validate_negotiate(tree, 0.0) is None  # once per connection
    echo = pair.call(lambda now: pair.client.request(Command.ECHO, EMPTY4, session=session, now=now))
    assert echo.status == NTStatus.SUCCESS and echo.request.verified
    assert bool(echo.header.flags & Flags.SIGNED) is not encrypted


def test_validate_negotiate_mismatch_ends_the_connection(users: UserDatabase) -> None:
    pair, _, tree = ready(users, (0x0300,))
    pair.client.server_guid = b"X" * 16  # as if NEGOTIATE had been tampered with
    pair.client.validate_negotiate(tree, 0.0)
    with pytest.raises(RemoteProtocolError, match="does not match"):
        pair.pump()
    assert pair.client.state is ConnState.FAILED


def test_wrong_password_fails_the_session_only(users: UserDatabase) -> None:
    pair = make_pair(users)
    pair.negotiate()
    failed = pair.client.start_session(ClientAuthenticator("alice", "nope"), 0.0)
    (event,) = pair.pump()
    assert isinstance(event, SessionFailed) and event.session is failed
    assert event.status == NTStatus.LOGON_FAILURE and failed.state is SessionState.FAILED
    assert isinstance(status_error(event.status), LogonFailure)
    assert pair.login().state is SessionState.VALID


def test_unknown_share_and_share_that_needs_encryption(users: UserDatabase) -> None:
    pair, session, _ = ready(users)
    response = pair.call(lambda now: pair.client.tree_connect(session, "nope", now))
    assert response.status == NTStatus.BAD_NETWORK_NAME and response.body is None
    assert isinstance(status_error(response.status, "TREE_CONNECT", "nope"), BadNetworkName)
    secret = pair.tree(session, "secret")
    assert secret.encrypt_data
    request = pair.client.request(Command.ECHO, EMPTY4, session=session, tree=secret, now=0.0)
    assert request.encrypt and not request.sign
    ((pdu,),) = pair.client.data_to_send()
    assert bytes(pdu[:4]) == b"\xfdSMB"


def test_encryption_required_without_a_cipher(users: UserDatabase) -> None:
    pair = make_pair(users, ciphers=())
    pair.negotiate()
    assert pair.client.cipher is None
    with pytest.raises(SecurityRequirementError):
        pair.client.start_session(ClientAuthenticator("alice", PASSWORD), 0.0, require_encryption=True)


def test_file_requests_and_their_bodies(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    create = CreateRequest(0x0012019F, 0, 7, 1, 0x40, "file.bin").encode()
    response = pair.call(
        lambda now: pair.client.request(Command.CREATE, create, session=session, tree=tree, now=now)
    )
    file_id = response.expect(CreateResponse).file_id
    write = pair.call(lambda now: pair.client.write(tree, file_id, 5, memoryview(b"ABCDE"), now))
    assert write.expect(WriteResult).count == 5
    assert write.request.charge == 1
    read = pair.call(lambda now: pair.client.read(tree, file_id, 0, 100, now))
    assert bytes(read.expect(ReadResult).data) == b"01234ABCDE"
    eof = pair.call(lambda now: pair.client.read(tree, file_id, 50, 10, now))
    assert eof.status == NTStatus.END_OF_FILE and eof.body is None
    with pytest.raises(RemoteProtocolError, match="no ReadResult"):
        eof.expect(ReadResult)
    with pytest.raises(LocalProtocolError, match="READ of"):
        pair.client.read(tree, file_id, 0, 9 * MiB, 0.0)


def test_write_data_goes_out_beside_its_header_signed_around_it(users: UserDatabase) -> None:
    pair, _, tree = ready(users)
    data = memoryview(bytearray(b"x" * 200_000))
    request = pair.client.write(tree, b"F" * 16, 0, data, 0.0)
    assert request.charge == 4
    ((head, payload),) = pair.client.data_to_send()
    assert payload.obj is data.obj  # the caller's buffer itself: not copied, not joined
    header = decode_header(head)
    assert header.flags & Flags.SIGNED and header.credit_charge == 4
    signer = pair.server_session(tree.session)
    assert signer.verify(bytes(head) + bytes(payload))


def test_requests_wait_for_credits_in_order(users: UserDatabase) -> None:
    pair, session, tree = ready(users, credit_target=4, max_io=4 * 65536)
    assert pair.client.credits.available == 4
    echo = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    big = pair.client.read(tree, b"F" * 16, 0, 4 * 65536, 0.0)  # charge 4: one more than is left
    small = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    assert echo.state is RequestState.SENT
    assert big.state is RequestState.QUEUED and small.state is RequestState.QUEUED  # no overtaking
    assert len(pair.client.data_to_send()) == 1
    signer = pair.server_session(session)
    pair.client.receive_pdu(response_to(echo, credits=1, sign=signer), 0.0)  # its credit comes back
    assert big.state is RequestState.SENT and small.state is RequestState.QUEUED
    assert decode_header(pair.client.data_to_send()[0][0]).credit_charge == 4


def test_a_server_that_grants_too_few_credits(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    signer = pair.server_session(session)
    spent = pair.client.credits.available - 1
    pair.client.credits.take(spent)  # as if spent on requests answered without a grant
    pair.client.credits.responded(spent, 0)
    echo = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)  # the last credit
    big = pair.client.read(tree, b"F" * 16, 0, 8 * MiB, 0.0)
    assert big.state is RequestState.QUEUED
    pair.client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="nothing in flight"):
        pair.client.receive_pdu(response_to(echo, credits=0, sign=signer), 0.0)
    assert pair.client.state is ConnState.FAILED


def test_a_request_that_can_never_be_paid_for_is_refused_at_once(users: UserDatabase) -> None:
    pair, _, tree = ready(users)
    pair.client.credits.take(pair.client.credits.available - 1)
    pair.client.credits.responded(0, 0)
    with pytest.raises(LocalProtocolError, match="needs 128 credits"):
        pair.client.read(tree, b"F" * 16, 0, 8 * MiB, 0.0)
    assert pair.client.state is ConnState.READY


def test_compound_request_and_response(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    create = CreateRequest(0x80, 0, 7, 1, 0, "x").encode()
    close = CloseRequest(24, 1, 0, NO_FILE_ID).to_bytes()
    requests = pair.client.compound(
        [(Command.CREATE, create, 0, 0), (Command.CLOSE, close, 0, 0)], session=session, tree=tree, now=0.0
    )
    ((first, second),) = pair.client.data_to_send()
    assert len(first) % 8 == 0 and struct.unpack_from("<I", first, 20)[0] == len(first)
    assert decode_header(second).flags & Flags.RELATED_OPERATIONS
    signer = pair.server_session(session)
    assert signer.verify(first) and signer.verify(second)  # each message signed on its own
    pair.server.receive_pdu(bytes(first) + bytes(second))
    for op in pair.server.events():
        pair.files.answer(pair.server, op)
    for op in pair.server.events():
        pair.files.answer(pair.server, op)
    (pieces,) = pair.server.data_to_send()
    pair.client.receive_pdu(joined(pieces), 0.0)
    (event,) = pair.client.events()
    assert isinstance(event, CompoundResponse)
    assert [p.request for p in event.parts] == list(requests)
    created, closed = event.parts
    assert isinstance(created, Response) and isinstance(created.body, CreateResponse)
    assert isinstance(closed, Response) and closed.status == NTStatus.SUCCESS


# -- interim responses, timeouts, bad signatures (hand-made responses) --------------------------------


def response_to(
    request: Request, status: int = NTStatus.SUCCESS, body: bytes = EMPTY4, *, async_id: int = 0,
    credits: int = 1, sign: crypto.Signer | None = None, command: Command | None = None,
) -> bytearray:  # fmt: skip
    assert request.message_id is not None and request.session is not None
    flags = Flags.SERVER_TO_REDIR | (Flags.ASYNC_COMMAND if async_id else 0)
    tree_id = request.tree.tree_id if request.tree else 0
    header = Header(
        credit_charge=request.charge, status=status, command=command or request.command, credits=credits,
        flags=flags, message_id=request.message_id,
        reserved_or_async=async_id or Header.sync_field(tree_id), session_id=request.session.session_id,
    )  # fmt: skip
    message = bytearray(header.to_bytes() + body)
    if sign is not None:
        sign.sign_in_place(message)
    return message


def test_interim_then_final_response(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    signer = pair.server_session(session)
    request = pair.client.request(Command.FLUSH, bytes(24), session=session, tree=tree, now=0.0)
    pair.client.data_to_send()
    assert pair.client.get_timer() == pytest.approx(60.0, abs=1)
    before = pair.client.credits.available
    pair.client.receive_pdu(
        response_to(request, NTStatus.PENDING, encode_error(), async_id=77, credits=5), 1.0
    )
    (interim,) = pair.client.events()
    assert interim == InterimResponse(request, 77)
    assert request.state is RequestState.PENDING and pair.client.credits.available == before + 5
    assert pair.client.get_timer() == pytest.approx(1.0 + pair.client.config.pending_timeout)
    pair.client.handle_timer(100.0)  # past the first deadline: the interim response extended it
    assert pair.client.events() == []
    final = response_to(request, async_id=77, credits=0, sign=signer)
    pair.client.receive_pdu(final, 2.0)
    (event,) = pair.client.events()
    assert isinstance(event, Response) and event.request is request and isinstance(event.body, Done)
    assert event.header.async_id == 77 and request.state is RequestState.DONE


def test_pending_without_async_id_is_a_protocol_error(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    request = pair.client.request(Command.FLUSH, bytes(24), session=session, tree=tree, now=0.0)
    pair.client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="AsyncId"):
        pair.client.receive_pdu(response_to(request, NTStatus.PENDING, encode_error()), 0.0)


def test_timeouts_cancel_pending_requests_and_drop_late_responses(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    signer = pair.server_session(session)
    quiet = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0, timeout=5.0)
    slow = pair.client.request(Command.FLUSH, bytes(24), session=session, tree=tree, now=0.0, timeout=5.0)
    pair.client.data_to_send()
    pair.client.receive_pdu(response_to(slow, NTStatus.PENDING, encode_error(), async_id=9), 1.0)
    pair.client.events()
    pair.client.handle_timer(4.0)
    assert pair.client.events() == []
    pair.client.handle_timer(5.0)
    assert pair.client.events() == [RequestTimedOut(quiet)]
    assert quiet.state is RequestState.TIMED_OUT
    pair.client.handle_timer(1.0 + pair.client.config.pending_timeout)
    assert pair.client.events() == [RequestTimedOut(slow)]
    ((cancel,),) = pair.client.data_to_send()
    header = decode_header(cancel)
    assert header.command == Command.CANCEL and header.async_id == 9 and header.credit_charge == 0
    assert signer.verify(cancel)
    credits = pair.client.credits.available
    pair.client.receive_pdu(response_to(quiet, credits=3, sign=signer), 700.0)  # late: dropped
    pair.client.receive_pdu(
        response_to(slow, NTStatus.CANCELLED, encode_error(), async_id=9, sign=signer), 700.0
    )
    assert pair.client.events() == [] and pair.client.credits.available == credits + 4
    with pytest.raises(RemoteProtocolError, match="not outstanding"):
        pair.client.receive_pdu(response_to(quiet, sign=signer), 700.0)  # a second time is not late


def test_queued_request_times_out_without_being_sent(users: UserDatabase) -> None:
    pair = make_pair(users, credit_target=1, max_io=65536)
    pair.negotiate()
    session = pair.login()
    first = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    second = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0, timeout=1.0)
    assert first.state is RequestState.SENT and second.state is RequestState.QUEUED
    pair.client.handle_timer(2.0)
    assert pair.client.events() == [RequestTimedOut(second)] and second.message_id is None


@pytest.mark.parametrize(
    ("tamper", "match"),
    [(lambda m: m[:-1] + bytes([m[-1] ^ 1]), "signature"),
     (lambda m: m[:16] + struct.pack("<I", 1) + m[20:48] + bytes(16) + m[64:], "unsigned"),
     (lambda m: m[:24] + struct.pack("<Q", 999) + m[32:], "not outstanding"),
     (lambda m: m[:12] + struct.pack("<H", Command.FLUSH) + m[14:], "FLUSH response to a ECHO"),
     (lambda m: m[:16] + struct.pack("<I", 0) + m[20:], "a request sent to the client")],
)  # fmt: skip
def test_bad_responses_end_the_connection(
    users: UserDatabase, tamper: Callable[[bytes], bytes], match: str
) -> None:
    pair, session, _ = ready(users)
    pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    pair.tamper = tamper
    with pytest.raises(RemoteProtocolError, match=match):
        pair.pump()
    assert pair.client.state is ConnState.FAILED
    dropped = pair.client.close()
    assert [r.command for r in dropped] == [Command.ECHO] and dropped[0].state is RequestState.DROPPED


def test_unencrypted_response_to_an_encrypted_request_is_refused(users: UserDatabase) -> None:
    pair = make_pair(users)
    pair.negotiate()
    session = pair.login(require_encryption=True)
    request = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    pair.client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="unencrypted"):
        pair.client.receive_pdu(response_to(request, sign=pair.server_session(session)), 0.0)


def test_session_deleted_and_expired_are_clear_and_change_the_session(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    expired = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    deleted = pair.client.request(Command.FLUSH, bytes(24), session=session, tree=tree, now=0.0)
    pair.client.data_to_send()
    pair.client.receive_pdu(response_to(expired, NTStatus.NETWORK_SESSION_EXPIRED, encode_error()), 0.0)
    (event,) = pair.client.events()
    assert isinstance(event, Response) and event.status == NTStatus.NETWORK_SESSION_EXPIRED
    assert session.state is SessionState.EXPIRED
    assert "STATUS_NETWORK_SESSION_EXPIRED" in str(status_error(event.status, "ECHO"))
    pair.client.receive_pdu(response_to(deleted, NTStatus.USER_SESSION_DELETED, encode_error()), 0.0)
    pair.client.events()
    assert session.state is SessionState.CLOSED and not tree.connected
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)


def test_close_drops_everything_queued_or_in_flight(users: UserDatabase) -> None:
    pair, session, tree = ready(users, credit_target=1, max_io=65536)
    sent = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    queued = pair.client.read(tree, b"F" * 16, 0, 100, 0.0)
    assert set(pair.client.close()) == {sent, queued}
    assert pair.client.state is ConnState.CLOSED and pair.client.get_timer() is None
    with pytest.raises(LocalProtocolError):
        pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)


# -- hostile input ------------------------------------------------------------------------------------


def negotiated_client() -> tuple[ClientConnection, list[Request]]:
    """A client after Samba's NEGOTIATE response, with requests of every kind in flight."""
    client = golden_client()
    client.start_negotiate(0.0)
    client.data_to_send()
    client.receive_pdu(GOLDEN_SAMBA_NEGOTIATE_RESPONSE, 0.0)
    client.events()
    client.credits.granted(100)
    requests = [
        client.request(command, body, session=None, recv_size=recv, now=0.0)
        for command, body, recv in [
            (Command.ECHO, EMPTY4, 0), (Command.CREATE, CreateRequest(1, 0, 7, 1, 0, "a").encode(), 0),
            (Command.READ, bytes(49), 4096), (Command.WRITE, bytes(48), 0), (Command.CLOSE, bytes(24), 0),
            (Command.QUERY_INFO, bytes(40), 1024), (Command.QUERY_DIRECTORY, bytes(32), 1024),
            (Command.IOCTL, bytes(56), 1024), (Command.SET_INFO, bytes(32), 0),
            (Command.TREE_DISCONNECT, EMPTY4, 0),
        ]
    ]  # fmt: skip
    client.data_to_send()
    return client, requests


def check_parse_or_raise(data: bytes) -> None:
    client, _ = negotiated_client()
    try:
        client.receive_pdu(data, 0.0)
    except SMBProtocolError:
        assert client.state is ConnState.FAILED
        return
    for event in client.events():
        assert isinstance(event, Response | InterimResponse | CompoundResponse)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.binary(max_size=400).map(lambda b: b"\xfdSMB" + b))
@example(b"\xfdSMB" + bytes(48) + b"\x01\x00" + bytes(10))
@example(b"\xfcSMB" + bytes(60))
def test_arbitrary_response_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    check_parse_or_raise(data)


def sealed_echo_response(users: UserDatabase, session_id: int | None = None) -> tuple[Pair, bytearray]:
    """A client with an ECHO in flight, and its response encrypted as the server would."""
    pair, session, _ = ready(users)
    assert session.keys is not None and pair.client.cipher is not None
    request = pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    pair.client.data_to_send()
    key = session.keys.encryption_key(server=True)
    sid = session.session_id if session_id is None else session_id
    return pair, crypto.encrypt(bytes(response_to(request)), key, pair.client.cipher, sid, bytes(12))


def test_encrypted_responses_for_unknown_sessions_or_with_bad_tags(users: UserDatabase) -> None:
    pair, sealed = sealed_echo_response(users)
    pair.client.receive_pdu(bytes(sealed), 0.0)  # the good one is accepted
    (event,) = pair.client.events()
    assert isinstance(event, Response) and event.request.verified
    pair, sealed = sealed_echo_response(users)
    sealed[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="authentication"):
        pair.client.receive_pdu(sealed, 0.0)
    pair, sealed = sealed_echo_response(users, session_id=0x1234)
    with pytest.raises(RemoteProtocolError, match="unknown session"):
        pair.client.receive_pdu(sealed, 0.0)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 10),
    st.sampled_from([NTStatus.SUCCESS, NTStatus.PENDING, NTStatus.BUFFER_OVERFLOW, 0xC0000001]),
    st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFFFFFFFFFF), st.binary(max_size=200),
    st.integers(0, 65535),
)  # fmt: skip
def test_well_formed_headers_with_arbitrary_bodies_parse_or_raise(
    message_id: int, status: int, flags: int, async_id: int, body: bytes, credits: int
) -> None:
    """Responses to the requests in flight (right MessageId and command) with any body: every
    body decoder checks its bounds."""
    commands = [Command.ECHO, Command.CREATE, Command.READ, Command.WRITE, Command.CLOSE,
                Command.QUERY_INFO, Command.QUERY_DIRECTORY, Command.IOCTL, Command.SET_INFO,
                Command.TREE_DISCONNECT]  # fmt: skip
    header = Header(
        status=status, command=commands[message_id - 1], credits=credits,
        flags=(flags | Flags.SERVER_TO_REDIR) & ~Flags.SIGNED, message_id=message_id,
        reserved_or_async=async_id,
    )  # fmt: skip
    check_parse_or_raise(header.to_bytes() + body)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(GOLDEN_SAMBA_NEGOTIATE_RESPONSE) - 1), st.integers(1, 255))
def test_mutated_negotiate_responses_parse_or_raise(position: int, flip: int) -> None:
    client = golden_client()
    client.start_negotiate(0.0)
    client.data_to_send()
    data = bytearray(GOLDEN_SAMBA_NEGOTIATE_RESPONSE)
    data[position] ^= flip
    try:
        client.receive_pdu(bytes(data), 0.0)
    except SMBProtocolError:
        assert client.state is ConnState.FAILED


# -- errors the API raises -------------------------------------------------------------------------


def test_status_errors_are_the_matching_os_errors() -> None:
    missing = status_error(NTStatus.OBJECT_NAME_NOT_FOUND, "CREATE", "a/b.txt")
    assert isinstance(missing, SMBFileNotFoundError) and isinstance(missing, FileNotFoundError)
    assert missing.status == NTStatus.OBJECT_NAME_NOT_FOUND and missing.filename == "a/b.txt"
    assert str(missing) == "CREATE 'a/b.txt': STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)"
    assert isinstance(status_error(NTStatus.OBJECT_NAME_COLLISION), SMBFileExistsError)
    assert isinstance(status_error(0xC000006A, "SESSION_SETUP"), LogonFailure)  # STATUS_WRONG_PASSWORD
    other = status_error(0xC0001234)
    assert type(other) is SMBStatusError and "0xC0001234" in str(other)
    assert isinstance(ConnectionLost("gone"), ConnectionError) and isinstance(
        ConnectionLost("gone"), SMBConnectionError
    )
    assert isinstance(SMBTimeoutError("slow"), TimeoutError)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="dialects"):
        ClientConfig(dialects=(0x0210,))
    with pytest.raises(ValueError, match="max_io"):
        ClientConfig(max_io=1000)
    with pytest.raises(ValueError, match="timeouts"):
        ClientConfig(request_timeout=0)


def test_events_validate_themselves() -> None:
    request = Request(
        Command.ECHO, EMPTY4, session=None, tree=None, payload=b"", charge=1, send_size=0, recv_size=0,
        deadline=1.0, purpose=_Purpose.CALLER,
    )  # fmt: skip
    with pytest.raises(ValueError, match="AsyncId"):
        InterimResponse(request, 0)
    with pytest.raises(ValueError, match="two"):
        CompoundResponse(())
    with pytest.raises(ValueError, match="final response"):
        Response(request, Header(command=Command.ECHO), Done(), memoryview(b""))


def test_output_buffer_bodies(users: UserDatabase) -> None:
    pair, session, tree = ready(users)
    create = CreateRequest(0x80, 0, 7, 1, 0, "q").encode()
    file_id = (
        pair.call(
            lambda now: pair.client.request(Command.CREATE, create, session=session, tree=tree, now=now)
        )
        .expect(CreateResponse)
        .file_id
    )
    body = QueryInfoRequest(1, 34, 1024, file_id).encode()
    response = pair.call(
        lambda now: pair.client.request(
            Command.QUERY_INFO, body, session=session, tree=tree, recv_size=1024, now=now
        )
    )
    assert response.expect(OutputBuffer).data == b"info"


def test_a_request_refused_at_creation_leaves_nothing_behind(users: UserDatabase) -> None:
    pair = make_pair(users, ciphers=())
    pair.negotiate()
    session = pair.login()
    session.require_encryption = True  # as if asked for after the fact: the connection cannot
    with pytest.raises(SecurityRequirementError):
        pair.client.request(Command.ECHO, EMPTY4, session=session, now=0.0)
    assert pair.client.get_timer() is None and pair.client.data_to_send() == []
