"""SMB session authentication: SPNEGO wrapping NTLMv2 (MS-SPNG, MS-NLMP), for server and client.

The protocol work is pyspnego's: the server side is its ``negotiate`` acceptor (SPNEGO
NegTokenInit/NegTokenResp, or raw NTLMSSP tokens if a client sends them) over its pure-Python NTLM
acceptor; the client side is its ``negotiate`` initiator. This module adds what an SMB server needs
around them:

* :class:`UserDatabase`: the accounts, in an smbpasswd-form file that holds NT hashes only (never a
  password, never an LM hash), loaded and saved atomically.
* :class:`ServerAuthenticator`: one SESSION_SETUP exchange. It maps every failure to the NTSTATUS the
  server answers with (:class:`AuthenticationError`), refuses LM and NTLMv1 logons, refuses
  anonymous and guest logons unless told to accept them (for shares that allow them), and hands
  over the NTLM *exported session key*, which is SMB's Session.SessionKey (MS-SMB2 3.3.5.5.3).
* :class:`ClientAuthenticator`: the same exchange from Ferry's own client.

How the credentials reach pyspnego
----------------------------------
pyspnego's NTLM acceptor has no API for a credential callback: it reads the account from the file
named by the ``NTLM_USER_FILE`` environment variable, once to check it exists when the NTLM context
is created (at the first token) and again when the AUTHENTICATE message arrives. It also reads
``LM_COMPAT_LEVEL`` when the context is created (level 5 = accept NTLMv2 only). Its lookup matches
the domain the client sent exactly, and Samba's smbpasswd convention of 32 ``X`` for "no LM hash"
does not parse in it, so the database file itself cannot be handed over. Instead, for each call into
pyspnego this module writes a throw-away credential file holding at most the one account the
client's AUTHENTICATE message names (under the domain the client sent), in an anonymous in-memory
file (``memfd_create``, passed as ``/proc/self/fd/N``; a 0600 temporary file where that is not
available), and sets both variables around the *synchronous* pyspnego call, restoring their
previous values afterwards. The variables are process-global: the swap is serialised by a lock, so
concurrent authenticators in several threads are safe, but other code reading these two variables
in another thread during the call would see Ferry's values. The SMB server is single-threaded
asyncio, where this cannot happen.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import os
import re
import struct
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import spnego
from spnego import NegotiateOptions
from spnego._context import ContextProxy, GSSMech
from spnego._credential import CredentialCache, NTLMHash
from spnego._negotiate import NegotiateProxy
from spnego._ntlm import NTLMProxy, _NTLMCredential
from spnego._ntlm_raw.crypto import hmac_md5, ntowfv2, rc4k
from spnego._ntlm_raw.md4 import md4
from spnego._ntlm_raw.messages import (
    Authenticate,
    AvFlags,
    AvId,
    MessageType,
    NegotiateFlags,
    NTClientChallengeV2,
)
from spnego._spnego import NegState, NegTokenInit, NegTokenResp, unpack_token
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import BadBindingsError, InvalidTokenError

from .errors import LocalProtocolError, SMBProtocolError
from .ntstatus import NTStatus

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MAX_ROUNDS",
    "MAX_USER_NAME_LENGTH",
    "NTLMSSP_OID",
    "AuthStep",
    "AuthenticationError",
    "ClientAuthenticator",
    "ServerAuthenticator",
    "UserDatabase",
    "UserDatabaseError",
    "UserRecord",
    "nt_hash",
]

log = logging.getLogger(__name__)

NTLMSSP_OID: Final = GSSMech.ntlm.value
"""The NTLMSSP mechanism, 1.3.6.1.4.1.311.2.2.10 (MS-NLMP 1.9)."""

#: The hint Windows and Samba put in NegTokenInit2 (MS-SPNG 2.2.1); clients ignore it.
NEG_HINT_NAME: Final = b"not_defined_in_RFC4178@please_ignore"

MAX_USER_NAME_LENGTH: Final = 64
#: Windows accepts passwords up to 256 characters (CredUI's CREDUI_MAX_PASSWORD_LENGTH).
MAX_PASSWORD_LENGTH: Final = 256

_NO_LM_HASH: Final = "X" * 32
_NTLMSSP_SIGNATURE: Final = b"NTLMSSP\x00"
#: An NTLMv2 response is 16 bytes of NTProofStr plus the client blob; NTLMv1 responses are 24 bytes.
_NTLMV1_RESPONSE_SIZE: Final = 24
_USER_FILE_VAR: Final = "NTLM_USER_FILE"
_LM_COMPAT_VAR: Final = "LM_COMPAT_LEVEL"
_NTLMV2_ONLY: Final = "5"
#: SPNEGO/NTLM needs at most 3 client tokens (4 with a separate mechListMIC round); allow slack.
MAX_ROUNDS: Final = 6
#: The account name of guest logons (compared case-insensitively), when the database lacks it.
GUEST_ACCOUNT: Final = "guest"


class AuthenticationError(SMBProtocolError):
    """An authentication exchange failed; :attr:`status` is the NTSTATUS to answer SESSION_SETUP with.

    ``STATUS_LOGON_FAILURE`` for a wrong password, unknown or disabled user, refused anonymous or
    guest logon, LM or NTLMv1 logon; ``STATUS_INVALID_PARAMETER`` for a malformed token or one
    without a common mechanism. On the client side, ``STATUS_INVALID_NETWORK_RESPONSE`` for a
    server token that is malformed or fails verification.
    """

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or "authentication failed", status)


class UserDatabaseError(Exception):
    """The user database file is malformed, or an operation on it is not possible."""


# --------------------------------------------------------------------------------------------------
# User database
# --------------------------------------------------------------------------------------------------


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4 of the UTF-16LE password (MS-NLMP 3.3.1), with pyspnego's MD4 (OpenSSL 3 has none).

    Unlike ``spnego._ntlm_raw.crypto.ntowfv1`` this never takes a ``LM:NT`` hex string for a hash.
    """
    try:
        return md4(password.encode("utf-16-le"))
    except UnicodeEncodeError as e:
        raise UserDatabaseError("the password is not valid Unicode (lone surrogate)") from e


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or ``None`` if it can."""
    if not name:
        return "the user name is empty"
    if len(name) > MAX_USER_NAME_LENGTH:
        return f"the user name is longer than {MAX_USER_NAME_LENGTH} characters"
    if ":" in name:
        return "the user name contains ':'"
    if "\\" in name:
        return "the user name contains '\\' (the domain separator)"
    if name.startswith("#"):
        return "the user name starts with '#' (a comment)"
    if name != name.strip():
        return "the user name has leading or trailing white space"
    if not _is_printable_field(name):
        return "the user name contains control characters or is not valid Unicode"
    return None


def _is_printable_field(text: str) -> bool:
    """True if ``text`` has no control, line or paragraph separators and encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return all(unicodedata.category(ch) not in ("Cc", "Zl", "Zp") for ch in text)


def _check_name(name: str) -> str:
    problem = _name_problem(name)
    if problem is not None:
        raise UserDatabaseError(f"{problem}: {name!r}")
    return name


def _check_password(password: str) -> bytes:
    if not password:
        raise UserDatabaseError("empty passwords are not allowed")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserDatabaseError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    return nt_hash(password)


def _fold(name: str) -> str:
    """The lookup key: user names are case-insensitive, as on Windows."""
    return name.casefold()


@dataclass(frozen=True)
class UserRecord:
    """One account: smbpasswd fields minus the LM hash, which Ferry never keeps."""

    name: str
    uid: int
    nt_hash: bytes = field(repr=False)
    #: Account control letters without brackets or padding; ``U`` is a normal user, ``D`` disabled.
    flags: str = "U"
    #: Last password change, seconds since the epoch.
    last_change: int = 0

    @property
    def disabled(self) -> bool:
        return "D" in self.flags

    def to_line(self) -> str:
        return (
            f"{self.name}:{self.uid}:{_NO_LM_HASH}:{self.nt_hash.hex().upper()}:"
            f"[{self.flags:<11}]:LCT-{self.last_change:08X}"
        )


_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")
_FLAGS = re.compile(r"\[([A-Z ]*)\]")
_LCT = re.compile(r"LCT-([0-9A-Fa-f]{8})")
_SMBPASSWD_FIELDS = 6


def _parse_line(line: str, lineno: int) -> UserRecord:
    fields = line.split(":")
    # Samba writes a trailing ':' after the LCT field; Ferry does not but reads both.
    if len(fields) == _SMBPASSWD_FIELDS + 1 and fields[-1] == "":
        fields.pop()
    if len(fields) != _SMBPASSWD_FIELDS:
        raise UserDatabaseError(
            f"line {lineno}: expected 6 ':'-separated fields "
            f"(user:uid:LMHASH:NTHASH:[flags]:LCT-xxxxxxxx), found {len(fields)}"
        )
    name, uid_text, lm_text, nt_text, flags_text, lct_text = fields
    problem = _name_problem(name)
    if problem is not None:
        raise UserDatabaseError(f"line {lineno}: {problem}")
    if not uid_text.isascii() or not uid_text.isdigit() or int(uid_text) >= 2**32:
        raise UserDatabaseError(f"line {lineno}: the uid {uid_text!r} is not a number below 2^32")
    if lm_text.upper() != _NO_LM_HASH and lm_text != "0" * 32:
        raise UserDatabaseError(
            f"line {lineno}: the LM hash field must be 32 'X' (Ferry never stores LM hashes)"
        )
    if not _HEX32.fullmatch(nt_text):
        raise UserDatabaseError(f"line {lineno}: the NT hash must be 32 hexadecimal digits")
    flags_match = _FLAGS.fullmatch(flags_text)
    if flags_match is None:
        raise UserDatabaseError(f"line {lineno}: the account flags {flags_text!r} are not '[U          ]'")
    flags = flags_match.group(1).replace(" ", "")
    if "U" not in flags:
        raise UserDatabaseError(f"line {lineno}: not a normal user account (no 'U' in {flags_text!r})")
    lct_match = _LCT.fullmatch(lct_text)
    if lct_match is None:
        raise UserDatabaseError(f"line {lineno}: the last change field {lct_text!r} is not 'LCT-XXXXXXXX'")
    return UserRecord(
        name=name,
        uid=int(uid_text),
        nt_hash=bytes.fromhex(nt_text),
        flags=flags,
        last_change=int(lct_match.group(1), 16),
    )


def _parse(text: str) -> dict[str, UserRecord]:
    records: dict[str, UserRecord] = {}
    first_seen: dict[str, int] = {}
    for lineno, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        record = _parse_line(line, lineno)
        key = _fold(record.name)
        if key in records:
            raise UserDatabaseError(
                f"line {lineno}: duplicate user {record.name!r} (also on line {first_seen[key]})"
            )
        records[key] = record
        first_seen[key] = lineno
    return records


_FileSignature = tuple[int, int, int, int]


class UserDatabase:
    """Accounts in an smbpasswd-form file: ``user:uid:XXXX...:NTHASH:[U          ]:LCT-XXXXXXXX``.

    The file holds NT hashes only; the LM field is always 32 ``X`` ("no LM hash", as in Samba).
    Blank lines and ``#`` comments are skipped when loading and dropped when saving. Every change
    is saved at once, atomically (temporary file, fsync, rename; mode 0600), after re-reading the
    file so edits by another process since the last load are not lost. Two processes changing the
    file at the same moment are not serialised: the later rename wins.

    Names are looked up case-insensitively and kept as first written. A missing file is an empty
    database; it is created by the first change.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._records: dict[str, UserRecord] = {}
        self._signature: _FileSignature | None = None
        self.reload()

    @property
    def path(self) -> Path:
        return self._path

    # -- reading -------------------------------------------------------------------------------

    def _stat(self) -> os.stat_result | None:
        try:
            return self._path.stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UserDatabaseError(f"{self._path}: cannot read: {e}") from e

    @staticmethod
    def _signature_of(st: os.stat_result | None) -> _FileSignature | None:
        return None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        """Read the file again. On :class:`UserDatabaseError` the previous contents stay in place."""
        st = self._stat()
        if st is None:
            self._records, self._signature = {}, None
            return
        try:
            raw = self._path.read_bytes()
        except OSError as e:
            raise UserDatabaseError(f"{self._path}: cannot read: {e}") from e
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            lineno = raw.count(b"\n", 0, e.start) + 1
            raise UserDatabaseError(f"{self._path}: line {lineno}: not valid UTF-8") from e
        try:
            records = _parse(text)
        except UserDatabaseError as e:
            raise UserDatabaseError(f"{self._path}: {e}") from None
        if st.st_mode & 0o077:
            log.warning("%s is accessible to other users; it should have mode 0600", self._path)
        self._records, self._signature = records, self._signature_of(st)

    def refresh(self) -> bool:
        """Reload if the file changed since it was last read or written; True if it was reloaded."""
        if self._signature_of(self._stat()) == self._signature:
            return False
        self.reload()
        return True

    def users(self) -> list[str]:
        """The user names, as written, in file order."""
        return [record.name for record in self._records.values()]

    def has_user(self, name: str) -> bool:
        return _fold(name) in self._records

    def get(self, name: str) -> UserRecord | None:
        """The account called ``name`` in any letter case, or ``None``."""
        return self._records.get(_fold(name))

    # -- changing ------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, *, uid: int | None = None) -> UserRecord:
        """Add an account; its uid is the next free one from 1000 unless given."""
        _check_name(name)
        hashed = _check_password(password)
        self.refresh()
        if self.has_user(name):
            raise UserDatabaseError(f"duplicate user: {self._records[_fold(name)].name!r} already exists")
        if uid is None:
            uid = max((record.uid for record in self._records.values()), default=999) + 1
        if not 0 <= uid < 2**32:
            raise UserDatabaseError(f"the uid {uid} is not in 0..2^32-1")
        record = UserRecord(name=name, uid=uid, nt_hash=hashed, last_change=int(time.time()))
        self._change(_fold(name), record)
        return record

    def set_password(self, name: str, password: str) -> None:
        hashed = _check_password(password)
        self.refresh()
        record = self._existing(name)
        self._change(
            _fold(name),
            UserRecord(record.name, record.uid, hashed, record.flags, int(time.time())),
        )

    def remove_user(self, name: str) -> None:
        self.refresh()
        self._existing(name)
        self._change(_fold(name), None)

    def _existing(self, name: str) -> UserRecord:
        record = self.get(name)
        if record is None:
            raise UserDatabaseError(f"unknown user: {name!r}")
        return record

    def _change(self, key: str, record: UserRecord | None) -> None:
        previous = dict(self._records)
        if record is None:
            del self._records[key]
        else:
            self._records[key] = record
        try:
            self.save()
        except BaseException:
            self._records = previous
            raise

    def save(self) -> None:
        """Write the file atomically: a 0600 temporary file in the same directory, fsync, rename."""
        text = "".join(record.to_line() + "\n" for record in self._records.values())
        directory = self._path.parent
        try:
            fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{self._path.name}.", suffix=".tmp")
        except OSError as e:
            raise UserDatabaseError(f"{self._path}: cannot write: {e}") from e
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), 0o600)
                file.write(text.encode("utf-8"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, self._path)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            if isinstance(e, OSError):
                raise UserDatabaseError(f"{self._path}: cannot write: {e}") from e
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._signature = self._signature_of(self._stat())


# --------------------------------------------------------------------------------------------------
# pyspnego's environment
# --------------------------------------------------------------------------------------------------

_ENV_LOCK = threading.RLock()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _credential_file(content: bytes) -> Iterator[str]:
    """A private file holding ``content`` for pyspnego to read by name; gone afterwards."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("ferry-ntlm-credential", os.MFD_CLOEXEC)
        try:
            _write_all(fd, content)
            path = f"/proc/self/fd/{fd}"
            if os.path.isfile(path):
                yield path
                return
        finally:
            os.close(fd)
    # No memfd or no /proc: a 0600 file (mkstemp's mode) that only lives for the call.
    fd, path = tempfile.mkstemp(prefix="ferry-ntlm-")
    try:
        _write_all(fd, content)
        os.close(fd)
        fd = -1
        yield path
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(path)


@contextlib.contextmanager
def _pyspnego_environment(credentials: bytes = b"") -> Iterator[None]:
    """Point pyspnego's NTLM at ``credentials`` and allow NTLMv2 only, for one synchronous call."""
    with _ENV_LOCK, _credential_file(credentials) as path:
        saved = {name: os.environ.get(name) for name in (_USER_FILE_VAR, _LM_COMPAT_VAR)}
        os.environ[_USER_FILE_VAR] = path
        os.environ[_LM_COMPAT_VAR] = _NTLMV2_ONLY
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _credential_line(user: str, domain: str, hashed: bytes) -> bytes:
    """The one smbpasswd line pyspnego's acceptor will find for ``domain\\user`` as the client sent it."""
    principal = f"{domain}\\{user}" if domain else user
    return f"{principal}:0:{'0' * 32}:{hashed.hex().upper()}:[U          ]:LCT-00000000\n".encode()


# --------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthStep:
    """The result of one :meth:`ServerAuthenticator.step`.

    ``out_token`` goes into the SESSION_SETUP response's security buffer: with
    STATUS_MORE_PROCESSING_REQUIRED while ``complete`` is false, with STATUS_SUCCESS once it is
    true (it may be empty then, for raw NTLMSSP). When complete, ``user`` is the account name as
    stored in the database, ``domain`` the domain the client sent (``None`` if empty), and
    ``session_key`` the 16-byte NTLM exported session key, or ``None`` for an anonymous or guest
    session.

    ``anonymous``: a null session (MS-NLMP 3.2.5.1.2: empty user name and responses).
    ``guest``: a logon as ``guest`` (any password) where the user database has no such account; it
    is who the client says, never what a failed logon becomes (Ferry maps no failure to guest).
    A guest session's ``user`` is ``Guest``, whatever domain the client named.
    Neither has a key a server could trust, so such sessions are neither signed nor encrypted.
    """

    out_token: bytes
    complete: bool
    user: str | None = None
    domain: str | None = None
    session_key: bytes | None = field(default=None, repr=False)
    anonymous: bool = False
    guest: bool = False


#: NTLMv2_CLIENT_CHALLENGE (MS-NLMP 2.2.2.7) up to its AvPairs: RespType, HiRespType, reserved,
#: TimeStamp, ChallengeFromClient, reserved.
_NTLMV2_BLOB_HEADER: Final = 28


def _well_formed_ntlmv2_blob(blob: bytes) -> bool:
    """True if ``blob`` has NTLMv2_CLIENT_CHALLENGE's header and an AV_PAIR list that ends in
    MsvAvEOL inside it (what follows the EOL is not looked at, as Windows does not)."""
    if len(blob) < _NTLMV2_BLOB_HEADER or blob[0] != 1 or blob[1] != 1:
        return False
    offset = _NTLMV2_BLOB_HEADER
    while offset + 4 <= len(blob):
        av_id, av_len = struct.unpack_from("<HH", blob, offset)
        if av_id == 0:  # MsvAvEOL
            return True
        offset += 4 + av_len
    return False


def _ntlm_message_type(token: bytes) -> int | None:
    if len(token) < 12 or not token.startswith(_NTLMSSP_SIGNATURE):
        return None
    message_type: int = struct.unpack_from("<I", token, 8)[0]
    return message_type


class ServerAuthenticator:
    """One SESSION_SETUP exchange on the server (MS-SMB2 3.3.5.5.3), NTLMv2 only.

    Feed every client security buffer to :meth:`step`. Failures raise :class:`AuthenticationError`
    carrying the status to answer; the exchange is then over, as is the session. Anonymous logons
    and guest logons (see :class:`AuthStep`) are refused unless ``allow_guests``: pass it when some
    share allows them, and refuse them per share at TREE_CONNECT.
    """

    def __init__(self, users: UserDatabase, *, allow_guests: bool = False) -> None:
        self._users = users
        self._allow_guests = allow_guests
        self._context: ContextProxy | None = None
        self._spnego: bool | None = None
        self._steps = 0
        self._authenticating = False
        self._finished = False
        self._complete = False
        self._user: str | None = None
        self._domain: str | None = None

    @staticmethod
    def initial_token() -> bytes:
        """The SPNEGO NegTokenInit2 for the NEGOTIATE response's security buffer (MS-SPNG 3.2.5.2).

        It advertises NTLMSSP only, with the customary hint name; byte for byte what pyspnego's
        acceptor sends when it speaks first.
        """
        return NegTokenInit([NTLMSSP_OID], hint_name=NEG_HINT_NAME).pack()

    @property
    def complete(self) -> bool:
        """True once a step returned a complete :class:`AuthStep`."""
        return self._complete

    def step(self, token: bytes) -> AuthStep:
        """Process one security buffer from the client; see :class:`AuthStep` for the answer."""
        if self._finished:
            raise LocalProtocolError("this authentication exchange is already over")
        try:
            result = self._step(bytes(token))
        except AuthenticationError as e:
            self._finished = True
            log.info("SMB authentication failed: %s", e)
            raise
        except Exception as e:  # pyspnego's parsers raise anything on hostile input
            self._finished = True
            status = NTStatus.LOGON_FAILURE if self._authenticating else NTStatus.INVALID_PARAMETER
            log.info("SMB authentication failed: %s: %s", type(e).__name__, e)
            raise AuthenticationError(status, f"security token rejected: {e}") from e
        self._steps += 1
        if result.complete:
            self._finished = self._complete = True
        return result

    def _step(self, token: bytes) -> AuthStep:
        if not token:
            raise AuthenticationError(NTStatus.INVALID_PARAMETER, "empty security token")
        if self._steps >= MAX_ROUNDS:
            raise AuthenticationError(NTStatus.INVALID_PARAMETER, f"more than {MAX_ROUNDS} rounds")
        is_spnego = not token.startswith(_NTLMSSP_SIGNATURE)
        if self._spnego is not None and is_spnego != self._spnego:
            raise AuthenticationError(
                NTStatus.INVALID_PARAMETER, "the client switched between SPNEGO and raw NTLMSSP"
            )
        self._spnego = is_spnego

        mech_token: bytes | None = token
        if is_spnego:
            token, mech_token = self._inspect_spnego(token)

        if mech_token is not None and _ntlm_message_type(mech_token) == MessageType.authenticate:
            if self._steps == 0:
                raise AuthenticationError(NTStatus.INVALID_PARAMETER, "NTLM AUTHENTICATE before CHALLENGE")
            return self._authenticate(token, Authenticate.unpack(mech_token))

        out = self._run(token)
        if self._authenticating and self._context is not None and self._context.complete:
            # The SPNEGO round that carried only the client's mechListMIC (MS-SPNG 3.2.5.1).
            return self._completed(out)
        return AuthStep(out_token=out, complete=False)

    def _inspect_spnego(self, token: bytes) -> tuple[bytes, bytes | None]:
        """The token to give pyspnego, and the NTLM token inside it."""
        message = unpack_token(token)
        if isinstance(message, NegTokenInit):
            if self._steps:
                raise AuthenticationError(NTStatus.INVALID_PARAMETER, "NegTokenInit after the first round")
            if message.mech_token is not None and message.mech_types[:1] != [NTLMSSP_OID]:
                # An optimistic token for a preferred mechanism we lack (Kerberos, from a domain
                # client): RFC 4178 4.2.1 says to ignore it and answer with supportedMech NTLMSSP,
                # then the client starts NTLM. pyspnego would hand it to NTLM, so drop it here.
                message = NegTokenInit(
                    message.mech_types,
                    message.req_flags,
                    None,
                    message.hint_name,
                    message.hint_address,
                    message.mech_list_mic,
                )
                return message.pack(), None
            return token, message.mech_token
        if isinstance(message, NegTokenResp):
            if not self._steps:
                raise AuthenticationError(NTStatus.INVALID_PARAMETER, "NegTokenResp in the first round")
            return token, message.response_token
        raise AuthenticationError(NTStatus.INVALID_PARAMETER, "neither an SPNEGO nor an NTLMSSP token")

    def _authenticate(self, token: bytes, message: Authenticate) -> AuthStep:
        user = message.user_name or ""
        domain = message.domain_name or ""
        nt_response = message.nt_challenge_response or b""
        lm_response = message.lm_challenge_response or b""
        self._authenticating = True

        anonymous = not user and not nt_response and lm_response in (b"", b"\x00")
        if anonymous or (user.lower() == GUEST_ACCOUNT and self._users.get(user) is None):
            return self._guest_or_anonymous(anonymous=anonymous)
        if not user:
            raise AuthenticationError(NTStatus.LOGON_FAILURE, "empty user name")
        if len(nt_response) <= _NTLMV1_RESPONSE_SIZE:
            raise AuthenticationError(
                NTStatus.LOGON_FAILURE, f"{user!r}: LM and NTLMv1 responses are refused"
            )
        if not _well_formed_ntlmv2_blob(nt_response[16:]):
            # Samba bug 14932: Windows answers a malformed blob so, whatever the password.
            raise AuthenticationError(NTStatus.INVALID_PARAMETER, f"{user!r}: malformed NTLMv2 response")

        try:
            self._users.refresh()
        except UserDatabaseError as e:
            log.warning("keeping the previously loaded users: %s", e)
        record = self._users.get(user)
        if record is None or record.disabled:
            raise AuthenticationError(
                NTStatus.LOGON_FAILURE, f"{user!r}: {'unknown' if record is None else 'disabled'} user"
            )
        if not _is_printable_field(domain + user) or ":" in domain + user or "\\" in domain:
            raise AuthenticationError(NTStatus.LOGON_FAILURE, f"unusable name {domain!r}\\{user!r}")

        self._user = record.name
        self._domain = domain or None
        try:
            out = self._run(token, _credential_line(user, domain, record.nt_hash))
        except Exception as e:
            raise AuthenticationError(NTStatus.LOGON_FAILURE, f"{record.name!r}: {e}") from e
        assert self._context is not None
        if not self._context.complete:
            # SPNEGO still expects the client's mechListMIC: one more round.
            return AuthStep(out_token=out, complete=False)
        return self._completed(out)

    def _guest_or_anonymous(self, *, anonymous: bool) -> AuthStep:
        """MS-NLMP 3.2.5.1.2's anonymous logon (pyspnego's acceptor does not implement it), or
        the guest account. No key comes out that the server could check, so no mechListMIC is
        checked or sent: the final token is a bare accept-completed, as Samba and Windows send."""
        kind = "anonymous" if anonymous else "guest"
        if not self._allow_guests:
            raise AuthenticationError(NTStatus.LOGON_FAILURE, f"{kind} logon refused: no share allows it")
        log.info("SMB %s logon accepted", kind)
        out = NegTokenResp(neg_state=NegState.accept_complete).pack() if self._spnego else b""
        if anonymous:
            return AuthStep(out_token=out, complete=True, anonymous=True)
        return AuthStep(out_token=out, complete=True, user="Guest", guest=True)

    def _completed(self, out: bytes) -> AuthStep:
        assert self._context is not None
        session_key = self._context.session_key
        if len(session_key) != 16:
            raise AuthenticationError(NTStatus.LOGON_FAILURE, "no session key was established")
        log.info("SMB logon of %r (domain %r) accepted", self._user, self._domain)
        return AuthStep(
            out_token=out,
            complete=True,
            user=self._user,
            domain=self._domain,
            session_key=session_key,
        )

    def _run(self, token: bytes, credentials: bytes = b"") -> bytes:
        with _pyspnego_environment(credentials):
            if self._context is None:
                # Pin the SPNEGO layer to pyspnego's own NTLM acceptor, so an installed
                # python-gssapi can neither add Kerberos nor replace the NTLM implementation.
                ntlm = _NTLMv2Acceptor(usage="accept", options=NegotiateOptions.use_ntlm)
                self._context = _NTLMOnlyNegotiate(
                    usage="accept",
                    protocol="negotiate",
                    options=NegotiateOptions.use_negotiate,
                    _negotiate_contexts={GSSMech.ntlm: ntlm},
                )
            out = self._context.step(token)
        return out or b""


class _NTLMOnlyNegotiate(NegotiateProxy):
    """pyspnego's SPNEGO acceptor, preferring the one mechanism this server offers.

    pyspnego ranks Kerberos first whenever it could exist, and answers a client whose first
    choice is NTLMSSP with negState request-mic as if it had chosen something else. RFC 4178 4.2.2
    and MS-SPNG 3.2.5.1 ask for request-mic only when the chosen mechanism is not the client's
    first; Samba's client, told so, insists on a mechListMIC that an anonymous logon cannot make.
    """

    def _preferred_mech_list(self) -> list[GSSMech]:
        return [GSSMech.ntlm]


class _NTLMv2Acceptor(NTLMProxy):
    """pyspnego's NTLM acceptor with the NTLMv2 check of MS-NLMP 3.3.2 done over the bytes received.

    pyspnego rebuilds the client's NTLMv2 blob from the parsed AV pairs and appends the four zero
    bytes of MS-NLMP's pseudo-code before comparing whole responses; clients that end the blob
    after MsvAvEOL (Samba's smbclient does) then never verify. Windows and Samba servers compute
    NTProofStr over the blob as sent, and so does this method; everything else (challenge,
    SPNEGO, signing and sealing keys for the mechListMIC) stays pyspnego's.
    """

    def _step_accept_authenticate(self, token: bytes, channel_bindings: GssChannelBindings | None) -> None:
        negotiate = self._temp_negotiate
        challenge = self._temp_challenge
        if negotiate is None or challenge is None:
            raise InvalidTokenError(context_msg="AUTHENTICATE before CHALLENGE")
        auth = Authenticate.unpack(token)
        response = auth.nt_challenge_response or b""
        if not auth.user_name or len(response) <= 24:
            raise InvalidTokenError(context_msg="only NTLMv2 logons are accepted")
        username = f"{auth.domain_name}\\{auth.user_name}" if auth.domain_name else auth.user_name
        self._credential = _NTLMCredential(CredentialCache(username=username))
        response_key = ntowfv2(auth.user_name, self._credential.nt_hash, auth.domain_name)
        blob = response[16:]
        proof = hmac_md5(response_key, challenge.server_challenge + blob)
        if not hmac.compare_digest(proof, response[:16]):
            raise InvalidTokenError(context_msg="Invalid NTLM response from initiator")
        av_pairs = NTClientChallengeV2.unpack(blob).av_pairs
        if channel_bindings is not None:
            raise BadBindingsError(context_msg="channel bindings are not used by SMB")
        key_exchange_key = hmac_md5(response_key, proof)  # SessionBaseKey; KXKEY for NTLMv2
        if auth.flags & NegotiateFlags.key_exch and auth.flags & (NegotiateFlags.sign | NegotiateFlags.seal):
            self._session_key = rc4k(key_exchange_key, auth.encrypted_random_session_key or b"")
        else:
            self._session_key = key_exchange_key
        if av_pairs.get(AvId.flags, 0) & AvFlags.mic:
            expected = auth.mic or b""
            auth.mic = b"\x00" * 16
            actual = self._calculate_mic(self._session_key, negotiate.pack(), challenge.pack(), auth.pack())
            if not hmac.compare_digest(actual, expected):
                raise InvalidTokenError(context_msg="Invalid MIC in NTLM authentication message")
        self._context_attr = auth.flags
        self._complete = True


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------


class ClientAuthenticator:
    """Ferry's client side of SESSION_SETUP: SPNEGO with NTLMv2 only.

    Call :meth:`step` with the NEGOTIATE response's security buffer (or nothing) to get the first
    SESSION_SETUP token, then with each response's buffer, including the final one that comes with
    STATUS_SUCCESS (it carries the server's mechListMIC), until :attr:`complete`. The session key is
    available as soon as the NTLM AUTHENTICATE message has been produced, which is when an SMB 3.1.1
    client needs it to verify the signed final response. Only the NT hash of the password is kept.
    """

    def __init__(
        self,
        user: str,
        password: str,
        domain: str = "",
        *,
        server_name: str = "unspecified",
    ) -> None:
        if not user:
            raise ValueError("the user name is empty")
        principal = f"{domain}\\{user}" if domain else user
        credential = NTLMHash(
            username=principal,
            nt_hash=base64.b16encode(_client_nt_hash(password)).decode(),
        )
        with _pyspnego_environment():
            ntlm = spnego.client(
                credential,
                hostname=server_name,
                service="cifs",
                protocol="ntlm",
                options=NegotiateOptions.use_ntlm,
            )
            self._context: ContextProxy = spnego.client(
                credential,
                hostname=server_name,
                service="cifs",
                protocol="negotiate",
                options=NegotiateOptions.use_negotiate,
                _negotiate_contexts={GSSMech.ntlm: ntlm},
            )
        self._finished = False

    @property
    def complete(self) -> bool:
        return self._context.complete

    @property
    def session_key(self) -> bytes:
        key = self._context.session_key
        if not key:
            raise LocalProtocolError("no session key before the NTLM AUTHENTICATE message is produced")
        return key

    def step(self, in_token: bytes | None = None) -> bytes:
        """The next token for the server (empty when there is none to send)."""
        if self._finished or self._context.complete:
            raise LocalProtocolError("this authentication exchange is already over")
        try:
            with _pyspnego_environment():
                out = self._context.step(bytes(in_token) if in_token else None)
        except Exception as e:
            self._finished = True
            raise AuthenticationError(
                NTStatus.INVALID_NETWORK_RESPONSE, f"the server's security token was rejected: {e}"
            ) from e
        return out or b""


def _client_nt_hash(password: str) -> bytes:
    try:
        return nt_hash(password)
    except UserDatabaseError as e:
        raise ValueError(str(e)) from None
