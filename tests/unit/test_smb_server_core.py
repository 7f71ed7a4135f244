"""The sans-IO server core driven in memory by a minimal client built from smbcore's own pieces:
pre-auth integrity, key derivation, signing rules, credits, compounds, protocol errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import spnego
from hypothesis import given, settings
from hypothesis import strategies as st
from smbcore import crypto
from smbcore.auth import ClientAuthenticator, ServerAuthenticator, UserDatabase
from smbcore.errors import RemoteProtocolError, SMBProtocolError
from smbcore.header import Command, Flags, Header, decode_header
from smbcore.ioctl import (
    NO_FILE_ID,
    CtlCode,
    InterfaceCapability,
    IoctlRequest,
    NetworkInterfaceInfo,
    ValidateNegotiateInfo,
    decode_interfaces,
    decode_ioctl_response,
)
from smbcore.messages import (
    EMPTY4,
    SessionFlags,
    SessionSetupFlags,
    SessionSetupRequest,
    SessionSetupResponse,
    ShareType,
    TreeConnectRequest,
)
from smbcore.negotiate import (
    Capabilities,
    Dialect,
    EncryptionCapabilities,
    NegotiateRequest,
    NegotiateResponse,
    PreauthIntegrity,
    SecurityMode,
    SigningCapabilities,
)
from smbcore.ntstatus import NTStatus
from smbcore.server import ServerConnection, ServerIdentity, ServerPolicy, Share
from spnego._ntlm_raw.messages import Authenticate, Challenge, NegotiateFlags

GUID = bytes(range(16))
INTERFACES = [
    NetworkInterfaceInfo(2, InterfaceCapability.RSS, 10_000_000_000, "198.18.1.1"),
    NetworkInterfaceInfo(3, InterfaceCapability.RDMA, 25_000_000_000, "2001:db8::1"),
]


def sent(server: ServerConnection) -> list[bytes]:
    """The PDUs the server produced, each joined from its pieces."""
    return [b"".join(pieces) for pieces in server.data_to_send()]


@dataclass
class MiniClient:
    """Just enough of a client to drive the core; every PDU it sends is one message."""

    server: ServerConnection
    dialect: int = Dialect.SMB_3_1_1
    message_id: int = 0
    session_id: int = 0
    preauth: crypto.PreauthHash = field(default_factory=crypto.PreauthHash)
    signer: crypto.Signer | None = None
    keys: crypto.SessionKeys | None = None
    cipher: int | None = None

    def send(self, command: Command, body: bytes, *, sign: bool = False, tree_id: int = 0, charge: int = 1,
             message_id: int | None = None, tamper: bool = False) -> tuple[Header, bytes]:  # fmt: skip
        mid = self.message_id if message_id is None else message_id
        header = Header(
            command=command, credits=64, credit_charge=charge, message_id=mid,
            reserved_or_async=Header.sync_field(tree_id), session_id=self.session_id,
        )  # fmt: skip
        msg = bytearray(header.to_bytes() + body)
        if sign:
            assert self.signer is not None
            self.signer.sign_in_place(msg)
            if tamper:
                msg[-1] ^= 0xFF
        self.message_id = mid + max(charge, 1)
        self.last_request = bytes(msg)
        self.server.receive_pdu(msg)
        (pdu,) = sent(self.server)
        if pdu[:4] == b"\xfdSMB":
            assert self.keys is not None and self.cipher is not None
            pdu = crypto.decrypt(pdu, self.keys.decryption_key(server=False), self.cipher)
        response = decode_header(pdu)
        assert response.is_response and response.message_id == mid
        return response, bytes(pdu)

    def negotiate(
        self,
        dialects: tuple[int, ...] = (0x0300, 0x0302, 0x0311),
        ciphers: tuple[int, ...] = (2, 1),
        signing: tuple[int, ...] = (2, 1),
    ) -> NegotiateResponse:
        req = NegotiateRequest(
            dialects, SecurityMode.SIGNING_ENABLED, Capabilities.ENCRYPTION, GUID,
            (PreauthIntegrity((1,), b"salt" * 8), EncryptionCapabilities(ciphers),
             SigningCapabilities(signing)),
        )  # fmt: skip
        header, pdu = self.send(Command.NEGOTIATE, req.encode())
        assert header.status == NTStatus.SUCCESS
        response = NegotiateResponse.decode(pdu)
        self.dialect = response.dialect
        if self.dialect == Dialect.SMB_3_1_1:
            self.preauth.update(self.last_request)
            self.preauth.update(pdu)
            cipher = response.context(EncryptionCapabilities)
            self.cipher = cipher.ciphers[0] if isinstance(cipher, EncryptionCapabilities) else None
            algorithm = response.context(SigningCapabilities)
            self.algorithm = algorithm.algorithms[0] if isinstance(algorithm, SigningCapabilities) else 1
        elif self.dialect >= Dialect.SMB_3_0:
            self.cipher = crypto.CipherId.AES_128_CCM
            self.algorithm = crypto.SigningAlgorithm.AES_CMAC
        else:
            self.cipher = None
            self.algorithm = crypto.SigningAlgorithm.HMAC_SHA256
        return response

    def login(self, user: str, password: str) -> tuple[Header, bytes]:
        auth = ClientAuthenticator(user, password)
        token = auth.step(None)
        session_hash = self.preauth.copy()
        while True:
            header, pdu = self.send(Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, token).encode())
            self.session_id = header.session_id
            if self.dialect == Dialect.SMB_3_1_1:
                session_hash.update(self.last_request)
            if header.status != NTStatus.MORE_PROCESSING_REQUIRED:
                break
            if self.dialect == Dialect.SMB_3_1_1:
                session_hash.update(pdu)
            token = auth.step(SessionSetupResponse.decode(pdu).security_buffer)
        if header.status == NTStatus.SUCCESS and SessionSetupResponse.decode(pdu).session_flags & (
            SessionFlags.IS_GUEST | SessionFlags.IS_NULL
        ):
            assert not header.flags & Flags.SIGNED  # no key: nothing is signed
        elif header.status == NTStatus.SUCCESS:
            self.keys = crypto.derive_session_keys(
                auth.session_key,
                self.dialect,
                session_hash.value if self.dialect == Dialect.SMB_3_1_1 else None,
                self.cipher if self.dialect == Dialect.SMB_3_1_1 else None,
            )
            self.signer = crypto.make_signer(self.algorithm, self.keys.signing_key)
            assert header.flags & Flags.SIGNED
            assert self.signer.verify(pdu), "final SESSION_SETUP response must verify with the derived key"
        return header, pdu

    def login_anonymous(self, *, sign: bool = False) -> tuple[Header, bytes]:
        """A null session (MS-NLMP 3.2.5.1.2) over raw NTLMSSP tokens, or (``sign``) the
        re-authentication of this client's session as one."""
        negotiate = spnego.client("x", "y", protocol="ntlm").step() or b""
        request = SessionSetupRequest(0, 1, 0, 0, negotiate).encode()
        header, pdu = self.send(Command.SESSION_SETUP, request, sign=sign)
        assert header.status == NTStatus.MORE_PROCESSING_REQUIRED
        self.session_id = header.session_id
        challenge = Challenge.unpack(SessionSetupResponse.decode(pdu).security_buffer)
        anonymous = Authenticate(challenge.flags | NegotiateFlags.anonymous, b"\x00", None).pack()
        return self.send(
            Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, anonymous).encode(), sign=sign
        )


@pytest.fixture
def users(tmp_path: Path) -> UserDatabase:
    db = UserDatabase(tmp_path / "users.db")
    db.add_user("alice", "Pa55-word!")
    return db


def make_server(users: UserDatabase, *, guests: bool = False, **kwargs: object) -> ServerConnection:
    shares = {"data": Share("data"), "IPC$": Share("IPC$", ShareType.PIPE, guest_ok=guests)}
    if guests:
        shares["pub"] = Share("pub", guest_ok=True)
    return ServerConnection(
        identity=ServerIdentity(b"S" * 16),
        shares=shares,
        authenticator_factory=lambda: ServerAuthenticator(users, allow_guests=guests),
        initial_token=ServerAuthenticator.initial_token(),
        interfaces=lambda: INTERFACES,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "dialects", [(0x0311,), (0x0302,), (0x0300,), (0x0202, 0x0210, 0x0300), (0x0210,), (0x0202,)]
)
def test_login_signing_and_keys_agree(users: UserDatabase, dialects: tuple[int, ...]) -> None:
    client = MiniClient(make_server(users))
    client.negotiate(dialects)
    header, _ = client.login("alice", "Pa55-word!")
    assert header.status == NTStatus.SUCCESS
    header, pdu = client.send(Command.ECHO, EMPTY4, sign=True)
    assert header.status == NTStatus.SUCCESS and header.flags & Flags.SIGNED
    assert client.signer is not None and client.signer.verify(pdu)


def test_unsigned_and_badly_signed_requests_are_refused(users: UserDatabase) -> None:
    client = MiniClient(make_server(users))
    client.negotiate()
    client.login("alice", "Pa55-word!")
    header, _ = client.send(Command.ECHO, EMPTY4)  # signing is required
    assert header.status == NTStatus.ACCESS_DENIED
    header, _ = client.send(Command.ECHO, EMPTY4, sign=True, tamper=True)
    assert header.status == NTStatus.ACCESS_DENIED
    header, _ = client.send(Command.ECHO, EMPTY4, sign=True)  # the session is still good
    assert header.status == NTStatus.SUCCESS


def test_wrong_password_and_no_common_dialect(users: UserDatabase) -> None:
    client = MiniClient(make_server(users))
    client.negotiate()
    header, _ = client.login("alice", "nope")
    assert header.status == NTStatus.LOGON_FAILURE
    with pytest.raises(RemoteProtocolError, match="no common dialect"):
        MiniClient(make_server(users, policy=ServerPolicy(min_dialect=0x0300))).negotiate((0x0202, 0x0210))


def test_smb2_dialects_have_no_encryption_and_small_io_on_2_0_2(users: UserDatabase) -> None:
    response = MiniClient(make_server(users)).negotiate((0x0202,))
    assert response.dialect == 0x0202 and response.max_read_size == 65536
    assert not response.capabilities & (Capabilities.ENCRYPTION | Capabilities.MULTI_CHANNEL)
    response = MiniClient(make_server(users)).negotiate((0x0210,))
    assert response.capabilities & Capabilities.LARGE_MTU and response.max_read_size == 8 << 20
    client = MiniClient(make_server(users, policy=ServerPolicy(encrypt_all=True)))
    client.negotiate((0x0210,))
    header, _ = client.login("alice", "Pa55-word!")
    assert header.status == NTStatus.ACCESS_DENIED  # encryption required, 2.1 cannot


def test_tree_connect_and_ioctls(users: UserDatabase) -> None:
    client = MiniClient(make_server(users))
    client.negotiate((0x0300, 0x0302))
    client.login("alice", "Pa55-word!")
    path = TreeConnectRequest(0, r"\\server\IPC$").encode()
    header, _ = client.send(Command.TREE_CONNECT, path, sign=True)
    assert header.status == NTStatus.SUCCESS
    tree = header.tree_id
    ifs = IoctlRequest(CtlCode.FSCTL_QUERY_NETWORK_INTERFACE_INFO, NO_FILE_ID, b"", 65536).encode()
    header, pdu = client.send(Command.IOCTL, ifs, sign=True, tree_id=tree)
    assert header.status == NTStatus.SUCCESS
    assert decode_interfaces(decode_ioctl_response(pdu)[1]) == INTERFACES
    small = IoctlRequest(CtlCode.FSCTL_QUERY_NETWORK_INTERFACE_INFO, NO_FILE_ID, b"", 100).encode()
    assert client.send(Command.IOCTL, small, sign=True, tree_id=tree)[0].status == NTStatus.BUFFER_TOO_SMALL
    info = ValidateNegotiateInfo(
        Capabilities.ENCRYPTION, GUID, SecurityMode.SIGNING_ENABLED, (0x0300, 0x0302)
    )
    validate = IoctlRequest(CtlCode.FSCTL_VALIDATE_NEGOTIATE_INFO, NO_FILE_ID, info.encode(), 24).encode()
    header, pdu = client.send(Command.IOCTL, validate, sign=True, tree_id=tree)
    assert header.status == NTStatus.SUCCESS
    out = decode_ioctl_response(pdu)[1]
    assert out[4:20] == b"S" * 16 and int.from_bytes(out[22:24], "little") == 0x0302
    forged = ValidateNegotiateInfo(
        0, GUID, SecurityMode.SIGNING_ENABLED, (0x0300, 0x0302)
    )  # capabilities stripped
    bad = IoctlRequest(CtlCode.FSCTL_VALIDATE_NEGOTIATE_INFO, NO_FILE_ID, forged.encode(), 24).encode()
    with pytest.raises(RemoteProtocolError, match="does not match"):
        client.send(Command.IOCTL, bad, sign=True, tree_id=tree)


def test_credit_violations_end_the_connection(users: UserDatabase) -> None:
    client = MiniClient(make_server(users))
    client.negotiate()
    with pytest.raises(RemoteProtocolError, match="outside the window"):
        client.send(Command.ECHO, EMPTY4, message_id=10_000)
    client = MiniClient(make_server(users))
    client.negotiate()
    with pytest.raises(RemoteProtocolError, match="outside the window"):
        client.send(Command.ECHO, EMPTY4, message_id=0)  # NEGOTIATE's id, already spent
    client = MiniClient(make_server(users))
    client.negotiate()
    assert (
        client.send(Command.ECHO, EMPTY4, message_id=5)[0].status == NTStatus.SUCCESS
    )  # out of order is fine
    with pytest.raises(RemoteProtocolError, match="reused"):
        client.send(Command.ECHO, EMPTY4, message_id=5)


def test_encrypted_session(users: UserDatabase) -> None:
    client = MiniClient(make_server(users, policy=ServerPolicy(encrypt_all=True)))
    client.negotiate()
    client.login("alice", "Pa55-word!")
    # Plain requests are refused once the session encrypts ...
    header, _ = client.send(Command.ECHO, EMPTY4, sign=True)
    assert header.status == NTStatus.ACCESS_DENIED
    # ... and an encrypted one is answered encrypted (MiniClient.send decrypts it).
    assert client.keys is not None and client.cipher is not None
    msg = Header(command=Command.ECHO, credits=1, message_id=client.message_id, session_id=client.session_id)
    plain = msg.to_bytes() + EMPTY4
    sealed = crypto.encrypt(plain, client.keys.encryption_key(server=False), client.cipher, client.session_id,
                            crypto.random_nonce(client.cipher))  # fmt: skip
    client.server.receive_pdu(sealed)
    (pdu,) = sent(client.server)
    assert pdu[:4] == b"\xfdSMB"
    inner = crypto.decrypt(pdu, client.keys.decryption_key(server=False), client.cipher)
    assert decode_header(inner).status == NTStatus.SUCCESS
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        client.server.receive_pdu(bytes(tampered))


def test_compound_of_two_echos(users: UserDatabase) -> None:
    server = make_server(users)
    client = MiniClient(server)
    client.negotiate()
    first = bytearray(Header(command=Command.ECHO, credits=1, message_id=1).to_bytes() + EMPTY4)
    first += bytes((-len(first)) % 8)
    first[20:24] = len(first).to_bytes(4, "little")
    second = Header(command=Command.ECHO, credits=1, message_id=2).to_bytes() + EMPTY4
    server.receive_pdu(bytes(first) + second)
    (pdu,) = sent(server)
    one = decode_header(pdu)
    assert one.message_id == 1 and one.next_command % 8 == 0 and one.next_command > 0
    two = decode_header(pdu, one.next_command)
    assert two.message_id == 2 and two.next_command == 0


def test_reauthentication_keeps_the_session_and_its_keys(users: UserDatabase) -> None:
    client = MiniClient(make_server(users))
    client.negotiate()
    client.login("alice", "Pa55-word!")
    signer = client.signer
    assert signer is not None
    auth = ClientAuthenticator("alice", "Pa55-word!")
    token = auth.step(None)
    unsigned, _ = client.send(Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, token).encode())
    assert unsigned.status == NTStatus.ACCESS_DENIED  # a re-authentication must be signed
    while True:
        header, pdu = client.send(
            Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, token).encode(), sign=True
        )
        assert header.flags & Flags.SIGNED and signer.verify(pdu)
        if header.status != NTStatus.MORE_PROCESSING_REQUIRED:
            break
        token = auth.step(SessionSetupResponse.decode(pdu).security_buffer)
    assert header.status == NTStatus.SUCCESS
    header, pdu = client.send(Command.ECHO, EMPTY4, sign=True)  # same keys as before
    assert header.status == NTStatus.SUCCESS and signer.verify(pdu)
    # A failed re-authentication ends the session, with a signed answer.
    auth = ClientAuthenticator("alice", "wrong")
    token = auth.step(None)
    while True:
        header, pdu = client.send(
            Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, token).encode(), sign=True
        )
        if header.status != NTStatus.MORE_PROCESSING_REQUIRED:
            break
        token = auth.step(SessionSetupResponse.decode(pdu).security_buffer)
    assert header.status == NTStatus.LOGON_FAILURE and signer.verify(pdu)
    assert client.send(Command.ECHO, EMPTY4, sign=True)[0].status == NTStatus.USER_SESSION_DELETED


def tree_connect(client: MiniClient, share: str, *, sign: bool = False) -> Header:
    return client.send(Command.TREE_CONNECT, TreeConnectRequest(0, rf"\\server\{share}").encode(), sign=sign)[
        0
    ]


@pytest.mark.parametrize("kind", ["anonymous", "guest"])
def test_guest_and_anonymous_sessions_reach_only_guest_shares(users: UserDatabase, kind: str) -> None:
    client = MiniClient(make_server(users, guests=True))
    client.negotiate()
    header, pdu = client.login_anonymous() if kind == "anonymous" else client.login("Guest", "whatever")
    assert header.status == NTStatus.SUCCESS
    flags = SessionSetupResponse.decode(pdu).session_flags
    assert flags == (SessionFlags.IS_NULL if kind == "anonymous" else SessionFlags.IS_GUEST)
    # Unsigned requests and responses: the session has no key.
    header, _ = client.send(Command.ECHO, EMPTY4)
    assert header.status == NTStatus.SUCCESS and not header.flags & Flags.SIGNED
    assert tree_connect(client, "data").status == NTStatus.ACCESS_DENIED
    assert tree_connect(client, "pub").status == NTStatus.SUCCESS
    assert tree_connect(client, "IPC$").status == NTStatus.SUCCESS
    # A request claiming a signature cannot be checked: refused, and the session stays.
    client.signer = crypto.make_signer(crypto.SigningAlgorithm.AES_CMAC, b"k" * 16)
    assert client.send(Command.ECHO, EMPTY4, sign=True)[0].status == NTStatus.ACCESS_DENIED
    assert client.send(Command.ECHO, EMPTY4)[0].status == NTStatus.SUCCESS


def test_guests_are_refused_at_logon_when_no_share_allows_them(users: UserDatabase) -> None:
    client = MiniClient(make_server(users))
    client.negotiate()
    assert client.login_anonymous()[0].status == NTStatus.LOGON_FAILURE
    client = MiniClient(make_server(users))
    client.negotiate()
    assert client.login("guest", "")[0].status == NTStatus.LOGON_FAILURE


def test_guests_are_refused_when_every_session_is_encrypted(users: UserDatabase) -> None:
    client = MiniClient(make_server(users, guests=True, policy=ServerPolicy(encrypt_all=True)))
    client.negotiate()
    header, _ = client.login_anonymous()
    assert header.status == NTStatus.ACCESS_DENIED
    assert client.send(Command.ECHO, EMPTY4)[0].status == NTStatus.USER_SESSION_DELETED


def test_a_share_cannot_both_allow_guests_and_require_encryption() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        Share("pub", guest_ok=True, encrypt=True)


def test_a_user_session_may_become_anonymous_but_not_the_reverse(users: UserDatabase) -> None:
    """As on Windows (smbtorture's smb2.session.reauth2): re-authenticating as anonymous drops the
    user's rights and keeps the session's keys; a null session has none, so it cannot become a
    user's."""
    client = MiniClient(make_server(users, guests=True))
    client.negotiate()
    client.login("alice", "Pa55-word!")
    assert client.login_anonymous(sign=True)[0].status == NTStatus.SUCCESS
    header, pdu = client.send(Command.ECHO, EMPTY4, sign=True)  # still signed, with the same key
    assert header.status == NTStatus.SUCCESS and client.signer is not None and client.signer.verify(pdu)
    assert tree_connect(client, "data", sign=True).status == NTStatus.ACCESS_DENIED
    assert tree_connect(client, "pub", sign=True).status == NTStatus.SUCCESS

    client = MiniClient(make_server(users, guests=True))
    client.negotiate()
    client.login_anonymous()
    auth = ClientAuthenticator("alice", "Pa55-word!")
    header, pdu = client.send(
        Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, auth.step(None)).encode()
    )
    token = auth.step(SessionSetupResponse.decode(pdu).security_buffer)
    header, _ = client.send(Command.SESSION_SETUP, SessionSetupRequest(0, 1, 0, 0, token).encode())
    assert header.status == NTStatus.ACCESS_DENIED
    assert client.send(Command.ECHO, EMPTY4)[0].status == NTStatus.USER_SESSION_DELETED


def test_no_channel_can_be_bound_to_a_guest_session(users: UserDatabase) -> None:
    server = make_server(users, guests=True)
    first = MiniClient(server)
    first.negotiate()
    first.login_anonymous()
    second = MiniClient(ServerConnection(
        identity=ServerIdentity(b"S" * 16), server=server.server,
        authenticator_factory=lambda: ServerAuthenticator(users, allow_guests=True),
        initial_token=ServerAuthenticator.initial_token(),
    ))  # fmt: skip
    second.negotiate()
    second.session_id = first.session_id
    second.signer = crypto.make_signer(second.algorithm, b"k" * 16)
    binding = SessionSetupRequest(SessionSetupFlags.BINDING, 1, 0, 0, b"x").encode()
    assert second.send(Command.SESSION_SETUP, binding, sign=True)[0].status == NTStatus.NOT_SUPPORTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4))
def test_arbitrary_pdus_are_answered_or_end_the_connection(tmp_path_factory: pytest.TempPathFactory,
                                                          pdus: list[bytes]) -> None:  # fmt: skip
    """Whatever arrives (raw, or behind a valid SMB2 header), the core answers or raises the
    protocol error; nothing else escapes (MS-SMB2 3.3.5.2)."""
    db = UserDatabase(tmp_path_factory.mktemp("fuzz") / "users.db")
    server = make_server(db)
    MiniClient(server).negotiate()
    for i, data in enumerate(pdus, start=1):
        command = data[0] % 0x13 if data else 0
        for pdu in (Header(command=command, credits=1, message_id=i).to_bytes() + data, data):
            try:
                server.receive_pdu(pdu)
            except SMBProtocolError:
                return
            server.data_to_send()
