"""SMB 3.x cryptography: key derivation, pre-auth integrity, signing and encryption.

Sans-IO and stateless apart from :class:`PreauthHash`: bytes in, bytes out. Every primitive comes
from the ``cryptography`` package (AES-CMAC, AES-GCM/GMAC, AES-CCM, HMAC-SHA256, SHA-512); this
module only arranges the inputs the way MS-SMB2 prescribes:

* :func:`kdf` and :func:`derive_session_keys`: MS-SMB2 3.1.4.2 (SP800-108 counter mode,
  HMAC-SHA256) with the labels and contexts of 3.2.5.3.1 / 3.3.5.5.3.
* :class:`PreauthHash`: the SMB 3.1.1 pre-authentication integrity hash (3.2.5.2, 3.3.5.4,
  3.3.5.5): ``H = SHA-512(H || message)`` starting from 64 zero bytes.
* :class:`Signer` and its three algorithms: MS-SMB2 3.1.4.1 (signing) and 3.1.5.1 (verifying).
* :func:`encrypt`, :func:`decrypt`, :func:`parse_transform_header`: MS-SMB2 3.1.4.3 and 3.1.5.1
  with the SMB2 TRANSFORM_HEADER of 2.2.41.
* :func:`decrypt_received`: what the client and the server core both do with a received
  TRANSFORM_HEADER (MS-SMB2 3.2.5.1.1.1, 3.3.5.2.1.1).

Errors: :class:`SMBCryptoError` for everything that can come from the peer (a short or malformed
transform, a bad tag, an unknown cipher id); ``ValueError`` for arguments only a caller's bug can
produce (a key or nonce of the wrong size, a missing pre-auth hash). :func:`decrypt_received`,
which the connections call at their receive boundary, raises their ``RemoteProtocolError``.
"""

from __future__ import annotations

import abc
import enum
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol, TypeAlias, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac, constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from .errors import RemoteProtocolError
from .header import HEADER_SIZE, PROTOCOL_ID, SIGNATURE_OFFSET, TRANSFORM_PROTOCOL_ID, Command, Flags
from .negotiate import Dialect
from .ntstatus import NTStatus

__all__ = [
    "SIGNATURE_OFFSET",
    "SIGNATURE_SIZE",
    "SMB2_CANCEL",
    "SMB2_FLAGS_SERVER_TO_REDIR",
    "SMB2_FLAGS_SIGNED",
    "SMB2_HEADER_SIZE",
    "TRANSFORM_FLAG_ENCRYPTED",
    "TRANSFORM_HEADER_SIZE",
    "TRANSFORM_PROTOCOL_ID",
    "AesCmacSigner",
    "AesGmacSigner",
    "BytesLike",
    "CipherId",
    "Dialect",
    "HmacSha256Signer",
    "KeyedSession",
    "PreauthHash",
    "SMBCryptoError",
    "SessionKeys",
    "Signer",
    "SigningAlgorithm",
    "TransformHeader",
    "decrypt",
    "decrypt_in_place",
    "decrypt_received",
    "derive_session_keys",
    "encrypt",
    "encrypt_in_place",
    "kdf",
    "make_signer",
    "parse_transform_header",
    "random_nonce",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What every input buffer may be; ``memoryview`` slices avoid copying large payloads."""


class SMBCryptoError(Exception):
    """A received message failed a cryptographic check, or names an unknown algorithm.

    Raised for a transform that is too short, has the wrong ProtocolId, Flags or
    OriginalMessageSize, or whose AEAD tag does not verify (MS-SMB2 3.2.5.1.1.1 / 3.3.5.2.1.1:
    the receiver disconnects), and for cipher ids outside MS-SMB2 2.2.3.1.2.
    """


class SigningAlgorithm(enum.IntEnum):
    """Signing algorithm ids of SMB2_SIGNING_CAPABILITIES (MS-SMB2 2.2.3.1.7)."""

    HMAC_SHA256 = 0x0000
    AES_CMAC = 0x0001
    AES_GMAC = 0x0002


class CipherId(enum.IntEnum):
    """Cipher ids of SMB2_ENCRYPTION_CAPABILITIES (MS-SMB2 2.2.3.1.2)."""

    AES_128_CCM = 0x0001
    AES_128_GCM = 0x0002
    AES_256_CCM = 0x0003
    AES_256_GCM = 0x0004

    @property
    def key_size(self) -> int:
        """Key length in bytes: 16 for the AES-128 ciphers, 32 for the AES-256 ones."""
        return 32 if self in (CipherId.AES_256_CCM, CipherId.AES_256_GCM) else 16

    @property
    def is_gcm(self) -> bool:
        """True for the GCM ciphers, False for the CCM ones."""
        return self in (CipherId.AES_128_GCM, CipherId.AES_256_GCM)

    @property
    def nonce_size(self) -> int:
        """Bytes of the 16-byte Nonce field the cipher uses: 12 for GCM, 11 for CCM (MS-SMB2 2.2.41)."""
        return 12 if self.is_gcm else 11


# --- SMB2 header fields the signers read or write (MS-SMB2 2.2.1) -------------------------------

SMB2_HEADER_SIZE: Final = HEADER_SIZE
SIGNATURE_SIZE: Final = 16
SMB2_FLAGS_SERVER_TO_REDIR: Final = int(Flags.SERVER_TO_REDIR)
SMB2_FLAGS_SIGNED: Final = int(Flags.SIGNED)
SMB2_CANCEL: Final = int(Command.CANCEL)

_COMMAND = struct.Struct("<H")  # at offset 12
_FLAGS = struct.Struct("<I")  # at offset 16
_MESSAGE_ID = struct.Struct("<Q")  # at offset 24
_COMMAND_OFFSET: Final = 12
_FLAGS_OFFSET: Final = 16
_MESSAGE_ID_OFFSET: Final = 24
_ZERO_SIGNATURE: Final = bytes(SIGNATURE_SIZE)

# --- SMB2 TRANSFORM_HEADER (MS-SMB2 2.2.41) -----------------------------------------------------

TRANSFORM_HEADER_SIZE: Final = 52
TRANSFORM_FLAG_ENCRYPTED: Final = 0x0001
"""Flags (3.1.1) / EncryptionAlgorithm (3.0.x, where 0x0001 is AES-128-CCM): the same value."""

# ProtocolId, Signature, Nonce, OriginalMessageSize, Reserved, Flags, SessionId
_TRANSFORM = struct.Struct("<4s16s16sIHHQ")
_TF_SIGNATURE: Final = 4
_TF_NONCE: Final = 20  # the AEAD's associated data runs from here to the end of the header
_TAG_SIZE: Final = 16
_MAX_MESSAGE_SIZE: Final = 0xFFFFFFFF  # OriginalMessageSize is 32 bits


# --- Key derivation (MS-SMB2 3.1.4.2) -----------------------------------------------------------


def kdf(key: BytesLike, label: bytes, context: BytesLike, length_bits: int) -> bytes:
    """SP800-108 KDF in counter mode with HMAC-SHA256, r = 32 (MS-SMB2 3.1.4.2).

    Each block is ``HMAC-SHA256(key, [i]_32 || label || 0x00 || context || [L]_32)`` with the
    32-bit big-endian counter ``i`` starting at 1; the result is the leftmost ``length_bits``.
    ``label`` and ``context`` are passed exactly as MS-SMB2 lists them, *including* their own
    trailing NUL (``b"SMB2AESCMAC\\x00"``), so the PRF input has two zero bytes between them.
    """
    if length_bits <= 0 or length_bits % 8:
        raise ValueError(f"length_bits must be a positive multiple of 8, not {length_bits}")
    suffix = struct.pack(">I", length_bits)
    out = bytearray()
    counter = 1
    while len(out) * 8 < length_bits:
        mac = hmac.HMAC(bytes(key), hashes.SHA256())
        mac.update(struct.pack(">I", counter))
        mac.update(label)
        mac.update(b"\x00")
        mac.update(context)
        mac.update(suffix)
        out += mac.finalize()
        counter += 1
    return bytes(out[: length_bits // 8])


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys of one SMB 3.x session (MS-SMB2 3.2.1.3 / 3.3.1.8).

    The cipher keys are named by direction, which is what both ends agree on:
    ``client_to_server_key`` is the client's EncryptionKey and the server's DecryptionKey;
    ``server_to_client_key`` is the server's EncryptionKey and the client's DecryptionKey.
    Key bytes are kept out of ``repr()`` so they do not end up in logs.
    """

    signing_key: bytes = field(repr=False)
    client_to_server_key: bytes = field(repr=False)
    server_to_client_key: bytes = field(repr=False)
    application_key: bytes = field(repr=False)

    def encryption_key(self, *, server: bool) -> bytes:
        """The key the server (``server=True``) or the client encrypts with."""
        return self.server_to_client_key if server else self.client_to_server_key

    def decryption_key(self, *, server: bool) -> bytes:
        """The key the server (``server=True``) or the client decrypts with."""
        return self.client_to_server_key if server else self.server_to_client_key


def derive_session_keys(
    session_key: BytesLike,
    dialect: Dialect | int,
    preauth_hash: BytesLike | None = None,
    cipher: CipherId | int | None = None,
) -> SessionKeys:
    """Derive a session's signing, cipher and application keys (MS-SMB2 3.2.5.3.1, 3.3.5.5.3).

    ``session_key`` is the full key the GSS mechanism exported (16 bytes for NTLM, 16 or 32 for
    Kerberos). Session.SessionKey is its first 16 bytes, right-padded with zeros if shorter; it is
    the key derivation key of the signing and application keys (always L = 128, as every signing
    algorithm is AES-128 or HMAC with a 16-byte key) and of the cipher keys of the AES-128
    ciphers. For AES-256-CCM/GCM the cipher keys use L = 256 (3.1.4.2) and the *full* session key
    as the key derivation key (Session.FullSessionKey), which is what Windows does and what Samba
    (``smb2_signing_key_create``) does: a 32-byte Kerberos key then contributes all its bits.

    Dialects 3.0 and 3.0.2 use constant contexts: ``SMB2AESCMAC``/``SmbSign``,
    ``SMB2AESCCM``/``ServerIn `` (client to server) and ``ServerOut`` (server to client),
    ``SMB2APP``/``SmbRpc``; ``preauth_hash`` must be None and ``cipher`` None or AES-128-CCM.
    Dialect 3.1.1 uses ``SMBSigningKey``, ``SMBC2SCipherKey``, ``SMBS2CCipherKey`` and
    ``SMBAppKey`` with the session's 64-byte pre-auth integrity hash as context; ``cipher`` None
    (no cipher negotiated) derives 16-byte cipher keys.

    For session binding derive with the binding's own session key and pre-auth hash and keep only
    ``signing_key`` (Channel.SigningKey); the cipher and application keys stay the first
    channel's (MS-SMB2 3.2.5.3.2, 3.3.5.5.3).

    Dialects 2.0.2 and 2.1 derive nothing: they sign (HMAC-SHA256) with Session.SessionKey
    itself, have no encryption (empty cipher keys) and use the session key as application key.
    """
    dialect = Dialect(dialect)
    if dialect not in (
        Dialect.SMB_2_0_2,
        Dialect.SMB_2_1,
        Dialect.SMB_3_0,
        Dialect.SMB_3_0_2,
        Dialect.SMB_3_1_1,
    ):
        raise ValueError(f"no key derivation for dialect {dialect.name}")
    full_key = bytes(session_key)
    if not full_key:
        raise ValueError("empty session key")
    base_key = full_key[:16].ljust(16, b"\x00")  # Session.SessionKey
    cipher_id = None if cipher is None else _cipher_id(cipher)
    if dialect in (Dialect.SMB_2_0_2, Dialect.SMB_2_1):
        if preauth_hash is not None or cipher_id is not None:
            raise ValueError(f"dialect {dialect.name} has neither pre-auth integrity nor encryption")
        return SessionKeys(
            signing_key=base_key, client_to_server_key=b"", server_to_client_key=b"", application_key=base_key
        )

    if dialect in (Dialect.SMB_3_0, Dialect.SMB_3_0_2):
        if preauth_hash is not None:
            raise ValueError("dialects 3.0 and 3.0.2 have no pre-auth integrity hash")
        if cipher_id not in (None, CipherId.AES_128_CCM):
            raise ValueError(f"dialect {dialect.name} only has AES-128-CCM, not {cipher_id!r}")
        return SessionKeys(
            signing_key=kdf(base_key, b"SMB2AESCMAC\x00", b"SmbSign\x00", 128),
            client_to_server_key=kdf(base_key, b"SMB2AESCCM\x00", b"ServerIn \x00", 128),
            server_to_client_key=kdf(base_key, b"SMB2AESCCM\x00", b"ServerOut\x00", 128),
            application_key=kdf(base_key, b"SMB2APP\x00", b"SmbRpc\x00", 128),
        )

    if preauth_hash is None or len(preauth_hash) != PreauthHash.SIZE:
        raise ValueError("dialect 3.1.1 needs the session's 64-byte pre-auth integrity hash")
    context = bytes(preauth_hash)
    if cipher_id is not None and cipher_id.key_size == 32:
        cipher_kdk, cipher_bits = full_key, 256
    else:
        cipher_kdk, cipher_bits = base_key, 128
    return SessionKeys(
        signing_key=kdf(base_key, b"SMBSigningKey\x00", context, 128),
        client_to_server_key=kdf(cipher_kdk, b"SMBC2SCipherKey\x00", context, cipher_bits),
        server_to_client_key=kdf(cipher_kdk, b"SMBS2CCipherKey\x00", context, cipher_bits),
        application_key=kdf(base_key, b"SMBAppKey\x00", context, 128),
    )


# --- Pre-authentication integrity (MS-SMB2 3.2.5.2, 3.3.5.4, 3.3.5.5) ---------------------------


class PreauthHash:
    """The SMB 3.1.1 pre-authentication integrity hash value (SHA-512, hash id 0x0001).

    Starts at 64 zero bytes; each NEGOTIATE and SESSION_SETUP request and response (except the
    final SESSION_SETUP response with STATUS_SUCCESS) is chained in as it appears on the wire:
    ``H = SHA-512(H || message)`` (MS-SMB2 3.2.4.1.x, 3.2.5.2, 3.3.5.4, 3.3.5.5). A session's
    hash starts from the connection's value after NEGOTIATE: take :meth:`copy` (or
    ``copy.copy``) of the connection's object, so that each session setup, including every
    binding, chains independently.
    """

    __slots__ = ("_value",)

    SIZE: ClassVar[int] = 64

    def __init__(self, value: BytesLike | None = None) -> None:
        """Start from ``value`` (64 bytes), or from 64 zero bytes (Connection.PreauthIntegrityHashValue)."""
        initial = bytes(self.SIZE) if value is None else bytes(value)
        if len(initial) != self.SIZE:
            raise ValueError(f"a pre-auth integrity hash is {self.SIZE} bytes, not {len(initial)}")
        self._value = initial

    def update(self, message: BytesLike) -> None:
        """Chain one whole SMB2 message (header and body, as sent or received) into the hash."""
        digest = hashes.Hash(hashes.SHA512())
        digest.update(self._value)
        digest.update(message)
        self._value = digest.finalize()

    @property
    def value(self) -> bytes:
        """The current 64-byte hash value (the KDF context of dialect 3.1.1)."""
        return self._value

    def copy(self) -> PreauthHash:
        """An independent hash that continues from the same value."""
        return PreauthHash(self._value)

    __copy__ = copy

    def __repr__(self) -> str:
        return f"PreauthHash({self._value.hex()})"


# --- Signing (MS-SMB2 3.1.4.1, 3.1.5.1) ---------------------------------------------------------


class Signer(abc.ABC):
    """Signs and verifies whole SMB2 messages with one signing key (MS-SMB2 3.1.4.1, 3.1.5.1).

    ``message`` is always one complete SMB2 message: the 64-byte header followed by its body
    and, inside a compound chain, its padding (the caller passes a ``memoryview`` slice per
    message, nothing is copied). The signature is computed as if the 16-byte Signature field at
    offset 48 were zero, without modifying a read-only input. Everything an algorithm needs
    beyond the bytes (GMAC's MessageId, direction and cancel flag) is read from the header, so
    the three algorithms share one call signature.
    """

    __slots__ = ("_key",)

    algorithm: ClassVar[SigningAlgorithm]

    def __init__(self, key: BytesLike) -> None:
        """``key`` is the 16-byte Session.SessionKey (HMAC-SHA256) or SigningKey (CMAC, GMAC)."""
        key_bytes = bytes(key)
        if len(key_bytes) != 16:
            raise ValueError(f"SMB2 signing keys are 16 bytes, not {len(key_bytes)}")
        self._key = key_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<key>)"

    @abc.abstractmethod
    def _mac_pieces(self, header: memoryview, pieces: Iterable[BytesLike]) -> bytes:
        """The 16-byte MAC of the concatenated ``pieces`` (the message with its Signature
        field already replaced by zeros); ``header`` is the message's 64-byte header."""

    def _mac(self, message: memoryview) -> bytes:
        """The 16-byte MAC of ``message`` with its Signature field taken as zero."""
        return self._mac_pieces(message, _mac_input(message))

    def sign(self, message: BytesLike) -> bytes:
        """Return the 16-byte signature of ``message`` (its Signature field is ignored).

        ``message`` is not modified; the caller writes the result at offset 48, having set
        SMB2_FLAGS_SIGNED first (the flags are covered by the signature). See :meth:`sign_in_place`.
        """
        view = memoryview(message)
        if len(view) < SMB2_HEADER_SIZE:
            raise ValueError(f"an SMB2 message is at least {SMB2_HEADER_SIZE} bytes, not {len(view)}")
        return self._mac(view)

    def sign_in_place(self, message: bytearray | memoryview) -> bytes:
        """Set SMB2_FLAGS_SIGNED, compute the signature and write it into the header; return it.

        ``message`` must be writable (a ``bytearray`` or a writable ``memoryview`` slice of
        one); this is the no-copy path for outgoing messages (MS-SMB2 3.2.4.1.1, 3.3.4.1.1).
        """
        view = memoryview(message)
        if view.readonly:
            raise ValueError("sign_in_place needs a writable buffer")
        if len(view) < SMB2_HEADER_SIZE:
            raise ValueError(f"an SMB2 message is at least {SMB2_HEADER_SIZE} bytes, not {len(view)}")
        (flags,) = _FLAGS.unpack_from(view, _FLAGS_OFFSET)
        _FLAGS.pack_into(view, _FLAGS_OFFSET, flags | SMB2_FLAGS_SIGNED)
        signature = self._mac(view)
        view[SIGNATURE_OFFSET : SIGNATURE_OFFSET + SIGNATURE_SIZE] = signature
        return signature

    def verify(self, message: BytesLike) -> bool:
        """True if the Signature field of ``message`` is its signature (constant-time compare).

        A message shorter than an SMB2 header cannot carry a valid signature: False.
        """
        view = memoryview(message)
        if len(view) < SMB2_HEADER_SIZE:
            return False
        received = bytes(view[SIGNATURE_OFFSET : SIGNATURE_OFFSET + SIGNATURE_SIZE])
        return constant_time.bytes_eq(self._mac(view), received)

    def sign_parts_in_place(self, head: bytearray | memoryview, tail: BytesLike) -> bytes:
        """Sign the message ``head + tail`` without joining them; return the signature.

        ``head`` is writable and holds at least the 64-byte header (a WRITE's header and fixed
        body); ``tail`` is the rest (its data, a ``memoryview`` of the caller's buffer), which is
        neither copied nor modified. Like :meth:`sign_in_place`, this sets SMB2_FLAGS_SIGNED and
        writes the signature into ``head``.
        """
        view = memoryview(head)
        if view.readonly:
            raise ValueError("sign_parts_in_place needs a writable head")
        if len(view) < SMB2_HEADER_SIZE:
            raise ValueError(f"the head must hold the {SMB2_HEADER_SIZE}-byte header, not {len(view)} bytes")
        (flags,) = _FLAGS.unpack_from(view, _FLAGS_OFFSET)
        _FLAGS.pack_into(view, _FLAGS_OFFSET, flags | SMB2_FLAGS_SIGNED)
        signature = self._mac_pieces(view, (*_mac_input(view), tail))
        view[SIGNATURE_OFFSET : SIGNATURE_OFFSET + SIGNATURE_SIZE] = signature
        return signature


def _mac_input(message: memoryview) -> tuple[memoryview, bytes, memoryview]:
    """The three pieces a MAC runs over: header before the Signature, 16 zeros, the rest."""
    return (
        message[:SIGNATURE_OFFSET],
        _ZERO_SIGNATURE,
        message[SIGNATURE_OFFSET + SIGNATURE_SIZE :],
    )


class HmacSha256Signer(Signer):
    """HMAC-SHA256 truncated to 16 bytes (dialects 2.0.2 and 2.1, MS-SMB2 3.1.4.1)."""

    __slots__ = ()

    algorithm = SigningAlgorithm.HMAC_SHA256

    def _mac_pieces(self, header: memoryview, pieces: Iterable[BytesLike]) -> bytes:
        mac = hmac.HMAC(self._key, hashes.SHA256())
        for piece in pieces:
            mac.update(piece)
        return mac.finalize()[:SIGNATURE_SIZE]


class AesCmacSigner(Signer):
    """AES-128-CMAC (RFC 4493): the SMB 3.x signing algorithm unless GMAC is negotiated."""

    __slots__ = ()

    algorithm = SigningAlgorithm.AES_CMAC

    def _mac_pieces(self, header: memoryview, pieces: Iterable[BytesLike]) -> bytes:
        mac = cmac.CMAC(algorithms.AES(self._key))
        for piece in pieces:
            # CMAC.update's stub says bytes, but like every other update it takes any buffer.
            mac.update(piece)  # type: ignore[arg-type]
        return mac.finalize()


class AesGmacSigner(Signer):
    """AES-128-GMAC (RFC 4543), negotiated by SMB2_SIGNING_CAPABILITIES in 3.1.1 (MS-SMB2 3.1.4.1).

    GMAC is AES-GCM over no plaintext with the whole message as associated data; the tag is the
    signature. The 12-byte nonce is the MessageId (8 bytes, little-endian) followed by a 32-bit
    little-endian field whose bit 0 is 1 when the sender is the server (read from
    SMB2_FLAGS_SERVER_TO_REDIR) and bit 1 is 1 for an SMB2 CANCEL request; the other 30 bits are
    zero. All three come from the message's own header.
    """

    __slots__ = ()

    algorithm = SigningAlgorithm.AES_GMAC

    @staticmethod
    def nonce(message: BytesLike) -> bytes:
        """The 12-byte GMAC nonce for ``message``, built from its header (MS-SMB2 3.1.4.1)."""
        (command,) = _COMMAND.unpack_from(message, _COMMAND_OFFSET)
        (flags,) = _FLAGS.unpack_from(message, _FLAGS_OFFSET)
        (message_id,) = _MESSAGE_ID.unpack_from(message, _MESSAGE_ID_OFFSET)
        is_response = bool(flags & SMB2_FLAGS_SERVER_TO_REDIR)
        role_bits = (1 if is_response else 0) | (2 if command == SMB2_CANCEL and not is_response else 0)
        return struct.pack("<QI", message_id, role_bits)

    def _mac_pieces(self, header: memoryview, pieces: Iterable[BytesLike]) -> bytes:
        encryptor = Cipher(algorithms.AES(self._key), modes.GCM(self.nonce(header))).encryptor()
        for piece in pieces:
            encryptor.authenticate_additional_data(piece)
        encryptor.finalize()
        return encryptor.tag


_SIGNERS: Final[dict[SigningAlgorithm, type[Signer]]] = {
    SigningAlgorithm.HMAC_SHA256: HmacSha256Signer,
    SigningAlgorithm.AES_CMAC: AesCmacSigner,
    SigningAlgorithm.AES_GMAC: AesGmacSigner,
}


def make_signer(algorithm: SigningAlgorithm | int, key: BytesLike) -> Signer:
    """The signer for a negotiated signing algorithm id (MS-SMB2 2.2.3.1.7, 3.1.4.1).

    Dialects 2.0.2/2.1 use HMAC-SHA256 with Session.SessionKey; 3.0, 3.0.2 and 3.1.1 without
    SMB2_SIGNING_CAPABILITIES use AES-CMAC with the derived signing key. Raises
    :class:`SMBCryptoError` for an id outside the table.
    """
    try:
        signer_class = _SIGNERS[SigningAlgorithm(algorithm)]
    except ValueError:
        raise SMBCryptoError(f"unknown signing algorithm id {algorithm:#06x}") from None
    return signer_class(key)


# --- Encryption (MS-SMB2 2.2.41, 3.1.4.3, 3.1.5.1) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class TransformHeader:
    """A decoded SMB2 TRANSFORM_HEADER (MS-SMB2 2.2.41); ``nonce`` is the whole 16-byte field."""

    signature: bytes
    nonce: bytes
    original_message_size: int
    flags: int
    session_id: int


def parse_transform_header(data: BytesLike) -> TransformHeader:
    """Decode the 52-byte TRANSFORM_HEADER at the start of ``data`` (MS-SMB2 2.2.41).

    The receiver needs SessionId to find the session, hence the decryption key, before it can
    call :func:`decrypt` (MS-SMB2 3.2.5.1.1.1, 3.3.5.2.1.1). Raises :class:`SMBCryptoError` if
    ``data`` is shorter than the header or its ProtocolId is not 0xFD 'S' 'M' 'B'.
    """
    if len(data) < TRANSFORM_HEADER_SIZE:
        raise SMBCryptoError(
            f"encrypted message of {len(data)} bytes is shorter than the {TRANSFORM_HEADER_SIZE}-byte"
            " transform header"
        )
    protocol_id, signature, nonce, size, _reserved, flags, session_id = _TRANSFORM.unpack_from(data, 0)
    if protocol_id != TRANSFORM_PROTOCOL_ID:
        raise SMBCryptoError(f"transform header ProtocolId is {protocol_id.hex()}, not fd534d42")
    return TransformHeader(signature, nonce, size, flags, session_id)


def _cipher_id(cipher: CipherId | int) -> CipherId:
    try:
        return CipherId(cipher)
    except ValueError:
        raise SMBCryptoError(f"unknown cipher id {cipher:#06x}") from None


def _check_key(key: BytesLike, cipher: CipherId) -> bytes:
    key_bytes = bytes(key)
    if len(key_bytes) != cipher.key_size:
        raise ValueError(f"{cipher.name} needs a {cipher.key_size}-byte key, not {len(key_bytes)} bytes")
    return key_bytes


def _transform_parameters(
    cipher: CipherId | int, key: BytesLike, nonce: BytesLike, size: int, session_id: int
) -> tuple[CipherId, bytes, bytes]:
    """Check what :func:`encrypt` and :func:`encrypt_in_place` are given: the cipher id, key
    and nonce as bytes."""
    cipher_id = _cipher_id(cipher)
    key_bytes = _check_key(key, cipher_id)
    nonce_bytes = bytes(nonce)
    if len(nonce_bytes) != cipher_id.nonce_size:
        raise ValueError(
            f"{cipher_id.name} needs a {cipher_id.nonce_size}-byte nonce, not {len(nonce_bytes)}"
        )
    if not 0 < size <= _MAX_MESSAGE_SIZE:
        raise ValueError(f"cannot encrypt a message of {size} bytes")
    if not 0 <= session_id <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"SessionId {session_id} does not fit in 64 bits")
    return cipher_id, key_bytes, nonce_bytes


def _pack_transform_header(out: bytearray, nonce: bytes, size: int, session_id: int) -> None:
    """The TRANSFORM_HEADER at the start of ``out``, its Signature zero until the tag is known."""
    _TRANSFORM.pack_into(
        out, 0, TRANSFORM_PROTOCOL_ID, _ZERO_SIGNATURE, nonce.ljust(16, b"\x00"), size, 0,
        TRANSFORM_FLAG_ENCRYPTED, session_id,
    )  # fmt: skip


def encrypt(
    message: BytesLike | Sequence[BytesLike],
    key: BytesLike,
    cipher: CipherId | int,
    session_id: int,
    nonce: BytesLike,
) -> bytearray:
    """Encrypt one SMB2 message (or compound chain) into TRANSFORM_HEADER + ciphertext.

    MS-SMB2 3.1.4.3: the AEAD (AES-CCM or AES-GCM, 128 or 256) runs with ``key`` (the sender's
    EncryptionKey), the ``nonce`` (11 bytes for CCM, 12 for GCM, stored left-aligned and
    zero-padded in the 16-byte Nonce field), the SMB2 message as plaintext and the 32 header
    bytes from Nonce to SessionId as associated data; the 16-byte tag becomes the Signature.
    Flags is 0x0001 (the 3.0.x EncryptionAlgorithm field, AES-128-CCM = 0x0001, has the same
    value). The result is one freshly allocated ``bytearray`` the ciphertext is written into
    directly (no copy of the payload beyond the encryption itself). ``message`` may also be a
    sequence of pieces (a response header and a READ's data): GCM encrypts them in turn without
    joining them; CCM, which has no streaming form here, joins them first. A nonce MUST never
    repeat under one key: see :func:`random_nonce`. :func:`encrypt_in_place` does the same
    without a buffer for the whole message.
    """
    pieces = [message] if isinstance(message, bytes | bytearray | memoryview) else list(message)
    size = sum(memoryview(p).nbytes for p in pieces)
    cipher_id, key_bytes, nonce_bytes = _transform_parameters(cipher, key, nonce, size, session_id)

    out = bytearray(TRANSFORM_HEADER_SIZE + size + _TAG_SIZE)
    _pack_transform_header(out, nonce_bytes, size, session_id)
    with (
        memoryview(out) as view,
        view[_TF_NONCE:TRANSFORM_HEADER_SIZE] as associated_data,
        view[TRANSFORM_HEADER_SIZE:] as ciphertext_and_tag,
    ):
        if cipher_id.is_gcm and len(pieces) > 1:
            encryptor = Cipher(algorithms.AES(key_bytes), modes.GCM(nonce_bytes)).encryptor()
            encryptor.authenticate_additional_data(associated_data)
            pos = 0
            for piece in pieces:
                pos += encryptor.update_into(piece, ciphertext_and_tag[pos:])
            encryptor.finalize()
            view[_TF_SIGNATURE : _TF_SIGNATURE + _TAG_SIZE] = encryptor.tag
        else:
            plain = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            aead = AESGCM(key_bytes) if cipher_id.is_gcm else AESCCM(key_bytes)
            aead.encrypt_into(nonce_bytes, plain, associated_data, ciphertext_and_tag)
            # The AEAD appends the tag; the transform header carries it in front (Signature).
            view[_TF_SIGNATURE : _TF_SIGNATURE + _TAG_SIZE] = view[-_TAG_SIZE:]
    del out[-_TAG_SIZE:]
    return out


def encrypt_in_place(
    head: BytesLike,
    tail: bytearray | memoryview,
    key: BytesLike,
    cipher: CipherId | int,
    session_id: int,
    nonce: BytesLike,
) -> bytearray:
    """:func:`encrypt` of the message ``head + tail`` without a buffer for all of it.

    ``tail`` (writable: a READ response's data in a buffer of its own) is overwritten with its
    ciphertext; the result is the TRANSFORM_HEADER followed by the ciphertext of ``head`` (the
    SMB2 header and the fixed part of the body). The encrypted message on the wire is the
    result followed by ``tail``, byte for byte what :func:`encrypt` makes of the two: no
    allocation or copy of the data, which is worth it at 8 MiB per READ. GCM only (a
    ``ValueError`` for CCM, which this module cannot stream).
    """
    tail_view = memoryview(tail)
    if tail_view.readonly:
        raise ValueError("encrypt_in_place needs a writable tail")
    size = memoryview(head).nbytes + tail_view.nbytes
    cipher_id, key_bytes, nonce_bytes = _transform_parameters(cipher, key, nonce, size, session_id)
    if not cipher_id.is_gcm:
        raise ValueError(f"{cipher_id.name} cannot encrypt in place; use encrypt()")
    out = bytearray(TRANSFORM_HEADER_SIZE + memoryview(head).nbytes)
    _pack_transform_header(out, nonce_bytes, size, session_id)
    encryptor = Cipher(algorithms.AES(key_bytes), modes.GCM(nonce_bytes)).encryptor()
    with memoryview(out) as view, tail_view.cast("B") as tail_bytes:
        encryptor.authenticate_additional_data(view[_TF_NONCE:TRANSFORM_HEADER_SIZE])
        encryptor.update_into(head, view[TRANSFORM_HEADER_SIZE:])
        encryptor.update_into(tail_bytes, tail_bytes)
        encryptor.finalize()
        view[_TF_SIGNATURE : _TF_SIGNATURE + _TAG_SIZE] = encryptor.tag
    return out


def _open_transform(
    view: memoryview, key: BytesLike, cipher: CipherId | int
) -> tuple[CipherId, bytes, TransformHeader, memoryview]:
    """Check a received TRANSFORM_HEADER + ciphertext (see :func:`decrypt`): the cipher id,
    the key as bytes, the header and the ciphertext."""
    cipher_id = _cipher_id(cipher)
    key_bytes = _check_key(key, cipher_id)
    header = parse_transform_header(view)
    if header.flags != TRANSFORM_FLAG_ENCRYPTED:
        raise SMBCryptoError(f"transform header Flags is {header.flags:#06x}, not 0x0001")
    ciphertext = view[TRANSFORM_HEADER_SIZE:]
    if header.original_message_size != len(ciphertext) or not ciphertext:
        raise SMBCryptoError(
            f"transform header OriginalMessageSize is {header.original_message_size}"
            f" but {len(ciphertext)} bytes follow the header"
        )
    return cipher_id, key_bytes, header, ciphertext


def decrypt(transform_message: BytesLike, key: BytesLike, cipher: CipherId | int) -> bytes:
    """Verify and decrypt TRANSFORM_HEADER + ciphertext; return the SMB2 message.

    MS-SMB2 3.1.5.1 / 3.2.5.1.1.1 / 3.3.5.2.1.1: ``key`` is the receiver's DecryptionKey for the
    header's SessionId (see :func:`parse_transform_header`). Raises :class:`SMBCryptoError`, and
    nothing else, whatever the bytes: shorter than the header, wrong ProtocolId, Flags not
    0x0001, OriginalMessageSize not the length of what follows the header (an empty or
    truncated message, or trailing bytes), a tag that does not verify, or an unknown ``cipher``.
    GCM decrypts straight from the input buffer; CCM, whose API wants the tag behind the
    ciphertext, costs one copy of the ciphertext. :func:`decrypt_in_place` needs no buffer
    for the result.
    """
    view = memoryview(transform_message)
    cipher_id, key_bytes, header, ciphertext = _open_transform(view, key, cipher)
    nonce = header.nonce[: cipher_id.nonce_size]
    associated_data = view[_TF_NONCE:TRANSFORM_HEADER_SIZE]
    try:
        if cipher_id.is_gcm:
            decryptor = Cipher(algorithms.AES(key_bytes), modes.GCM(nonce, header.signature)).decryptor()
            decryptor.authenticate_additional_data(associated_data)
            plaintext = decryptor.update(ciphertext)
            decryptor.finalize()
            return plaintext
        return AESCCM(key_bytes).decrypt(nonce, b"".join((ciphertext, header.signature)), associated_data)
    except InvalidTag:
        raise SMBCryptoError(
            f"encrypted message for session {header.session_id:#x} failed authentication"
        ) from None


def decrypt_in_place(
    transform_message: bytearray | memoryview, key: BytesLike, cipher: CipherId | int
) -> memoryview:
    """:func:`decrypt` into the message's own buffer: the SMB2 message, a ``memoryview`` of
    ``transform_message`` (writable) from the end of the TRANSFORM_HEADER, where the
    ciphertext was. Same checks and errors as :func:`decrypt`. When the tag does not verify,
    the bytes after the header are zeroed before :class:`SMBCryptoError` is raised, so the
    buffer never holds unauthenticated plaintext (GCM decrypts before it can check the tag);
    when a check before decryption fails, the buffer is left as it was.
    With GCM nothing is allocated (an 8 MiB WRITE costs no fresh 8 MiB); CCM decrypts into a
    new buffer and copies the result back.
    """
    view = memoryview(transform_message)
    if view.readonly:
        raise ValueError("decrypt_in_place needs a writable buffer")
    view = view.cast("B")
    cipher_id, key_bytes, header, ciphertext = _open_transform(view, key, cipher)
    nonce = header.nonce[: cipher_id.nonce_size]
    associated_data = view[_TF_NONCE:TRANSFORM_HEADER_SIZE]
    try:
        if cipher_id.is_gcm:
            decryptor = Cipher(algorithms.AES(key_bytes), modes.GCM(nonce, header.signature)).decryptor()
            decryptor.authenticate_additional_data(associated_data)
            decryptor.update_into(ciphertext, ciphertext)
            decryptor.finalize()
        else:
            sealed = b"".join((ciphertext, header.signature))
            ciphertext[:] = AESCCM(key_bytes).decrypt(nonce, sealed, associated_data)
    except InvalidTag:
        ciphertext[:] = bytes(len(ciphertext))
        raise SMBCryptoError(
            f"encrypted message for session {header.session_id:#x} failed authentication"
        ) from None
    return ciphertext


class KeyedSession(Protocol):
    """What :func:`decrypt_received` needs of a session: its keys (None until it has them)."""

    @property
    def keys(self) -> SessionKeys | None: ...


_Session = TypeVar("_Session", bound=KeyedSession)


def decrypt_received(
    transform_message: memoryview,
    cipher: CipherId | None,
    find_session: Callable[[int], _Session | None],
    *,
    server: bool,
) -> tuple[memoryview, _Session]:
    """Open one received encrypted PDU: the SMB2 message in it and the session it is for.

    MS-SMB2 3.3.5.2.1.1 (``server=True``) and 3.2.5.1.1.1: the TRANSFORM_HEADER's SessionId
    names the session (``find_session``, the connection's ``sessions.get``), whose
    DecryptionKey opens the message (:meth:`SessionKeys.decryption_key` of this side). A
    writable ``transform_message`` is decrypted where it lies (:func:`decrypt_in_place`): the
    result is a view of the caller's buffer, which is overwritten, so an 8 MiB WRITE costs no
    new 8 MiB; a read-only one is decrypted into a new buffer (:func:`decrypt`).

    Raises :class:`~smbcore.errors.RemoteProtocolError` with ACCESS_DENIED when the
    connection has no cipher, the transform is malformed or the tag does not verify (a
    writable buffer is then left with no decrypted byte); for a session that is unknown or
    has no keys yet, USER_SESSION_DELETED on the server and ACCESS_DENIED on the client. The
    client also refuses a decrypted message that is not SMB2 (INVALID_NETWORK_RESPONSE).
    """
    if cipher is None:
        raise RemoteProtocolError(
            "encrypted message on a connection without a cipher", NTStatus.ACCESS_DENIED
        )
    try:
        transform = parse_transform_header(transform_message)
        session = find_session(transform.session_id)
        if session is None or session.keys is None:
            raise RemoteProtocolError(
                f"encrypted message for unknown session {transform.session_id:#x}",
                NTStatus.USER_SESSION_DELETED if server else NTStatus.ACCESS_DENIED,
            )
        key = session.keys.decryption_key(server=server)
        if transform_message.readonly:
            plain = memoryview(decrypt(transform_message, key, cipher))
        else:
            plain = decrypt_in_place(transform_message, key, cipher)
    except SMBCryptoError as exc:
        raise RemoteProtocolError(str(exc), NTStatus.ACCESS_DENIED) from None
    if not server and bytes(plain[:4]) != PROTOCOL_ID:
        raise RemoteProtocolError(
            "decrypted message is not an SMB2 message", NTStatus.INVALID_NETWORK_RESPONSE
        )
    return plain, session


def random_nonce(cipher: CipherId | int, randbytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh random AES-CCM (11-byte) or AES-GCM (12-byte) nonce for :func:`encrypt`.

    MS-SMB2 2.2.41 only requires that a nonce is never reused within a session (all its
    channels share the cipher keys). Random nonces need no state shared between channels; their
    collision probability stays negligible for far more messages than a session sends (about
    2**-33 after 2**32 GCM messages or 2**28 CCM ones). The alternative is a counter: a 64-bit
    value incremented for every message, little-endian in the first 8 bytes, the rest zero (the
    Windows server's nonces in Microsoft's test vectors have this form); it must then be shared
    by every channel of the session (or be global) and must never wrap.
    ``randbytes`` is injectable for deterministic tests.
    """
    size = _cipher_id(cipher).nonce_size
    nonce = randbytes(size)
    if len(nonce) != size:
        raise ValueError(f"randbytes returned {len(nonce)} bytes, not {size}")
    return nonce
