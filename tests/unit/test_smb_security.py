"""smbcore.security: self-relative security descriptors, golden bytes both ways, checked
against smbprotocol's independent parser, round-tripped and fed hostile bytes; the POSIX
mapping in both directions."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smbcore.errors import RemoteProtocolError
from smbcore.security import (
    EVERYONE,
    Ace,
    AceFlags,
    AceType,
    Acl,
    ControlFlags,
    SecurityDescriptor,
    SecurityInformation,
    Sid,
    mode_from_dacl,
    posix_descriptor,
    unix_group_sid,
    unix_id,
    unix_user_sid,
)
from smbprotocol.security_descriptor import SMB2CreateSDBuffer

# posix_descriptor(uid 1000, gid 100, mode 0o640, a file), laid out by hand from MS-DTYP 2.4.6.
GOLDEN_SD = bytes.fromhex(
    "01 00 04 80"  # Revision 1, Sbz1, Control SELF_RELATIVE | DACL_PRESENT
    "14 00 00 00 24 00 00 00 00 00 00 00 34 00 00 00"  # owner 20, group 36, no SACL, DACL 52
    "01 02 00 00 00 00 00 16 01 00 00 00 e8 03 00 00"  # S-1-22-1-1000
    "01 02 00 00 00 00 00 16 02 00 00 00 64 00 00 00"  # S-1-22-2-100
    "02 00 4c 00 03 00 00 00"  # ACL revision 2, 76 bytes, 3 ACEs
    "00 00 18 00 9f 01 16 00 01 02 00 00 00 00 00 16 01 00 00 00 e8 03 00 00"  # owner rw + owner rights
    "00 00 18 00 89 00 12 00 01 02 00 00 00 00 00 16 02 00 00 00 64 00 00 00"  # group r
    "00 00 14 00 00 00 00 00 01 01 00 00 00 00 00 01 00 00 00 00"  # Everyone, nothing
)


def test_posix_descriptor_golden_bytes() -> None:
    sd = posix_descriptor(1000, 100, 0o640, is_directory=False)
    assert sd.encode() == GOLDEN_SD
    assert SecurityDescriptor.decode(GOLDEN_SD) == sd
    assert SecurityDescriptor.decode(GOLDEN_SD + b"trailing") == sd  # offsets, not length, bound it


def test_golden_bytes_against_smbprotocol() -> None:
    theirs = SMB2CreateSDBuffer()
    theirs.unpack(GOLDEN_SD)
    assert str(theirs.get_owner()) == "S-1-22-1-1000"
    assert str(theirs.get_group()) == "S-1-22-2-100"
    aces = theirs.get_dacl()["aces"].get_value()
    assert [str(a["sid"].get_value()) for a in aces] == ["S-1-22-1-1000", "S-1-22-2-100", "S-1-1-0"]
    assert [a["mask"].get_value() for a in aces] == [0x0016019F, 0x00120089, 0]


def test_sid_text_and_unix_mapping() -> None:
    assert str(unix_user_sid(0)) == "S-1-22-1-0" and str(unix_group_sid(5)) == "S-1-22-2-5"
    assert Sid.parse("S-1-5-32-544") == Sid(5, (32, 544))
    assert str(Sid.parse("S-1-0x123456789ABC-1")) == "S-1-0x123456789ABC-1"
    assert unix_id(unix_user_sid(7)) == ("user", 7) and unix_id(unix_group_sid(8)) == ("group", 8)
    assert unix_id(EVERYONE) is None
    with pytest.raises(ValueError, match="16 sub-authorities"):
        Sid(1, tuple(range(16)))


def test_select_and_empty_descriptor() -> None:
    sd = posix_descriptor(1, 2, 0o755, is_directory=True)
    assert sd.select(0).encode() == bytes.fromhex("0100 0080") + bytes(16)  # header only
    only_owner = SecurityDescriptor.decode(sd.select(SecurityInformation.OWNER).encode())
    assert only_owner.owner == unix_user_sid(1) and only_owner.group is None and only_owner.dacl is None
    # A NULL DACL: DACL_PRESENT with no DACL offset.
    null = SecurityDescriptor(null_dacl=True).encode()
    assert int.from_bytes(null[2:4], "little") == ControlFlags.SELF_RELATIVE | ControlFlags.DACL_PRESENT
    assert SecurityDescriptor.decode(null).null_dacl


@pytest.mark.parametrize(
    ("aces", "mode"),
    [
        ([(0, 0, 0x001F01FF, "owner")], 0o700),
        ([(0, 0, 0x00120089, "group"), (0, 0, 0x00120089, "everyone")], 0o444),
        ([(1, 0, 0x00000002, "everyone"), (0, 0, 0x10000000, "everyone")], 0o555),  # deny first wins
        ([(0, 0, 0x80000000, "owner"), (0, AceFlags.INHERIT_ONLY, 0x40000000, "owner")], 0o400),
        ([(0, 0, 0x001F01FF, "stranger")], 0o000),  # not expressible in a mode
        ([(0, 0, 0x00000020, "authenticated")], 0o111),
    ],
)
def test_mode_from_dacl(aces: list[tuple[int, int, int, str]], mode: int) -> None:
    sids = {
        "owner": unix_user_sid(1),
        "group": unix_group_sid(2),
        "everyone": EVERYONE,
        "stranger": Sid(5, (21, 1, 2, 3, 1001)),
        "authenticated": Sid(5, (11,)),
    }
    dacl = Acl(tuple(Ace(t, f, m, sids[who]) for t, f, m, who in aces))
    assert mode_from_dacl(dacl, unix_user_sid(1), unix_group_sid(2)) == mode
    assert mode_from_dacl(None, unix_user_sid(1), unix_group_sid(2)) == 0o777


@pytest.mark.parametrize("mode", [0o000, 0o644, 0o755, 0o777, 0o710])
def test_mode_survives_a_round_trip(mode: int) -> None:
    sd = posix_descriptor(1, 2, mode, is_directory=False)
    assert mode_from_dacl(sd.dacl, unix_user_sid(1), unix_group_sid(2)) == mode


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        GOLDEN_SD[:19],
        b"\x02" + GOLDEN_SD[1:],  # revision 2
        GOLDEN_SD[:2] + b"\x04\x00" + GOLDEN_SD[4:],  # not self-relative
        GOLDEN_SD[:4] + b"\x04\x00\x00\x00" + GOLDEN_SD[8:],  # owner inside the header
        GOLDEN_SD[:4] + b"\xff\x00\x00\x00" + GOLDEN_SD[8:],  # owner past the end
        GOLDEN_SD[:54] + b"\xff\xff" + GOLDEN_SD[56:],  # AclSize past the end
        GOLDEN_SD[:62] + b"\x03\x00" + GOLDEN_SD[64:],  # AceSize not a multiple of 4
    ],
)
def test_malformed_descriptors_are_refused(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        SecurityDescriptor.decode(bad)
    assert err.value.status == 0xC0000079  # STATUS_INVALID_SECURITY_DESCR


sids = st.builds(
    Sid,
    st.integers(0, (1 << 48) - 1),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
)
aces = st.one_of(
    st.builds(
        Ace,
        st.sampled_from([int(t) for t in AceType]),
        st.integers(0, 255),
        st.integers(0, 0xFFFFFFFF),
        sids,
        st.binary(max_size=8).map(lambda b: b + bytes(-len(b) % 4)),
    ),
    # An object or callback ACE: an opaque body, a multiple of 4 bytes.
    st.builds(
        Ace,
        st.sampled_from([5, 6, 9, 0x12]),
        st.integers(0, 255),
        st.just(0),
        st.none(),
        st.binary(max_size=32).map(lambda b: b + bytes(-len(b) % 4)),
    ),
)
acls = st.builds(Acl, st.lists(aces, max_size=6).map(tuple), st.sampled_from([2, 4]))
descriptors = st.builds(
    SecurityDescriptor,
    st.none() | sids,
    st.none() | sids,
    st.none() | acls,
    st.none() | acls,
    st.integers(0, 0xFFFF).map(lambda c: c & ~0x8014),
).filter(lambda sd: not (sd.dacl is None and sd.control & ControlFlags.DACL_PRESENT))


@given(descriptors)
@settings(max_examples=300)
def test_descriptor_round_trip(sd: SecurityDescriptor) -> None:
    assert SecurityDescriptor.decode(sd.encode()) == sd


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_arbitrary_bytes_parse_or_raise(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        SecurityDescriptor.decode(data)


@given(descriptors, st.integers(0, 199), st.integers(0, 255))
@settings(max_examples=300)
def test_corrupted_descriptors_parse_or_raise(sd: SecurityDescriptor, at: int, value: int) -> None:
    data = bytearray(sd.encode())
    data[at % len(data)] = value
    with contextlib.suppress(RemoteProtocolError):
        SecurityDescriptor.decode(bytes(data))
