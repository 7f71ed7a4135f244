"""The server's command sequence window (MS-SMB2 3.3.1.1, 3.3.1.2, 3.3.5.2.3).

The window holds the MessageIds the client may use next. It starts as ``{0}``; each
request consumes ``max(CreditCharge, 1)`` consecutive ids, which must all be in the window
and unused; each response grants credits, which extend the window's upper end. Ids may be
used out of order (many requests in flight, several channels), so used ids above the
lowest unused one are remembered until the low end catches up.
"""

from __future__ import annotations

from .errors import RemoteProtocolError
from .ntstatus import NTStatus


class CreditWindow:
    __slots__ = ("_high", "_low", "_max", "_used")

    def __init__(self, max_credits: int) -> None:
        if max_credits < 1:
            raise ValueError("max_credits must be at least 1")
        self._low = 0  # lowest id not yet used
        self._high = 1  # one past the highest id granted
        self._used: set[int] = set()  # used ids above _low
        self._max = max_credits

    @property
    def outstanding(self) -> int:
        """Credits the client holds: granted ids it has not used yet."""
        return self._high - self._low - len(self._used)

    def consume(self, message_id: int, credit_charge: int) -> None:
        """Take ids ``[message_id, message_id + charge)`` out of the window, or raise."""
        charge = max(credit_charge, 1)
        end = message_id + charge
        if message_id < self._low or end > self._high:
            raise RemoteProtocolError(
                f"MessageId {message_id} (charge {charge}) outside the window [{self._low}, {self._high})",
                NTStatus.INVALID_PARAMETER,
            )
        ids = range(message_id, end)
        if any(i in self._used for i in ids):
            raise RemoteProtocolError(f"MessageId {message_id} reused", NTStatus.INVALID_PARAMETER)
        self._used.update(ids)
        while self._low in self._used:
            self._used.discard(self._low)
            self._low += 1

    def grant(self, requested: int) -> int:
        """Credits to return in a response: what was asked for (at least one), within the
        maximum; never leaves the client with none."""
        granted = max(0, min(max(requested, 1), self._max - self.outstanding))
        if granted == 0 and self.outstanding == 0:
            granted = 1
        self._high += granted
        return granted
