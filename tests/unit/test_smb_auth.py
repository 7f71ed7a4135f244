"""smbcore.auth: the NT-hash user database and SPNEGO/NTLMv2 session authentication, against
Ferry's own client and pyspnego's raw NTLM and Negotiate initiators, and fed hostile tokens."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import spnego
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smbcore.auth import (
    MAX_ROUNDS,
    NTLMSSP_OID,
    AuthenticationError,
    AuthStep,
    ClientAuthenticator,
    ServerAuthenticator,
    UserDatabase,
    UserDatabaseError,
    nt_hash,
)
from smbcore.errors import LocalProtocolError
from smbcore.ntstatus import NTStatus
from spnego._ntlm_raw.messages import Authenticate, Challenge, NegotiateFlags
from spnego._spnego import NegState, NegTokenInit, NegTokenResp, pack_mech_type_list, unpack_token

PASSWORD = "Correct-Horse-42"
KERBEROS_OID = "1.2.840.113554.1.2.2"
MS_KERBEROS_OID = "1.2.840.48018.1.2.2"

ClientStep = Callable[[bytes | None], bytes]


@pytest.fixture
def users(tmp_path: Path) -> UserDatabase:
    db = UserDatabase(tmp_path / "smbpasswd")
    db.add_user("Alice", PASSWORD)
    return db


@pytest.fixture(scope="module")
def shared_users(tmp_path_factory: pytest.TempPathFactory) -> UserDatabase:
    db = UserDatabase(tmp_path_factory.mktemp("users") / "smbpasswd")
    db.add_user("alice", PASSWORD)
    return db


def pyspnego_step(context: spnego.ContextProxy) -> ClientStep:
    return lambda token: context.step(token) or b""


def exchange(server: ServerAuthenticator, client: ClientStep, first: bytes | None = None) -> AuthStep:
    """Run a whole SESSION_SETUP exchange; the client also checks the server's final token."""
    token = client(first)
    for _ in range(4):
        result = server.step(token)
        if result.complete:
            if result.out_token:
                assert client(result.out_token) == b""
            return result
        token = client(result.out_token)
    raise AssertionError("the exchange did not finish")


def ntlm_of(token: bytes) -> bytes:
    """The NTLM message in a server token (SPNEGO NegTokenResp or raw)."""
    if token.startswith(b"NTLMSSP\x00"):
        return token
    message = unpack_token(token)
    assert isinstance(message, NegTokenResp)
    assert message.response_token is not None
    return message.response_token


# --------------------------------------------------------------------------------------------------
# Exchanges that succeed
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["", "WORKGROUP", "ferry.example"])
def test_ferry_client_and_server_agree_on_the_session_key(users: UserDatabase, domain: str) -> None:
    client = ClientAuthenticator("alice", PASSWORD, domain, server_name="srv1")
    server = ServerAuthenticator(users)
    result = exchange(server, client.step, ServerAuthenticator.initial_token())

    assert result.complete and server.complete and client.complete
    assert result.user == "Alice"
    assert result.domain == (domain or None)
    assert not result.anonymous and not result.guest
    assert result.session_key is not None and len(result.session_key) == 16
    assert result.session_key == client.session_key


def test_ferry_client_without_the_negotiate_hint(users: UserDatabase) -> None:
    client = ClientAuthenticator("alice", PASSWORD)
    result = exchange(ServerAuthenticator(users), client.step)
    assert result.session_key == client.session_key


@pytest.mark.parametrize(("protocol", "hint"), [("ntlm", False), ("negotiate", False), ("negotiate", True)])
@pytest.mark.parametrize("username", ["alice", "WORKGROUP\\alice", "ALICE"])
def test_pyspnego_initiators(users: UserDatabase, protocol: str, hint: bool, username: str) -> None:
    """pyspnego's stock initiators, as smbprotocol uses them (it passes the NEGOTIATE hint first)."""
    context = spnego.client(username, PASSWORD, hostname="srv1", service="cifs", protocol=protocol)
    server = ServerAuthenticator(users)
    first = ServerAuthenticator.initial_token() if hint else None
    result = exchange(server, pyspnego_step(context), first)

    assert result.user == "Alice"
    assert result.session_key == context.session_key
    assert len(context.session_key) == 16
    assert context.complete
    if protocol == "ntlm":
        assert result.out_token == b""  # raw NTLMSSP: nothing follows the AUTHENTICATE message
    else:
        final = unpack_token(result.out_token)
        assert isinstance(final, NegTokenResp)
        assert final.neg_state == NegState.accept_complete
        assert final.mech_list_mic  # the server's mechListMIC, verified by the client above


@pytest.mark.parametrize("spelling", ["alice", "ALICE", "aLiCe"])
def test_user_names_are_case_insensitive(users: UserDatabase, spelling: str) -> None:
    client = ClientAuthenticator(spelling, PASSWORD)
    result = exchange(ServerAuthenticator(users), client.step)
    assert result.user == "Alice"  # as stored


def test_kerberos_first_optimistic_token_is_ignored(users: UserDatabase) -> None:
    """A domain client offers Kerberos first with an optimistic token: the server must answer with
    supportedMech NTLMSSP and no token, then run NTLM (RFC 4178 4.2.1)."""
    mech_types = [MS_KERBEROS_OID, KERBEROS_OID, NTLMSSP_OID]
    ntlm = spnego.client("alice", PASSWORD, protocol="ntlm")
    server = ServerAuthenticator(users)

    first = server.step(NegTokenInit(mech_types, mech_token=b"\x60\x05\x06\x03\x2a\x03\x04").pack())
    reply = unpack_token(first.out_token)
    assert isinstance(reply, NegTokenResp)
    assert reply.supported_mech == NTLMSSP_OID
    assert reply.response_token is None
    # pyspnego ranks Kerberos first, so it does not insist with request-mic; the NTLM MIC makes the
    # mechListMIC exchange happen anyway (checked below).
    assert reply.neg_state in (NegState.accept_incomplete, NegState.request_mic)

    negotiate = ntlm.step()
    second = server.step(NegTokenResp(response_token=negotiate).pack())
    authenticate = ntlm.step(ntlm_of(second.out_token))
    assert authenticate is not None
    mic = ntlm.sign(pack_mech_type_list(mech_types))
    third = server.step(NegTokenResp(response_token=authenticate, mech_list_mic=mic).pack())

    assert third.complete and third.user == "Alice"
    assert third.session_key == ntlm.session_key
    final = unpack_token(third.out_token)
    assert isinstance(final, NegTokenResp) and final.mech_list_mic is not None
    ntlm.verify(pack_mech_type_list(mech_types), final.mech_list_mic)


def test_initial_token_is_a_negtokeninit2_advertising_ntlmssp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = ServerAuthenticator.initial_token()
    assert token.startswith(b"\x60")  # [APPLICATION 0] InitialContextToken
    message = unpack_token(token)
    assert isinstance(message, NegTokenInit)
    assert message.mech_types == [NTLMSSP_OID]
    assert message.hint_name == b"not_defined_in_RFC4178@please_ignore"
    assert message.mech_token is None

    # Byte for byte what pyspnego's own acceptor sends when asked to speak first.
    (tmp_path / "creds").write_text("")
    monkeypatch.setenv("NTLM_USER_FILE", str(tmp_path / "creds"))
    assert spnego.server(protocol="negotiate").step() == token


def test_new_users_are_seen_without_restart(users: UserDatabase) -> None:
    UserDatabase(users.path).add_user("bob", "Bob's password")  # e.g. the CLI, another process
    client = ClientAuthenticator("bob", "Bob's password")
    assert exchange(ServerAuthenticator(users), client.step).user == "bob"


def test_environment_is_restored(users: UserDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NTLM_USER_FILE", "/nonexistent/ours")
    monkeypatch.delenv("LM_COMPAT_LEVEL", raising=False)
    exchange(ServerAuthenticator(users), ClientAuthenticator("alice", PASSWORD).step)
    assert os.environ["NTLM_USER_FILE"] == "/nonexistent/ours"
    assert "LM_COMPAT_LEVEL" not in os.environ


# --------------------------------------------------------------------------------------------------
# Exchanges that fail
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong password"), ("alice", PASSWORD.lower()), ("mallory", PASSWORD), ("alice@x", PASSWORD)],
)
def test_bad_credentials_are_logon_failure(users: UserDatabase, user: str, password: str) -> None:
    server = ServerAuthenticator(users)
    with pytest.raises(AuthenticationError) as info:
        exchange(server, ClientAuthenticator(user, password).step)
    assert info.value.status == NTStatus.LOGON_FAILURE
    assert not server.complete
    with pytest.raises(LocalProtocolError):
        server.step(b"\x00")


def test_disabled_account_is_logon_failure(users: UserDatabase) -> None:
    users.path.write_text(users.path.read_text().replace("[U          ]", "[DU         ]"))
    with pytest.raises(AuthenticationError) as info:
        exchange(ServerAuthenticator(users), ClientAuthenticator("alice", PASSWORD).step)
    assert info.value.status == NTStatus.LOGON_FAILURE


@pytest.mark.parametrize("level", ["0", "1", "2"])
def test_lm_and_ntlmv1_responses_are_refused(
    users: UserDatabase, monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    monkeypatch.setenv("LM_COMPAT_LEVEL", level)  # read by pyspnego's initiator when it is created
    context = spnego.client("alice", PASSWORD, protocol="ntlm")
    monkeypatch.delenv("LM_COMPAT_LEVEL")
    server = ServerAuthenticator(users)
    challenge = server.step(context.step() or b"")
    authenticate = context.step(challenge.out_token)
    assert authenticate is not None
    assert len(Authenticate.unpack(authenticate).nt_challenge_response or b"") == 24  # really NTLMv1
    with pytest.raises(AuthenticationError) as info:
        server.step(authenticate)
    assert info.value.status == NTStatus.LOGON_FAILURE


def anonymous_authenticate(challenge_token: bytes) -> bytes:
    challenge = Challenge.unpack(ntlm_of(challenge_token))
    return Authenticate(
        challenge.flags | NegotiateFlags.anonymous, lm_challenge_response=b"\x00", nt_challenge_response=None
    ).pack()


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("allow", [False, True])
def test_anonymous_is_refused_unless_guests_are_allowed(users: UserDatabase, wrap: bool, allow: bool) -> None:
    ntlm = spnego.client("alice", PASSWORD, protocol="ntlm")
    server = ServerAuthenticator(users, allow_guests=allow)
    negotiate = ntlm.step() or b""
    first = NegTokenInit([NTLMSSP_OID], mech_token=negotiate).pack() if wrap else negotiate
    anonymous = anonymous_authenticate(server.step(first).out_token)
    token = NegTokenResp(response_token=anonymous).pack() if wrap else anonymous
    if not allow:
        with pytest.raises(AuthenticationError) as info:
            server.step(token)
        assert info.value.status == NTStatus.LOGON_FAILURE
        return
    result = server.step(token)
    assert result.complete and result.anonymous and not result.guest and server.complete
    assert result.user is None and result.session_key is None
    if wrap:
        final = unpack_token(result.out_token)
        assert isinstance(final, NegTokenResp) and final.neg_state == NegState.accept_complete
        assert final.mech_list_mic is None  # an anonymous logon has no key to make one with
    else:
        assert result.out_token == b""


@pytest.mark.parametrize("password", ["", "anything at all"])
@pytest.mark.parametrize("allow", [False, True])
def test_guest_account_is_refused_unless_guests_are_allowed(
    users: UserDatabase, password: str, allow: bool
) -> None:
    client = ClientAuthenticator("GUEST", password)
    server = ServerAuthenticator(users, allow_guests=allow)
    if not allow:
        with pytest.raises(AuthenticationError) as info:
            exchange(server, client.step)
        assert info.value.status == NTStatus.LOGON_FAILURE
        return
    token = client.step(None)
    result = server.step(token)
    result = server.step(client.step(result.out_token))
    assert result.complete and result.guest and not result.anonymous
    assert result.user == "Guest" and result.domain is None and result.session_key is None
    final = unpack_token(result.out_token)
    assert isinstance(final, NegTokenResp) and final.neg_state == NegState.accept_complete
    assert final.mech_list_mic is None


def test_a_guest_account_in_the_database_is_an_ordinary_user(users: UserDatabase) -> None:
    users.add_user("guest", "Gu3st-pw")
    server = ServerAuthenticator(users, allow_guests=True)
    result = exchange(server, ClientAuthenticator("guest", "Gu3st-pw").step)
    assert not result.guest and result.user == "guest" and result.session_key is not None
    with pytest.raises(AuthenticationError) as info:
        exchange(ServerAuthenticator(users, allow_guests=True), ClientAuthenticator("guest", "x").step)
    assert info.value.status == NTStatus.LOGON_FAILURE


def test_unknown_users_never_become_guests(users: UserDatabase) -> None:
    with pytest.raises(AuthenticationError) as info:
        exchange(ServerAuthenticator(users, allow_guests=True), ClientAuthenticator("mallory", "x").step)
    assert info.value.status == NTStatus.LOGON_FAILURE


def test_no_request_mic_when_the_client_first_offers_ntlm(users: UserDatabase) -> None:
    """RFC 4178 4.2.2: request-mic only when the chosen mechanism is not the client's first.
    (Samba's client, told request-mic, then wants a mechListMIC an anonymous logon cannot make.)"""
    negotiate = spnego.client("alice", PASSWORD, protocol="ntlm").step() or b""
    first = NegTokenInit([NTLMSSP_OID], mech_token=negotiate).pack()
    reply = unpack_token(ServerAuthenticator(users).step(first).out_token)
    assert isinstance(reply, NegTokenResp) and reply.neg_state == NegState.accept_incomplete
    assert reply.supported_mech == NTLMSSP_OID
    # Kerberos first (a domain client): NTLM was not its first choice, so the MIC is asked for.
    first = NegTokenInit([KERBEROS_OID, NTLMSSP_OID]).pack()
    reply = unpack_token(ServerAuthenticator(users).step(first).out_token)
    assert isinstance(reply, NegTokenResp) and reply.neg_state == NegState.request_mic


def test_tampered_mech_list_mic_is_logon_failure(users: UserDatabase) -> None:
    context = spnego.client("alice", PASSWORD, protocol="negotiate")
    server = ServerAuthenticator(users)
    challenge = server.step(context.step() or b"")
    token = unpack_token(context.step(challenge.out_token) or b"")
    assert isinstance(token, NegTokenResp) and token.mech_list_mic is not None
    token.mech_list_mic = bytes(b ^ 0xFF for b in token.mech_list_mic)
    with pytest.raises(AuthenticationError) as info:
        server.step(token.pack())
    assert info.value.status == NTStatus.LOGON_FAILURE


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"\x00",
        b"NTLMSSP\x00",
        b"NTLMSSP\x00\x03\x00\x00\x00",  # AUTHENTICATE before CHALLENGE
        NegTokenResp(response_token=b"x").pack(),  # NegTokenResp first
        NegTokenInit([KERBEROS_OID], mech_token=b"\x60\x00").pack(),  # no common mechanism
        NegTokenInit([]).pack(),
    ],
)
def test_malformed_first_tokens_are_invalid_parameter(users: UserDatabase, token: bytes) -> None:
    with pytest.raises(AuthenticationError) as info:
        ServerAuthenticator(users).step(token)
    assert info.value.status == NTStatus.INVALID_PARAMETER


def test_switching_between_spnego_and_raw_ntlm_is_refused(users: UserDatabase) -> None:
    context = spnego.client("alice", PASSWORD, protocol="ntlm")
    server = ServerAuthenticator(users)
    server.step(NegTokenInit([NTLMSSP_OID], mech_token=context.step()).pack())
    with pytest.raises(AuthenticationError):
        server.step(b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(60))


def test_endless_exchange_is_cut_off(users: UserDatabase) -> None:
    context = spnego.client("alice", PASSWORD, protocol="negotiate")
    server = ServerAuthenticator(users)
    server.step(context.step() or b"")
    with pytest.raises(AuthenticationError) as info:  # noqa: PT012
        for _ in range(MAX_ROUNDS):
            assert not server.step(NegTokenResp().pack()).complete
    assert info.value.status == NTStatus.INVALID_PARAMETER


def test_client_rejects_a_garbage_server_token() -> None:
    client = ClientAuthenticator("alice", PASSWORD)
    client.step()
    with pytest.raises(LocalProtocolError):
        _ = client.session_key
    with pytest.raises(AuthenticationError) as info:
        client.step(b"\xa1\x03\x30\x01\x00")
    assert info.value.status == NTStatus.INVALID_NETWORK_RESPONSE


def test_step_after_success_is_a_local_error(users: UserDatabase) -> None:
    server = ServerAuthenticator(users)
    exchange(server, ClientAuthenticator("alice", PASSWORD).step)
    with pytest.raises(LocalProtocolError):
        server.step(b"x")


# --------------------------------------------------------------------------------------------------
# Hostile tokens: AuthenticationError or a normal answer, never anything else
# --------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_tokens = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"NTLMSSP\x00" + b),
    st.builds(
        lambda kind, rest: b"NTLMSSP\x00" + kind.to_bytes(4, "little") + rest,
        st.integers(1, 3),
        st.binary(max_size=200),
    ),
    st.builds(lambda t: NegTokenInit([NTLMSSP_OID], mech_token=t).pack(), st.binary(max_size=200)),
    st.binary(max_size=200).map(lambda b: b"\x60" + bytes([len(b) & 0x7F]) + b),
    st.binary(max_size=200).map(lambda b: b"\xa1" + bytes([len(b) & 0x7F]) + b),
)


def survives(server: ServerAuthenticator, token: bytes) -> None:
    outcome: AuthStep | AuthenticationError
    try:
        outcome = server.step(token)
    except AuthenticationError as e:  # any other exception fails the test
        outcome = e
    if isinstance(outcome, AuthenticationError):
        assert outcome.status in (NTStatus.INVALID_PARAMETER, NTStatus.LOGON_FAILURE)


@FUZZ
@given(token=hostile_tokens)
def test_hostile_first_token(shared_users: UserDatabase, token: bytes) -> None:
    survives(ServerAuthenticator(shared_users), token)


@FUZZ
@given(token=hostile_tokens, spnego_wrapped=st.booleans())
def test_hostile_second_token(shared_users: UserDatabase, token: bytes, spnego_wrapped: bool) -> None:
    server = ServerAuthenticator(shared_users)
    context = spnego.client("alice", PASSWORD, protocol="negotiate" if spnego_wrapped else "ntlm")
    server.step(context.step() or b"")
    survives(server, token)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    spnego_wrapped=st.booleans(),
)
def test_mutated_authenticate(
    shared_users: UserDatabase, edits: list[tuple[int, int]], spnego_wrapped: bool
) -> None:
    server = ServerAuthenticator(shared_users)
    context = spnego.client("alice", PASSWORD, protocol="negotiate" if spnego_wrapped else "ntlm")
    challenge = server.step(context.step() or b"")
    token = bytearray(context.step(challenge.out_token) or b"")
    for position, value in edits:
        token[position % len(token)] = value
    survives(server, bytes(token))


# --------------------------------------------------------------------------------------------------
# User database
# --------------------------------------------------------------------------------------------------


def test_database_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "smbpasswd"
    db = UserDatabase(path)
    assert db.users() == [] and not path.exists()
    db.add_user("Alice", PASSWORD)
    db.add_user("bob", "another one", uid=2000)
    db.add_user("Ünïcødé user", "pässwörd")
    db.add_user("carol", "third")
    assert db.get("carol") is not None and db.get("carol").uid == 2002  # type: ignore[union-attr]

    again = UserDatabase(path)
    assert again.users() == ["Alice", "bob", "Ünïcødé user", "carol"]
    for name in again.users():
        assert again.get(name) == db.get(name)
    assert again.get("ALICE") is not None and again.get("ALICE").nt_hash == nt_hash(PASSWORD)  # type: ignore[union-attr]

    again.set_password("BOB", "changed")
    again.remove_user("CAROL")
    third = UserDatabase(path)
    assert third.users() == ["Alice", "bob", "Ünïcødé user"]
    assert third.get("bob").nt_hash == nt_hash("changed")  # type: ignore[union-attr]
    assert third.has_user("alice") and not third.has_user("carol")
    assert sorted(os.listdir(tmp_path)) == ["smbpasswd"]  # no temporary files left behind


def test_database_file_format(tmp_path: Path) -> None:
    path = tmp_path / "smbpasswd"
    db = UserDatabase(path)
    db.add_user("alice", "password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (line,) = path.read_text().splitlines()
    name, uid, lm, nt, flags, lct = line.split(":")
    assert (name, uid) == ("alice", "1000")
    assert lm == "X" * 32  # never an LM hash
    assert nt == "8846F7EAEE8FB117AD06BDD830B7586C"  # NTOWFv1("password"), a well-known value
    assert flags == "[U          ]"
    assert lct.startswith("LCT-") and len(lct) == 12


def test_no_password_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "smbpasswd"
    db = UserDatabase(path)
    db.add_user("alice", "PlainTextSecret")
    db.set_password("alice", "AnotherSecret")
    raw = path.read_bytes()
    for secret in ("PlainTextSecret", "AnotherSecret"):
        assert secret.encode() not in raw
        assert secret.encode("utf-16-le") not in raw
        assert secret.upper().encode() not in raw


def test_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        UserDatabase(tmp_path / "smbpasswd").add_user("alice", "password")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "smbpasswd").stat().st_mode) == 0o600


NT_PASSWORD = "8846F7EAEE8FB117AD06BDD830B7586C"  # NTOWFv1("password")
GOOD = f"alice:1000:{'X' * 32}:{NT_PASSWORD}:[U          ]:LCT-5F000000"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("bob:1000:XXXX", "6 ':'-separated fields"),
        ("bob:x:" + GOOD.split(":", 2)[2], "uid"),
        (
            f"bob:1:E52CAC67419A9A224A3B108F3FA6CB6D:{NT_PASSWORD}:[U          ]:LCT-5F000000",
            "LM",
        ),
        ("bob:1:" + "X" * 32 + ":8846F7EAEE8FB117AD06BDD830B7586:[U          ]:LCT-5F000000", "NT hash"),
        ("bob:1:" + "X" * 32 + ":8846F7EAEE8FB117AD06BDD830B7586C:U:LCT-5F000000", "flags"),
        ("bob:1:" + "X" * 32 + ":8846F7EAEE8FB117AD06BDD830B7586C:[W          ]:LCT-5F000000", "normal user"),
        ("bob:1:" + "X" * 32 + ":8846F7EAEE8FB117AD06BDD830B7586C:[U          ]:5F000000", "LCT"),
        (":1:" + GOOD.split(":", 2)[2], "empty"),
        ("ALICE:1001:" + GOOD.split(":", 2)[2], "duplicate user 'ALICE' (also on line 2)"),
    ],
)
def test_malformed_lines_are_reported_with_their_number(tmp_path: Path, bad_line: str, message: str) -> None:
    path = tmp_path / "smbpasswd"
    path.write_text(f"# Ferry users\n{GOOD}\n\n{bad_line}\n")
    with pytest.raises(UserDatabaseError, match="line 4") as info:
        UserDatabase(path)
    assert message in str(info.value)


def test_samba_files_load(tmp_path: Path) -> None:
    """Samba writes a trailing ':' and may use zeros for the LM hash."""
    path = tmp_path / "smbpasswd"
    path.write_text(GOOD + ":\r\n" + GOOD.replace("alice", "bob").replace("X" * 32, "0" * 32) + "\n")
    db = UserDatabase(path)
    assert db.users() == ["alice", "bob"]
    assert db.get("bob").nt_hash == nt_hash("password")  # type: ignore[union-attr]


def test_invalid_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "smbpasswd"
    path.write_bytes(GOOD.encode() + b"\n\xff" + GOOD[1:].encode() + b"\n")
    with pytest.raises(UserDatabaseError, match="line 2"):
        UserDatabase(path)


def test_failed_reload_keeps_the_previous_users(users: UserDatabase) -> None:
    users.path.write_text("garbage\n")
    with pytest.raises(UserDatabaseError, match="line 1"):
        users.refresh()
    assert users.users() == ["Alice"]
    # The server keeps authenticating with what it had.
    assert exchange(ServerAuthenticator(users), ClientAuthenticator("alice", PASSWORD).step).user == "Alice"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a:b",
        "dom\\user",
        "tab\there",
        "new\nline",
        "nul\x00",
        "sep\u2028",
        "x" * 65,
        " padded",
        "#comment",
    ],
)
def test_invalid_user_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserDatabaseError):
        UserDatabase(tmp_path / "smbpasswd").add_user(name, "password")
    assert not (tmp_path / "smbpasswd").exists()


def test_longest_name_is_accepted(tmp_path: Path) -> None:
    db = UserDatabase(tmp_path / "smbpasswd")
    db.add_user("n" * 64, "password")
    assert UserDatabase(db.path).has_user("N" * 64)


def test_database_errors(users: UserDatabase) -> None:
    with pytest.raises(UserDatabaseError, match="duplicate user"):
        users.add_user("ALICE", "x")
    with pytest.raises(UserDatabaseError, match="unknown user"):
        users.set_password("bob", "x")
    with pytest.raises(UserDatabaseError, match="unknown user"):
        users.remove_user("bob")
    with pytest.raises(UserDatabaseError, match="empty"):
        users.set_password("alice", "")
    with pytest.raises(UserDatabaseError, match="surrogate"):
        users.add_user("bob", "\ud800")
    assert users.users() == ["Alice"]


def test_changes_merge_with_edits_by_another_process(users: UserDatabase) -> None:
    UserDatabase(users.path).add_user("bob", "password")
    users.add_user("carol", "password")  # re-reads first: bob survives
    assert UserDatabase(users.path).users() == ["Alice", "bob", "carol"]


def test_nt_hash_is_md4_of_utf16le() -> None:
    assert nt_hash("password").hex().upper() == "8846F7EAEE8FB117AD06BDD830B7586C"
    # pyspnego's ntowfv1 would take this for an LM:NT pair; we hash it like any other password.
    pair = "0" * 32 + ":" + "1" * 32
    assert nt_hash(pair) != bytes.fromhex("1" * 32)


@pytest.fixture(autouse=True)
def _no_env_leak() -> Iterator[None]:
    before = {k: os.environ.get(k) for k in ("NTLM_USER_FILE", "LM_COMPAT_LEVEL")}
    yield
    assert {k: os.environ.get(k) for k in before} == before


@pytest.mark.parametrize(
    "blob",
    [
        b"\x01\x01" + bytes(26),  # the header alone: no AV pairs, no MsvAvEOL
        b"\x02\x02" + bytes(30),  # RespType 2
        b"\x01\x01" + bytes(26) + b"\x11\xa2\x08\x81" + bytes(60),  # a pair longer than the blob
        b"\x01\x01" + bytes(26) + b"\x01\x00\x04\x00VM",  # a pair cut short, no MsvAvEOL
    ],
)
def test_malformed_ntlmv2_blob_is_invalid_parameter(users: UserDatabase, blob: bytes) -> None:
    """smbtorture's smb2.session.ntlmssp_bug14932: a malformed NTLMv2_CLIENT_CHALLENGE is
    INVALID_PARAMETER (as on Windows), not LOGON_FAILURE."""
    client = spnego.client("alice", PASSWORD, protocol="ntlm")
    server = ServerAuthenticator(users)
    challenge = server.step(client.step() or b"").out_token
    sent = Authenticate.unpack(client.step(challenge) or b"")
    forged = Authenticate(
        sent.flags, b"", bytes(16) + blob, sent.domain_name, sent.user_name, sent.workstation,
        sent.encrypted_random_session_key,
    ).pack()  # fmt: skip
    with pytest.raises(AuthenticationError) as info:
        server.step(forged)
    assert info.value.status == NTStatus.INVALID_PARAMETER
