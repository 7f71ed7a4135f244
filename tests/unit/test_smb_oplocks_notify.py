"""Oplock rules and codecs, CHANGE_NOTIFY codecs: tables, round trips, and arbitrary bytes that
either parse or raise the protocol error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbcore.errors import RemoteProtocolError
from smbcore.notify import (
    Action,
    Change,
    ChangeNotifyRequest,
    CompletionFilter,
    decode_notify_information,
    encode_notify_information,
)
from smbcore.oplocks import OplockBreak, OplockLevel, break_level, grant_level, is_attribute_only, overwrites

PAD = bytes(64)
NONE, II, EXCL, BATCH, LEASE = (
    OplockLevel.NONE, OplockLevel.LEVEL_II, OplockLevel.EXCLUSIVE, OplockLevel.BATCH, OplockLevel.LEASE,
)  # fmt: skip


@pytest.mark.parametrize(
    ("requested", "others", "directory", "granted"),
    [
        (BATCH, [], False, BATCH),  # alone: what was asked
        (EXCL, [], False, EXCL),
        (II, [], False, II),
        (BATCH, [NONE], False, II),  # shared with an open holding nothing: Level II at most
        (BATCH, [II, II], False, II),
        (II, [NONE], False, II),
        (BATCH, [BATCH], False, NONE),  # a break has not finished
        (BATCH, [], True, NONE),  # directories get none
        (LEASE, [], False, NONE),  # leases are not granted: no oplock either
        (NONE, [], False, NONE),
        (0x42, [], False, NONE),  # not a level
    ],
)
def test_grant_level(
    requested: int, others: list[OplockLevel], directory: bool, granted: OplockLevel
) -> None:
    assert grant_level(requested, others, directory=directory) == granted


@pytest.mark.parametrize(
    ("holder", "overwrite", "target"),
    [(BATCH, False, II), (EXCL, False, II), (BATCH, True, NONE), (II, False, II), (II, True, NONE)],
)
def test_break_level(holder: OplockLevel, overwrite: bool, target: OplockLevel) -> None:
    assert break_level(holder, overwrite) == target


def test_attribute_only_opens_and_overwrites() -> None:
    assert is_attribute_only(0x80 | 0x00100000)  # READ_ATTRIBUTES | SYNCHRONIZE
    assert not is_attribute_only(0x1 | 0x80)  # READ_DATA too
    assert not is_attribute_only(0)
    assert [d for d in range(6) if overwrites(d)] == [0, 4, 5]


@given(st.sampled_from(list(OplockLevel)), st.binary(min_size=16, max_size=16))
def test_oplock_break_round_trip(level: OplockLevel, file_id: bytes) -> None:
    message = OplockBreak(24, level, 0, 0, file_id).to_bytes()
    assert OplockBreak.parse(PAD + message) == OplockBreak(24, level, 0, 0, file_id)


@given(
    st.lists(
        st.builds(Change, st.sampled_from(list(Action)), st.text(min_size=1, max_size=20), st.booleans()),
        max_size=10,
    )
)
def test_notify_information_round_trip(changes: list[Change]) -> None:
    data = encode_notify_information(changes, 1 << 20)
    assert data is not None
    assert decode_notify_information(data) == [(c.action, c.name) for c in changes]
    if changes:
        assert encode_notify_information(changes, len(data) - 1) is None  # does not fit


def test_change_filters() -> None:
    assert Change(Action.ADDED, "a").matches(CompletionFilter.FILE_NAME)
    assert not Change(Action.ADDED, "a", directory=True).matches(CompletionFilter.FILE_NAME)
    assert Change(Action.ADDED, "a", directory=True).matches(CompletionFilter.DIR_NAME)
    assert Change(Action.MODIFIED, "a").matches(CompletionFilter.SIZE)
    assert not Change(Action.MODIFIED, "a").matches(CompletionFilter.FILE_NAME)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    for parse in (OplockBreak.parse, ChangeNotifyRequest.parse):
        with contextlib.suppress(RemoteProtocolError):
            parse(PAD + data)
