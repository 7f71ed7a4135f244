"""The Server Service interface ([MS-SRVS]) as far as share browsing needs it, sans-IO.

``smbclient -L``, file managers (through libsmbclient) and Windows's ``net view`` open the
``srvsvc`` pipe on IPC$, bind to this interface (4b324fc8-1670-01d3-1278-5a47bf6ee188 v3.0)
and call:

* NetrShareEnum (opnum 15) and NetrShareEnumSticky (opnum 36), levels 0, 1 and 501;
* NetrShareGetInfo (opnum 16), levels 0, 1, 501 and 1005;
* NetrServerGetInfo (opnum 21), levels 100 and 101.

Levels 2 and 502 carry the server's local folder of each share: they are refused with
ERROR_ACCESS_DENIED, as Windows refuses them to users who are not administrators. Other levels
are ERROR_INVALID_LEVEL; other opnums a fault with nca_op_rng_error.

Each call's request and response is a frozen dataclass with its NDR ``encode``/``decode``
pair side by side (the response decoders serve clients and tests). The share list is read at
every call, so shares added or removed at run time show at once; hidden shares (Ferry's
temporary migration shares) are never listed nor found.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .dcerpc import FIRST_REFERENT, Deferred, FaultStatus, NdrError, NdrReader, NdrWriter, RpcFault, SyntaxId
from .messages import ShareType
from .server import Share

SRVSVC = SyntaxId(uuid.UUID("4b324fc8-1670-01d3-1278-5a47bf6ee188"), 3, 0)
PIPE_NAME = "srvsvc"


class Opnum(IntEnum):
    NETR_SHARE_ENUM = 15
    NETR_SHARE_GET_INFO = 16
    NETR_SERVER_GET_INFO = 21
    NETR_SHARE_ENUM_STICKY = 36


class WinError(IntEnum):
    """NET_API_STATUS values used here ([MS-ERREF] 2.2, [MS-SRVS] 2.2.2.x)."""

    SUCCESS = 0
    ACCESS_DENIED = 5
    INVALID_PARAMETER = 87
    INVALID_LEVEL = 124
    MORE_DATA = 234
    NET_NAME_NOT_FOUND = 2310  # NERR_NetNameNotFound


class ShareTypeCode(IntFlag):
    """[MS-SRVS] 2.2.2.4 share types (shi*_type)."""

    DISKTREE = 0x00000000
    PRINTQ = 0x00000001
    DEVICE = 0x00000002
    IPC = 0x00000003
    TEMPORARY = 0x40000000
    SPECIAL = 0x80000000


class ServerType(IntFlag):
    """[MS-SRVS] 2.2.2.7 sv*_type bits."""

    WORKSTATION = 0x00000001
    SERVER = 0x00000002
    NT = 0x00001000
    SERVER_NT = 0x00008000


#: MAX_PREFERRED_LENGTH ([MS-SRVS] 2.2.2.2): return every entry.
MAX_PREFERRED_LENGTH = 0xFFFFFFFF
PLATFORM_ID_NT = 500
IPC_REMARK = "IPC service (Ferry share list)"
#: Levels whose arm of SHARE_ENUM_UNION / SHARE_INFO is a pointer ([MS-SRVS] 2.2.3.6, 2.2.4.38).
_ENUM_LEVELS = frozenset({0, 1, 2, 501, 502, 503})
_INFO_LEVELS = frozenset({0, 1, 2, 501, 502, 503, 1004, 1005, 1006, 1501})
_SERVER_LEVELS = frozenset({100, 101, 102, 103, 502, 503, 599})
_SERVED_ENUM_LEVELS = frozenset({0, 1, 501})
_SERVED_INFO_LEVELS = frozenset({0, 1, 501, 1005})
_ADMIN_LEVELS = frozenset({2, 502})
#: What one entry costs against PreferedMaximumLength: the in-memory size of SHARE_INFO_x on a
#: 64-bit Windows (the strings come on top), so that clients get the counts they expect.
_ENTRY_SIZE = {0: 8, 1: 24, 501: 32}


@dataclass(frozen=True, slots=True)
class ShareInfo:
    """What the share levels served here carry: SHARE_INFO_0 (name), _1 (name, type, remark),
    _501 (and flags) and _1005 (flags) ([MS-SRVS] 2.2.4.22-2.2.4.30)."""

    name: str
    type: int = ShareTypeCode.DISKTREE
    remark: str = ""
    flags: int = 0


def share_info(share: Share) -> ShareInfo:
    """A Ferry share as srvsvc describes it. A name ending in ``$`` marks a special share (IPC$,
    or an administrative one), as Samba marks them; clients hide those by name themselves."""
    if share.share_type == ShareType.PIPE:
        code, remark = ShareTypeCode.IPC, IPC_REMARK
    elif share.share_type == ShareType.PRINT:
        code, remark = ShareTypeCode.PRINTQ, ""
    else:
        code, remark = ShareTypeCode.DISKTREE, ""
    if share.name.endswith("$"):
        code |= ShareTypeCode.SPECIAL
    return ShareInfo(share.name, int(code), remark)


def _entry_cost(level: int, info: ShareInfo) -> int:
    strings = 2 * (len(info.name) + 1) + (2 * (len(info.remark) + 1) if level else 0)
    return _ENTRY_SIZE[level] + strings


# -- NDR of the share structures ------------------------------------------------------------------


def _write_share_fixed(w: NdrWriter, level: int, info: ShareInfo) -> None:
    """The scalar part of one SHARE_INFO_0/1/501 (strings deferred)."""
    w.pointer(lambda: w.string(info.name))
    if level == 0:
        return
    w.u32(info.type)
    w.pointer(lambda: w.string(info.remark))
    if level == 501:
        w.u32(info.flags)


def _read_share_fixed(r: NdrReader, level: int) -> Callable[[], ShareInfo]:
    """Reads the scalar part of one SHARE_INFO_0/1/501; the result is complete after the
    referents were read."""
    name: Deferred[str] = r.unique(r.string)
    if level == 0:
        return lambda: ShareInfo(name.value or "")
    share_type = r.u32()
    remark: Deferred[str] = r.unique(r.string)
    flags = r.u32() if level == 501 else 0
    return lambda: ShareInfo(name.value or "", share_type, remark.value or "", flags)


def _write_container(w: NdrWriter, level: int, entries: Sequence[ShareInfo]) -> None:
    """SHARE_INFO_x_CONTAINER: EntriesRead and a pointer to the conformant array."""
    w.u32(len(entries))

    def array() -> None:
        w.u32(len(entries))
        for info in entries:
            _write_share_fixed(w, level, info)

    w.pointer(array if entries else None)


def _read_container(r: NdrReader, level: int) -> list[ShareInfo]:
    count = r.u32()
    result: list[ShareInfo] = []

    def array() -> None:
        size = r.conformance({0: 4, 1: 12, 501: 16}.get(level, 4), "share array")
        if size != count:
            raise NdrError(f"share array of {size} entries, EntriesRead {count}")
        if level not in _SERVED_ENUM_LEVELS:
            raise NdrError(f"share entries of level {level} in a request")
        makers = [_read_share_fixed(r, level) for _ in range(size)]
        r.deferred()
        result.extend(make() for make in makers)

    buffer = r.unique(array)
    r.deferred()
    if not buffer.present and count:
        raise NdrError(f"EntriesRead {count} with a NULL buffer")
    return result


def _write_server_name(w: NdrWriter, name: str | None) -> None:
    w.pointer(None if name is None else lambda: w.string(name))
    w.deferred()


def _read_server_name(r: NdrReader) -> str | None:
    slot: Deferred[str] = r.unique(r.string)
    r.deferred()
    return slot.value


def _end(r: NdrReader) -> None:
    """Trailing bytes after the last parameter are tolerated (Windows and Samba ignore them:
    alignment padding, or a verification trailer)."""


# -- NetrShareEnum (opnum 15) and NetrShareEnumSticky (opnum 36) ----------------------------------


@dataclass(frozen=True, slots=True)
class ShareEnumRequest:
    """[MS-SRVS] 3.1.4.8: ServerName, InfoStruct (Level and an input container), PreferedMaximumLength,
    ResumeHandle."""

    level: int
    server_name: str | None = None
    preferred_maximum_length: int = MAX_PREFERRED_LENGTH
    resume_handle: int | None = 0

    def encode(self) -> bytes:
        w = NdrWriter()
        _write_server_name(w, self.server_name)
        w.u32(self.level)
        w.u32(self.level)  # the union's discriminant
        if self.level in _ENUM_LEVELS:
            w.pointer(lambda: _write_container(w, self.level, ()))
        w.deferred()
        w.u32(self.preferred_maximum_length)
        w.pointer(None if self.resume_handle is None else lambda: w.u32(self.resume_handle or 0))
        w.deferred()
        return w.getvalue()

    @classmethod
    def decode(cls, stub: memoryview | bytes) -> ShareEnumRequest:
        r = NdrReader(stub)
        server_name = _read_server_name(r)
        level = r.u32()
        if r.u32() != level:
            raise NdrError("SHARE_ENUM_STRUCT: union discriminant differs from Level")
        if level in _ENUM_LEVELS:
            r.unique(lambda: _read_container(r, level))
            r.deferred()
        preferred = r.u32()
        resume: Deferred[int] = r.unique(r.u32)
        r.deferred()
        _end(r)
        return cls(level, server_name, preferred, resume.value)


@dataclass(frozen=True, slots=True)
class ShareEnumResponse:
    """InfoStruct (Level, container or none), TotalEntries, ResumeHandle and the status."""

    level: int
    entries: tuple[ShareInfo, ...] | None
    total_entries: int
    resume_handle: int | None
    status: int = WinError.SUCCESS

    def encode(self, first_referent: int = FIRST_REFERENT) -> bytes:
        w = NdrWriter(first_referent)
        w.u32(self.level)
        w.u32(self.level)
        if self.level in _ENUM_LEVELS:
            entries = self.entries
            w.pointer(None if entries is None else lambda: _write_container(w, self.level, entries))
        w.deferred()
        w.u32(self.total_entries)
        w.pointer(None if self.resume_handle is None else lambda: w.u32(self.resume_handle or 0))
        w.deferred()
        w.u32(self.status)
        return w.getvalue()

    @classmethod
    def decode(cls, stub: memoryview | bytes) -> ShareEnumResponse:
        r = NdrReader(stub)
        level = r.u32()
        if r.u32() != level:
            raise NdrError("SHARE_ENUM_STRUCT: union discriminant differs from Level")
        container: Deferred[list[ShareInfo]] = Deferred()
        if level in _ENUM_LEVELS:
            container = r.unique(lambda: _read_container(r, level))
            r.deferred()
        total = r.u32()
        resume: Deferred[int] = r.unique(r.u32)
        r.deferred()
        status = r.u32()
        entries = None if container.value is None else tuple(container.value)
        return cls(level, entries, total, resume.value, status)


# -- NetrShareGetInfo (opnum 16) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareGetInfoRequest:
    """[MS-SRVS] 3.1.4.10: ServerName, NetName ([in, string] ref), Level."""

    net_name: str
    level: int
    server_name: str | None = None

    def encode(self) -> bytes:
        w = NdrWriter()
        _write_server_name(w, self.server_name)
        w.string(self.net_name)
        w.u32(self.level)
        return w.getvalue()

    @classmethod
    def decode(cls, stub: memoryview | bytes) -> ShareGetInfoRequest:
        r = NdrReader(stub)
        server_name = _read_server_name(r)
        net_name = r.string()
        level = r.u32()
        _end(r)
        return cls(net_name, level, server_name)


@dataclass(frozen=True, slots=True)
class ShareGetInfoResponse:
    """InfoStruct (a SHARE_INFO union: Level, then a pointer for the known levels) and the status."""

    level: int
    info: ShareInfo | None
    status: int = WinError.SUCCESS

    def encode(self, first_referent: int = FIRST_REFERENT) -> bytes:
        w = NdrWriter(first_referent)
        w.u32(self.level)
        if self.level in _INFO_LEVELS:
            info = self.info
            if info is None:
                w.pointer(None)
            elif self.level == 1005:
                w.pointer(lambda: w.u32(info.flags))
            else:
                w.pointer(lambda: _write_share_fixed(w, self.level, info))
        w.deferred()
        w.u32(self.status)
        return w.getvalue()

    @classmethod
    def decode(cls, stub: memoryview | bytes) -> ShareGetInfoResponse:
        r = NdrReader(stub)
        level = r.u32()
        info: Deferred[ShareInfo] = Deferred()
        if level == 1005:
            flags: Deferred[int] = r.unique(r.u32)
            r.deferred()
            if flags.value is not None:
                info.value = ShareInfo("", flags=flags.value)
        elif level in _SERVED_INFO_LEVELS:

            def read() -> ShareInfo:
                make = _read_share_fixed(r, level)
                r.deferred()
                return make()

            info = r.unique(read)
            r.deferred()
        elif level in _INFO_LEVELS and r.u32():
            raise NdrError(f"SHARE_INFO level {level} is not decoded here")
        status = r.u32()
        return cls(level, info.value, status)


# -- NetrServerGetInfo (opnum 21) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """SERVER_INFO_100/101 ([MS-SRVS] 2.2.4.40, 2.2.4.41)."""

    name: str
    comment: str = ""
    platform_id: int = PLATFORM_ID_NT
    version_major: int = 10
    version_minor: int = 0
    type: int = ServerType.WORKSTATION | ServerType.SERVER | ServerType.NT | ServerType.SERVER_NT


@dataclass(frozen=True, slots=True)
class ServerGetInfoRequest:
    """[MS-SRVS] 3.1.4.17: ServerName, Level."""

    level: int
    server_name: str | None = None

    def encode(self) -> bytes:
        w = NdrWriter()
        _write_server_name(w, self.server_name)
        w.u32(self.level)
        return w.getvalue()

    @classmethod
    def decode(cls, stub: memoryview | bytes) -> ServerGetInfoRequest:
        r = NdrReader(stub)
        server_name = _read_server_name(r)
        level = r.u32()
        _end(r)
        return cls(level, server_name)


@dataclass(frozen=True, slots=True)
class ServerGetInfoResponse:
    """InfoStruct (a SERVER_INFO union: Level, then a pointer for the known levels) and the status."""

    level: int
    info: ServerInfo | None
    status: int = WinError.SUCCESS

    def encode(self, first_referent: int = FIRST_REFERENT) -> bytes:
        w = NdrWriter(first_referent)
        w.u32(self.level)
        if self.level in _SERVER_LEVELS:
            info = self.info

            def write() -> None:
                assert info is not None
                w.u32(info.platform_id)
                w.pointer(lambda: w.string(info.name))
                if self.level == 101:
                    w.u32(info.version_major)
                    w.u32(info.version_minor)
                    w.u32(info.type)
                    w.pointer(lambda: w.string(info.comment))

            w.pointer(None if info is None else write)
        w.deferred()
        w.u32(self.status)
        return w.getvalue()

    @classmethod
    def decode(cls, stub: memoryview | bytes) -> ServerGetInfoResponse:
        r = NdrReader(stub)
        level = r.u32()
        info: Deferred[ServerInfo] = Deferred()
        if level in (100, 101):

            def read() -> ServerInfo:
                platform = r.u32()
                name: Deferred[str] = r.unique(r.string)
                if level == 100:
                    r.deferred()
                    return ServerInfo(name.value or "", platform_id=platform)
                major, minor, server_type = r.u32(), r.u32(), r.u32()
                comment: Deferred[str] = r.unique(r.string)
                r.deferred()
                return ServerInfo(name.value or "", comment.value or "", platform, major, minor, server_type)

            info = r.unique(read)
            r.deferred()
        elif level in _SERVER_LEVELS and r.u32():
            raise NdrError(f"SERVER_INFO level {level} is not decoded here")
        status = r.u32()
        return cls(level, info.value, status)


# -- the interface -----------------------------------------------------------------------------


class SrvsvcInterface:
    """The srvsvc calls above over a live share list (see :class:`~smbcore.dcerpc.Interface`)."""

    syntax = SRVSVC

    def __init__(self, shares: Callable[[], Iterable[Share]], server: ServerInfo) -> None:
        self._shares = shares
        self._server = server

    def listed(self) -> list[ShareInfo]:
        """The shares NetrShareEnum lists, in the order the share list gives them."""
        return [share_info(s) for s in self._shares() if not s.hidden]

    def call(self, opnum: int, stub: memoryview) -> bytes:
        if opnum in (Opnum.NETR_SHARE_ENUM, Opnum.NETR_SHARE_ENUM_STICKY):
            return self.share_enum(
                ShareEnumRequest.decode(stub), sticky=opnum == Opnum.NETR_SHARE_ENUM_STICKY
            )
        if opnum == Opnum.NETR_SHARE_GET_INFO:
            return self.share_get_info(ShareGetInfoRequest.decode(stub))
        if opnum == Opnum.NETR_SERVER_GET_INFO:
            return self.server_get_info(ServerGetInfoRequest.decode(stub))
        raise RpcFault(f"srvsvc opnum {opnum} is not served", FaultStatus.OP_RNG_ERROR)

    def share_enum(self, req: ShareEnumRequest, *, sticky: bool = False) -> bytes:
        """[MS-SRVS] 3.1.4.8 (and 3.1.4.31 for sticky shares: the ones that are not special)."""
        level = req.level
        if level not in _SERVED_ENUM_LEVELS:
            status = WinError.ACCESS_DENIED if level in _ADMIN_LEVELS else WinError.INVALID_LEVEL
            entries: tuple[ShareInfo, ...] | None = () if level in _ENUM_LEVELS else None
            return ShareEnumResponse(level, entries, 0, req.resume_handle, status).encode()
        shares = self.listed()
        if sticky:
            shares = [s for s in shares if not s.type & ShareTypeCode.SPECIAL]
        start = min(req.resume_handle or 0, len(shares))
        chosen: list[ShareInfo] = []
        budget = req.preferred_maximum_length
        for info in shares[start:]:
            cost = _entry_cost(level, info)
            if chosen and budget != MAX_PREFERRED_LENGTH and cost > budget:
                break  # at least one entry per call, so that enumeration always progresses
            chosen.append(info)
            if budget != MAX_PREFERRED_LENGTH:
                budget = max(budget - cost, 0)
        following = start + len(chosen)
        more = following < len(shares)
        resume = None if req.resume_handle is None else (following if more else 0)
        status = WinError.MORE_DATA if more else WinError.SUCCESS
        return ShareEnumResponse(level, tuple(chosen), len(shares), resume, status).encode()

    def share_get_info(self, req: ShareGetInfoRequest) -> bytes:
        """[MS-SRVS] 3.1.4.10: names compare case-insensitively; hidden shares are not found."""
        level = req.level
        if level not in _SERVED_INFO_LEVELS:
            status = WinError.ACCESS_DENIED if level in _ADMIN_LEVELS else WinError.INVALID_LEVEL
            return ShareGetInfoResponse(level, None, status).encode()
        wanted = req.net_name.casefold()
        found = next((s for s in self.listed() if s.name.casefold() == wanted), None)
        if found is None:
            return ShareGetInfoResponse(level, None, WinError.NET_NAME_NOT_FOUND).encode()
        return ShareGetInfoResponse(level, found).encode()

    def server_get_info(self, req: ServerGetInfoRequest) -> bytes:
        """[MS-SRVS] 3.1.4.17, levels 100 and 101."""
        if req.level not in (100, 101):
            return ServerGetInfoResponse(req.level, None, WinError.INVALID_LEVEL).encode()
        return ServerGetInfoResponse(req.level, self._server).encode()
