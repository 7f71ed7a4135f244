"""The server's command sequence window (MS-SMB2 3.3.1.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbcore.credits import CreditWindow
from smbcore.errors import RemoteProtocolError


def test_starts_with_message_id_zero_only() -> None:
    w = CreditWindow(100)
    assert w.outstanding == 1
    with pytest.raises(RemoteProtocolError, match="outside the window"):
        w.consume(1, 1)
    w.consume(0, 1)
    assert w.outstanding == 0


def test_grants_extend_and_multi_credit_consumes_a_range() -> None:
    w = CreditWindow(100)
    w.consume(0, 1)
    assert w.grant(10) == 10
    w.consume(1, 8)  # an 8-credit (512 KiB) READ
    assert w.outstanding == 2
    with pytest.raises(RemoteProtocolError, match="outside the window"):
        w.consume(9, 3)
    w.consume(9, 2)
    assert w.outstanding == 0


def test_out_of_order_and_reuse() -> None:
    w = CreditWindow(100)
    w.consume(0, 1)
    w.grant(5)
    w.consume(3, 1)
    w.consume(1, 1)
    with pytest.raises(RemoteProtocolError, match="reused"):
        w.consume(3, 1)
    with pytest.raises(RemoteProtocolError, match="reused"):
        w.consume(2, 2)  # 3 is inside the range
    w.consume(2, 1)
    w.consume(4, 2)
    assert w.outstanding == 0


def test_charge_zero_counts_as_one() -> None:
    w = CreditWindow(10)
    w.consume(0, 0)
    assert w.outstanding == 0


def test_grant_never_exceeds_max_and_never_starves() -> None:
    w = CreditWindow(4)
    w.consume(0, 1)
    assert w.grant(100) == 4
    assert w.outstanding == 4
    assert w.grant(100) == 0
    for mid in range(1, 5):
        w.consume(mid, 1)
    assert w.grant(0) == 1  # asked for none, holds none: still one


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), max_size=60))
def test_outstanding_matches_a_model(steps: list[tuple[int, int]]) -> None:
    w = CreditWindow(32)
    available = {0}
    high = 1
    for charge, request in steps:
        if available:
            start = min(available)
            ids = set(range(start, start + max(charge, 1)))
            if ids <= available:
                w.consume(start, charge)
                available -= ids
            else:
                with pytest.raises(RemoteProtocolError):
                    w.consume(start, charge)
        granted = w.grant(request)
        available |= set(range(high, high + granted))
        high += granted
        assert w.outstanding == len(available) <= 32
