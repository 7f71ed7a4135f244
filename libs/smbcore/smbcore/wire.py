"""Declaring fixed-size wire structures once, and reading variable parts with bounds checks.

A structure is a frozen, slotted dataclass whose fields carry their ``struct`` format in
metadata; :func:`structure` compiles them, in declaration order, into one little-endian
:class:`struct.Struct`. Decoding is ``unpack_from`` over a buffer (no slicing, no copy);
encoding is ``pack_into`` a caller's ``bytearray`` (reused across messages) or
:meth:`Structure.to_bytes` for tests and small messages::

    @structure
    @dataclass(frozen=True, slots=True)
    class Echo(Structure):
        \"\"\"MS-SMB2 2.2.28 ECHO Request\"\"\"
        structure_size: int = u16(4)
        reserved: int = u16(0)

Truncated input raises :class:`Truncated` (a :class:`RemoteProtocolError`): a message
is always complete when it is decoded (the framing layer waits for whole PDUs), so a
structure that does not fit is malformed, never "need more data".
"""

from __future__ import annotations

import struct
from dataclasses import field, fields
from typing import Any, ClassVar, Self, TypeVar

from .errors import RemoteProtocolError
from .ntstatus import NTStatus

Buffer = bytes | bytearray | memoryview


class Truncated(RemoteProtocolError):
    """A structure or a field runs past the end of its message."""

    def __init__(self, what: str, offset: int, need: int, have: int) -> None:
        super().__init__(
            f"{what}: needs {need} bytes at offset {offset}, message has {have}", NTStatus.INVALID_PARAMETER
        )
        self.offset = offset


def _f(fmt: str, default: Any) -> Any:
    return field(default=default, metadata={"fmt": fmt})


def u8(default: int = 0) -> Any:
    return _f("B", default)


def u16(default: int = 0) -> Any:
    return _f("H", default)


def u32(default: int = 0) -> Any:
    return _f("I", default)


def u64(default: int = 0) -> Any:
    return _f("Q", default)


def raw(size: int, default: bytes | None = None) -> Any:
    """A fixed-size byte field (GUIDs, signatures, nonces)."""
    return _f(f"{size}s", bytes(size) if default is None else default)


class Structure:
    """Base of declared structures; see :func:`structure`."""

    __slots__ = ()
    _struct: ClassVar[struct.Struct]
    SIZE: ClassVar[int]

    @classmethod
    def decode(cls, buf: Buffer, offset: int = 0) -> Self:
        need = cls.SIZE
        if offset < 0 or len(buf) - offset < need:
            raise Truncated(cls.__name__, offset, need, len(buf))
        return cls(*cls._struct.unpack_from(buf, offset))

    def encode_into(self, buf: bytearray, offset: int = 0) -> int:
        """Write at ``offset``; returns the offset just past the structure."""
        self._struct.pack_into(buf, offset, *(getattr(self, name) for name in self._names()))
        return offset + self.SIZE

    def to_bytes(self) -> bytes:
        return self._struct.pack(*(getattr(self, name) for name in self._names()))

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return cls.__dict__["_field_names"]  # type: ignore[no-any-return]


S = TypeVar("S", bound=type[Structure])


def structure(cls: S) -> S:
    """Compile the dataclass's field formats into ``cls._struct`` (little-endian, no padding)."""
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    fmt = "<" + "".join(f.metadata["fmt"] for f in fields(cls))  # type: ignore[arg-type]
    cls._struct = struct.Struct(fmt)
    cls.SIZE = cls._struct.size
    type.__setattr__(cls, "_field_names", names)
    return cls


def read_bytes(buf: Buffer, offset: int, length: int, what: str) -> memoryview:
    """``buf[offset:offset+length]`` as a memoryview, refusing anything out of bounds."""
    if offset < 0 or length < 0 or offset + length > len(buf):
        raise Truncated(what, offset, length, len(buf))
    return memoryview(buf)[offset : offset + length]


def read_utf16(buf: Buffer, offset: int, length: int, what: str) -> str:
    """A UTF-16LE string of ``length`` bytes; odd lengths and invalid surrogates are malformed."""
    if length % 2:
        raise RemoteProtocolError(f"{what}: odd UTF-16 length {length}", NTStatus.INVALID_PARAMETER)
    data = read_bytes(buf, offset, length, what)
    try:
        return bytes(data).decode("utf-16-le")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what}: invalid UTF-16", NTStatus.OBJECT_NAME_INVALID) from None


def check_structure_size(what: str, got: int, expected: int) -> None:
    """A body's StructureSize field must be the one its section of MS-SMB2 gives."""
    if got != expected:
        raise RemoteProtocolError(f"{what} StructureSize {got}, expected {expected}")


def align8(n: int) -> int:
    """Round up to a multiple of 8 (compound chaining, negotiate contexts: MS-SMB2 3.2.4.1.4)."""
    return (n + 7) & ~7
