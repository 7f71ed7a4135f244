"""Oplocks: the OPLOCK_BREAK messages (MS-SMB2 2.2.23.1, 2.2.24.1, 2.2.25.1) and the pure
rules the server core applies to grant and break them (MS-SMB2 3.3.5.9, 3.3.4.6, 3.3.5.22.1;
MS-FSA 2.1.5.17).

Ferry grants the classic oplocks (Level II, Exclusive, Batch); a lease request (level 0xFF)
is answered with no oplock, which every client accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .header import HEADER_SIZE
from .wire import Buffer, Structure, check_structure_size, raw, structure, u8, u16, u32

#: MessageId of a server-initiated notification (MS-SMB2 3.3.4.6).
NOTIFICATION_MESSAGE_ID = 0xFFFFFFFFFFFFFFFF
#: Seconds the server waits for a client to acknowledge a break (Windows' default, 35 s).
OPLOCK_BREAK_TIMEOUT = 35.0

#: Access rights that neither read nor write data: opens asking only these break no oplock
#: (MS-FSA 2.1.5.1.2: FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, SYNCHRONIZE).
ATTRIBUTE_ONLY_ACCESS = 0x00000080 | 0x00000100 | 0x00100000
#: CREATE dispositions that replace the data (SUPERSEDE, OVERWRITE, OVERWRITE_IF).
_OVERWRITING_DISPOSITIONS = frozenset({0, 4, 5})


class OplockLevel(IntEnum):
    NONE = 0x00
    LEVEL_II = 0x01
    EXCLUSIVE = 0x08
    BATCH = 0x09
    LEASE = 0xFF


#: Levels that let the holder cache writes (and so must be broken before anyone else opens).
EXCLUSIVE_LEVELS = frozenset({OplockLevel.EXCLUSIVE, OplockLevel.BATCH})


@structure
@dataclass(frozen=True, slots=True)
class OplockBreak(Structure):
    """MS-SMB2 2.2.23.1 notification, 2.2.24.1 acknowledgment, 2.2.25.1 response: the same
    24 bytes (StructureSize, OplockLevel, Reserved, Reserved2, FileId)."""

    structure_size: int = u16(24)
    oplock_level: int = u8(0)
    reserved: int = u8(0)
    reserved2: int = u32(0)
    file_id: bytes = raw(16)

    @classmethod
    def parse(cls, msg: Buffer) -> OplockBreak:
        body = cls.decode(msg, HEADER_SIZE)
        check_structure_size("OPLOCK_BREAK", body.structure_size, 24)
        return body


def is_attribute_only(desired_access: int) -> bool:
    """An open that asks for nothing but attributes and SYNCHRONIZE breaks no oplock."""
    return desired_access != 0 and not desired_access & ~ATTRIBUTE_ONLY_ACCESS


def overwrites(disposition: int) -> bool:
    return disposition in _OVERWRITING_DISPOSITIONS


def break_level(holder: OplockLevel, new_open_overwrites: bool) -> OplockLevel:
    """The level a holder is broken to when another open arrives (MS-FSA 2.1.5.17.3):
    Exclusive/Batch go to Level II, or to none when the new open replaces the data; a
    Level II holder only loses its oplock to an overwrite."""
    if new_open_overwrites:
        return OplockLevel.NONE
    if holder in EXCLUSIVE_LEVELS:
        return OplockLevel.LEVEL_II
    return holder


def grant_level(requested: int, others: list[OplockLevel], *, directory: bool) -> OplockLevel:
    """The level a new open gets (MS-SMB2 3.3.5.9 step "oplock"; Samba's and Windows' rule):
    the requested level when it is alone on the file, Level II at most when it shares the
    file with opens that hold none or Level II, none while someone still holds an exclusive
    level (a break that has not finished) or for directories and lease requests."""
    if directory or requested in (OplockLevel.NONE, OplockLevel.LEASE):
        return OplockLevel.NONE
    try:
        level = OplockLevel(requested)
    except ValueError:
        return OplockLevel.NONE
    if not others:
        return level
    if any(o in EXCLUSIVE_LEVELS for o in others):
        return OplockLevel.NONE
    return OplockLevel.LEVEL_II
