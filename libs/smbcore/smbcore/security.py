"""Security descriptors ([MS-DTYP] 2.4) in self-relative form, and their mapping to POSIX
owners and mode bits: pure encoders and decoders, no I/O.

QUERY_INFO and SET_INFO with InfoType SMB2_0_INFO_SECURITY carry a SECURITY_DESCRIPTOR in
self-relative form ([MS-DTYP] 2.4.6): a 20-byte header, then the owner and group SIDs
(2.4.2.2) and the SACL and DACL (2.4.5, each a list of ACEs, 2.4.4), found by offsets from
the start of the descriptor. :class:`SecurityDescriptor` encodes and decodes it; every
offset and length is checked before it is followed, and a malformed descriptor is a
:class:`~smbcore.errors.RemoteProtocolError` carrying STATUS_INVALID_SECURITY_DESCR, what
Windows answers for a descriptor it cannot parse (it concerns that request only).

A POSIX file has no descriptor of its own; :func:`posix_descriptor` synthesizes one:

* Owner and group are Unix-mapped SIDs, the scheme Samba uses for accounts with no Windows
  identity: ``S-1-22-1-<uid>`` for the owning user and ``S-1-22-2-<gid>`` for the group
  (:func:`unix_user_sid`, :func:`unix_group_sid`). They name the real POSIX identities, so
  two files of one owner show one owner, and they are stable across restarts.
* The DACL has three ACCESS_ALLOWED ACEs, always in this order: the owner with what the
  ``u`` bits allow, the group with the ``g`` bits, Everyone (``S-1-1-0``) with the ``o``
  bits. ``r`` is FILE_GENERIC_READ, ``w`` FILE_GENERIC_WRITE (and FILE_DELETE_CHILD on a
  directory), ``x`` FILE_GENERIC_EXECUTE; the owner also holds READ_CONTROL, WRITE_DAC and
  the attribute rights, since POSIX lets an owner read and change a file's mode. No ACE is
  inheritable: what new files get is decided by the creating process's umask.
* There is no SACL: querying one needs ACCESS_SYSTEM_SECURITY, which
  :func:`smbcore.fs.grant_access` never grants (STATUS_PRIVILEGE_NOT_HELD at CREATE).

:func:`mode_from_dacl` goes the other way, for SET_INFO: the rights a DACL gives the owner's
SID, the group's SID and Everyone (Everyone and Authenticated Users count for all three
classes, as in a Windows access check; ACCESS_DENIED ACEs take away what later ACEs would
give, as canonical order implies) become the nine permission bits. ACEs for other SIDs
cannot be expressed in a mode and are not enforced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import RemoteProtocolError
from .wire import Buffer

# -- SECURITY_INFORMATION ([MS-DTYP] 2.4.7) --------------------------------------------------


class SecurityInformation(IntFlag):
    """AdditionalInformation of QUERY_INFO/SET_INFO for SMB2_0_INFO_SECURITY."""

    OWNER = 0x00000001
    GROUP = 0x00000002
    DACL = 0x00000004
    SACL = 0x00000008
    LABEL = 0x00000010
    ATTRIBUTE = 0x00000020
    SCOPE = 0x00000040
    BACKUP = 0x00010000


class ControlFlags(IntFlag):
    """SECURITY_DESCRIPTOR Control ([MS-DTYP] 2.4.6)."""

    OWNER_DEFAULTED = 0x0001
    GROUP_DEFAULTED = 0x0002
    DACL_PRESENT = 0x0004
    DACL_DEFAULTED = 0x0008
    SACL_PRESENT = 0x0010
    SACL_DEFAULTED = 0x0020
    DACL_TRUSTED = 0x0040
    SERVER_SECURITY = 0x0080
    DACL_AUTO_INHERIT_REQ = 0x0100
    SACL_AUTO_INHERIT_REQ = 0x0200
    DACL_AUTO_INHERITED = 0x0400
    SACL_AUTO_INHERITED = 0x0800
    DACL_PROTECTED = 0x1000
    SACL_PROTECTED = 0x2000
    RM_CONTROL_VALID = 0x4000
    SELF_RELATIVE = 0x8000


class AceType(IntEnum):
    """ACE_HEADER AceType ([MS-DTYP] 2.4.4.1), the ones with a mask-then-SID body."""

    ACCESS_ALLOWED = 0x00
    ACCESS_DENIED = 0x01
    SYSTEM_AUDIT = 0x02
    SYSTEM_ALARM = 0x03
    SYSTEM_MANDATORY_LABEL = 0x11


#: ACE types whose body is Mask (4 bytes) then a SID; the rest are kept as opaque bytes.
_MASK_SID_TYPES = frozenset(int(t) for t in AceType)


class AceFlags(IntFlag):
    """ACE_HEADER AceFlags ([MS-DTYP] 2.4.4.1)."""

    OBJECT_INHERIT = 0x01
    CONTAINER_INHERIT = 0x02
    NO_PROPAGATE_INHERIT = 0x04
    INHERIT_ONLY = 0x08
    INHERITED = 0x10
    SUCCESSFUL_ACCESS = 0x40
    FAILED_ACCESS = 0x80


#: [MS-ERREF] 2.3.1 (not in :class:`~smbcore.ntstatus.NTStatus`).
STATUS_INVALID_SECURITY_DESCR = 0xC0000079


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"security descriptor: {what}", STATUS_INVALID_SECURITY_DESCR)


# -- SID ([MS-DTYP] 2.4.2.2) -----------------------------------------------------------------

#: At most 15 sub-authorities ([MS-DTYP] 2.4.2.2 SubAuthorityCount).
MAX_SUB_AUTHORITIES = 15


@dataclass(frozen=True, slots=True)
class Sid:
    """A SID: Revision 1, a 48-bit IdentifierAuthority (big-endian on the wire) and up to 15
    32-bit SubAuthority values (little-endian)."""

    authority: int
    sub_authorities: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.authority < 1 << 48:
            raise ValueError(f"SID authority {self.authority}")
        if len(self.sub_authorities) > MAX_SUB_AUTHORITIES:
            raise ValueError(f"{len(self.sub_authorities)} sub-authorities")
        if any(not 0 <= s <= 0xFFFFFFFF for s in self.sub_authorities):
            raise ValueError(f"sub-authority out of range in {self.sub_authorities}")

    @property
    def size(self) -> int:
        return 8 + 4 * len(self.sub_authorities)

    def encode(self) -> bytes:
        subs = self.sub_authorities
        return (
            bytes([1, len(subs)]) + self.authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
        )

    @classmethod
    def decode(cls, buf: Buffer, offset: int = 0) -> Sid:
        """The SID at ``offset`` (bounds checked; Revision must be 1)."""
        if offset < 0 or offset + 8 > len(buf):
            raise _bad(f"SID at {offset} past the end ({len(buf)} bytes)")
        revision, count = buf[offset], buf[offset + 1]
        if revision != 1 or count > MAX_SUB_AUTHORITIES:
            raise _bad(f"SID revision {revision} with {count} sub-authorities")
        end = offset + 8 + 4 * count
        if end > len(buf):
            raise _bad(f"SID at {offset} of {8 + 4 * count} bytes past the end ({len(buf)} bytes)")
        authority = int.from_bytes(bytes(buf[offset + 2 : offset + 8]), "big")
        subs = struct.unpack_from(f"<{count}I", buf, offset + 8)
        return cls(authority, tuple(subs))

    def __str__(self) -> str:
        auth = str(self.authority) if self.authority < 1 << 32 else f"0x{self.authority:012X}"
        return "-".join(["S-1", auth, *(str(s) for s in self.sub_authorities)])

    @classmethod
    def parse(cls, text: str) -> Sid:
        """``S-1-5-32-544`` form ([MS-DTYP] 2.4.2.1), decimal or 0x-hex authority."""
        parts = text.split("-")
        if len(parts) < 3 or parts[0].upper() != "S" or parts[1] != "1":
            raise ValueError(f"not a SID: {text!r}")
        auth = int(parts[2], 16) if parts[2].lower().startswith("0x") else int(parts[2])
        return cls(auth, tuple(int(p) for p in parts[3:]))


EVERYONE = Sid(1, (0,))  # S-1-1-0
AUTHENTICATED_USERS = Sid(5, (11,))  # S-1-5-11
CREATOR_OWNER = Sid(3, (0,))  # S-1-3-0
CREATOR_GROUP = Sid(3, (1,))  # S-1-3-1
UNIX_USERS_AUTHORITY = 22


def unix_user_sid(uid: int) -> Sid:
    """``S-1-22-1-<uid>``: a POSIX user with no Windows identity (the mapping Samba uses)."""
    return Sid(UNIX_USERS_AUTHORITY, (1, uid & 0xFFFFFFFF))


def unix_group_sid(gid: int) -> Sid:
    """``S-1-22-2-<gid>``: a POSIX group."""
    return Sid(UNIX_USERS_AUTHORITY, (2, gid & 0xFFFFFFFF))


def unix_id(sid: Sid) -> tuple[str, int] | None:
    """("user", uid) or ("group", gid) for a Unix-mapped SID, else None."""
    if sid.authority == UNIX_USERS_AUTHORITY and len(sid.sub_authorities) == 2:
        kind, ident = sid.sub_authorities
        if kind == 1:
            return "user", ident
        if kind == 2:
            return "group", ident
    return None


# -- ACE and ACL ([MS-DTYP] 2.4.4, 2.4.5) ----------------------------------------------------

_ACE_HEAD = struct.Struct("<BBH")
_ACL_HEAD = struct.Struct("<BBHHH")
ACL_REVISION = 2
ACL_REVISION_DS = 4
#: An ACL's AclSize is 16 bits; so is an ACE's AceSize.
MAX_ACL_SIZE = 0xFFFF


@dataclass(frozen=True, slots=True)
class Ace:
    """One ACE. For the mask-then-SID types (:class:`AceType`) ``mask`` and ``sid`` hold the
    body (and ``extra`` any bytes after the SID, such as application data); for other types
    (object and callback ACEs) ``sid`` is None and ``extra`` is the whole body, kept as is."""

    ace_type: int
    flags: int
    mask: int = 0
    sid: Sid | None = None
    extra: bytes = b""

    def encode(self) -> bytes:
        if self.sid is not None:
            body = struct.pack("<I", self.mask) + self.sid.encode() + self.extra
        else:
            body = self.extra
        size = 4 + len(body)
        pad = -size % 4
        if size + pad > MAX_ACL_SIZE:
            raise ValueError(f"ACE of {size} bytes")
        return _ACE_HEAD.pack(self.ace_type, self.flags, size + pad) + body + bytes(pad)

    @classmethod
    def decode(cls, buf: Buffer, offset: int, end: int) -> tuple[Ace, int]:
        """The ACE at ``offset`` (not past ``end``), and its AceSize."""
        if offset + 4 > end:
            raise _bad(f"ACE header at {offset} past its ACL")
        ace_type, flags, size = _ACE_HEAD.unpack_from(buf, offset)
        if size < 4 or size % 4 or offset + size > end:
            raise _bad(f"AceSize {size} at {offset}")
        body = memoryview(buf)[offset + 4 : offset + size]
        if ace_type in _MASK_SID_TYPES:
            if len(body) < 4 + 8:
                raise _bad(f"ACE of type {ace_type} has {len(body)} body bytes")
            (mask,) = struct.unpack_from("<I", body, 0)
            sid = Sid.decode(body, 4)
            return cls(ace_type, flags, mask, sid, bytes(body[4 + sid.size :])), size
        return cls(ace_type, flags, 0, None, bytes(body)), size


@dataclass(frozen=True, slots=True)
class Acl:
    """An ACL: AclRevision 2 (4 when object ACEs are present) and its ACEs in order."""

    aces: tuple[Ace, ...] = ()
    revision: int = ACL_REVISION

    def encode(self) -> bytes:
        body = b"".join(ace.encode() for ace in self.aces)
        size = _ACL_HEAD.size + len(body)
        if size > MAX_ACL_SIZE:
            raise ValueError(f"ACL of {size} bytes")
        return _ACL_HEAD.pack(self.revision, 0, size, len(self.aces), 0) + body

    @classmethod
    def decode(cls, buf: Buffer, offset: int) -> Acl:
        if offset < 0 or offset + _ACL_HEAD.size > len(buf):
            raise _bad(f"ACL at {offset} past the end ({len(buf)} bytes)")
        revision, _, size, count, _ = _ACL_HEAD.unpack_from(buf, offset)
        if revision not in (ACL_REVISION, ACL_REVISION_DS):
            raise _bad(f"AclRevision {revision}")
        end = offset + size
        if size < _ACL_HEAD.size or end > len(buf):
            raise _bad(f"AclSize {size} at {offset}")
        if count > (size - _ACL_HEAD.size) // 4:  # an ACE takes at least 4 bytes
            raise _bad(f"AceCount {count} in {size} bytes")
        aces: list[Ace] = []
        pos = offset + _ACL_HEAD.size
        for _ in range(count):
            ace, ace_size = Ace.decode(buf, pos, end)
            aces.append(ace)
            pos += ace_size
        return cls(tuple(aces), revision)


# -- SECURITY_DESCRIPTOR, self-relative ([MS-DTYP] 2.4.6) ------------------------------------

_SD_HEAD = struct.Struct("<BBHIIII")
SD_HEADER_SIZE = _SD_HEAD.size  # 20


@dataclass(frozen=True, slots=True)
class SecurityDescriptor:
    """A security descriptor; ``control`` without SELF_RELATIVE, DACL_PRESENT and
    SACL_PRESENT, which :meth:`encode` sets from the parts (a DACL_PRESENT with no DACL, the
    "NULL DACL" that grants everyone everything, is ``null_dacl``)."""

    owner: Sid | None = None
    group: Sid | None = None
    dacl: Acl | None = None
    sacl: Acl | None = None
    control: int = 0
    null_dacl: bool = False

    def encode(self) -> bytes:
        """Self-relative form: the header, then owner, group, SACL and DACL in that order
        (the order Windows writes), each at the offset the header gives (0: absent)."""
        control = (self.control | ControlFlags.SELF_RELATIVE) & ~(
            ControlFlags.DACL_PRESENT | ControlFlags.SACL_PRESENT
        )
        if self.dacl is not None or self.null_dacl:
            control |= ControlFlags.DACL_PRESENT
        if self.sacl is not None:
            control |= ControlFlags.SACL_PRESENT
        out = bytearray(SD_HEADER_SIZE)
        offsets = []
        for part in (self.owner, self.group, self.sacl, self.dacl):
            if part is None:
                offsets.append(0)
                continue
            offsets.append(len(out))
            out += part.encode()
        owner, group, sacl, dacl = offsets
        _SD_HEAD.pack_into(out, 0, 1, 0, int(control), owner, group, sacl, dacl)
        return bytes(out)

    @classmethod
    def decode(cls, buf: Buffer) -> SecurityDescriptor:
        """A self-relative descriptor (Revision 1, SELF_RELATIVE set)."""
        if len(buf) < SD_HEADER_SIZE:
            raise _bad(f"{len(buf)} bytes, the header alone is {SD_HEADER_SIZE}")
        revision, _, control, owner_at, group_at, sacl_at, dacl_at = _SD_HEAD.unpack_from(buf, 0)
        if revision != 1:
            raise _bad(f"Revision {revision}")
        if not control & ControlFlags.SELF_RELATIVE:
            raise _bad("not self-relative")
        for name, at in (("owner", owner_at), ("group", group_at), ("SACL", sacl_at), ("DACL", dacl_at)):
            if at and at < SD_HEADER_SIZE:
                raise _bad(f"{name} offset {at} inside the header")
        owner = Sid.decode(buf, owner_at) if owner_at else None
        group = Sid.decode(buf, group_at) if group_at else None
        sacl = Acl.decode(buf, sacl_at) if control & ControlFlags.SACL_PRESENT and sacl_at else None
        dacl = Acl.decode(buf, dacl_at) if control & ControlFlags.DACL_PRESENT and dacl_at else None
        null_dacl = bool(control & ControlFlags.DACL_PRESENT) and not dacl_at
        kept = control & ~(ControlFlags.SELF_RELATIVE | ControlFlags.DACL_PRESENT | ControlFlags.SACL_PRESENT)
        return cls(owner, group, dacl, sacl, kept, null_dacl)

    def select(self, info: int) -> SecurityDescriptor:
        """Only the parts AdditionalInformation asks for ([MS-FSA] 2.1.5.13)."""
        want = SecurityInformation(info & 0xF)
        control = self.control
        if not want & SecurityInformation.DACL:
            control &= ~(ControlFlags.DACL_AUTO_INHERITED | ControlFlags.DACL_PROTECTED)
        return SecurityDescriptor(
            self.owner if want & SecurityInformation.OWNER else None,
            self.group if want & SecurityInformation.GROUP else None,
            self.dacl if want & SecurityInformation.DACL else None,
            self.sacl if want & SecurityInformation.SACL else None,
            control,
            self.null_dacl and bool(want & SecurityInformation.DACL),
        )


# -- POSIX mapping ---------------------------------------------------------------------------

FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_GENERIC_EXECUTE = 0x001200A0
FILE_DELETE_CHILD = 0x00000040
FILE_READ_DATA = 0x00000001
FILE_WRITE_DATA = 0x00000002
FILE_EXECUTE = 0x00000020
GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
GENERIC_EXECUTE = 0x20000000
GENERIC_ALL = 0x10000000
READ_CONTROL = 0x00020000
WRITE_DAC = 0x00040000
FILE_READ_ATTRIBUTES = 0x00000080
FILE_WRITE_ATTRIBUTES = 0x00000100
SYNCHRONIZE = 0x00100000
#: What a POSIX owner may do whatever the mode says: read and change the mode and attributes.
_OWNER_EXTRA = READ_CONTROL | WRITE_DAC | FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | SYNCHRONIZE


def rights_from_bits(rwx: int, is_directory: bool) -> int:
    """The access mask one class of permission bits (``rwx`` in 0..7) stands for."""
    mask = 0
    if rwx & 4:
        mask |= FILE_GENERIC_READ
    if rwx & 2:
        mask |= FILE_GENERIC_WRITE | (FILE_DELETE_CHILD if is_directory else 0)
    if rwx & 1:
        mask |= FILE_GENERIC_EXECUTE
    return mask


def bits_from_rights(mask: int) -> int:
    """The ``rwx`` bits an access mask implies (generic rights included): ``r`` for
    FILE_READ_DATA, ``w`` for FILE_WRITE_DATA, ``x`` for FILE_EXECUTE."""
    bits = 0
    if mask & (FILE_READ_DATA | GENERIC_READ | GENERIC_ALL):
        bits |= 4
    if mask & (FILE_WRITE_DATA | GENERIC_WRITE | GENERIC_ALL):
        bits |= 2
    if mask & (FILE_EXECUTE | GENERIC_EXECUTE | GENERIC_ALL):
        bits |= 1
    return bits


def posix_descriptor(uid: int, gid: int, mode: int, is_directory: bool) -> SecurityDescriptor:
    """The descriptor a POSIX file shows (see the module docstring)."""
    allow = AceType.ACCESS_ALLOWED
    aces = (
        Ace(allow, 0, rights_from_bits(mode >> 6 & 7, is_directory) | _OWNER_EXTRA, unix_user_sid(uid)),
        Ace(allow, 0, rights_from_bits(mode >> 3 & 7, is_directory), unix_group_sid(gid)),
        Ace(allow, 0, rights_from_bits(mode & 7, is_directory), EVERYONE),
    )
    return SecurityDescriptor(unix_user_sid(uid), unix_group_sid(gid), Acl(aces))


def mode_from_dacl(dacl: Acl | None, owner: Sid, group: Sid) -> int:
    """The nine permission bits a DACL gives ``owner``, ``group`` and everyone else (see the
    module docstring); a NULL DACL (None) allows everything. Inherit-only ACEs do not apply
    to the object itself and are skipped."""
    if dacl is None:
        return 0o777
    granted = [0, 0, 0]  # owner, group, other
    denied = [0, 0, 0]
    for ace in dacl.aces:
        if ace.sid is None or ace.flags & AceFlags.INHERIT_ONLY:
            continue
        if ace.ace_type not in (AceType.ACCESS_ALLOWED, AceType.ACCESS_DENIED):
            continue
        classes: tuple[int, ...]
        if ace.sid in (EVERYONE, AUTHENTICATED_USERS):
            classes = (0, 1, 2)
        elif ace.sid == owner:
            classes = (0,)
        elif ace.sid == group:
            classes = (1,)
        else:
            continue
        bits = bits_from_rights(ace.mask)
        for c in classes:
            if ace.ace_type == AceType.ACCESS_ALLOWED:
                granted[c] |= bits & ~denied[c]
            else:
                denied[c] |= bits & ~granted[c]
    return granted[0] << 6 | granted[1] << 3 | granted[2]
