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


# -- the client's side -------------------------------------------------------------------------

#: Bytes one credit pays for (MS-SMB2 3.1.5.2: a "64K" unit).
CREDIT_UNIT = 65536
#: CreditRequest is a 16-bit field.
MAX_CREDIT_REQUEST = 0xFFFF


def credit_charge(send_payload: int, expected_response: int, *, multi_credit: bool = True) -> int:
    """CreditCharge of a request (MS-SMB2 3.2.4.1.5).

    ``(max(SendPayloadSize, ExpectedResponsePayloadSize) - 1) / 65536 + 1`` when the connection
    supports multi-credit requests, else 0. A request of no payload costs 1; 64 KiB costs 1;
    64 KiB + 1 costs 2; 8 MiB costs 128.
    """
    if send_payload < 0 or expected_response < 0:
        raise ValueError("payload sizes are never negative")
    if not multi_credit:
        return 0
    return (max(send_payload, expected_response, 1) - 1) // CREDIT_UNIT + 1


class ClientCredits:
    """The client's sequence window (MS-SMB2 3.2.4.1.6, 3.2.5.1.4): MessageIds and credits.

    The window starts as ``{0}`` (one credit). Sending a request takes ``max(charge, 1)``
    consecutive MessageIds from its low end; every response (interim or final) adds its
    CreditResponse. Requests ask for what they spend plus a share of the deficit to
    ``target`` credits (held plus in flight), counting what other requests in flight have
    already asked for, so that many requests sent at once do not each ask for the whole
    deficit.
    """

    __slots__ = ("_asked", "_balance", "_in_flight", "_next_id", "target")

    def __init__(self, target: int) -> None:
        if target < 1:
            raise ValueError("the credit target must be at least 1")
        self.target = target
        self._next_id = 0
        self._balance = 1  # credits granted and not yet spent
        self._in_flight = 0  # credits spent on requests without a first response
        self._asked = 0  # credits asked beyond their charge by requests in flight

    @property
    def available(self) -> int:
        """Credits the client may spend now."""
        return self._balance

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def next_message_id(self) -> int:
        return self._next_id

    def can_send(self, charge: int) -> bool:
        return self._balance >= max(charge, 1)

    def take(self, charge: int) -> tuple[int, int, int]:
        """Spend credits for one request: ``(message_id, credit_request, extra)``.

        ``extra`` is what the request asks beyond its own cost; hand it back to
        :meth:`responded` with the first response.
        """
        cost = max(charge, 1)
        if self._balance < cost:
            raise ValueError(f"a charge of {cost} with {self._balance} credits")
        message_id = self._next_id
        self._next_id += cost
        self._balance -= cost
        self._in_flight += cost
        deficit = self.target - (self._balance + self._in_flight) - self._asked
        extra = max(0, min(deficit, MAX_CREDIT_REQUEST - cost))
        self._asked += extra
        return message_id, cost + extra, extra

    def granted(self, credits: int) -> None:
        """A response's CreditResponse (interim and final responses alike)."""
        self._balance += credits

    def responded(self, charge: int, extra: int) -> None:
        """The first response to a request arrived: it is no longer in flight."""
        self._in_flight -= max(charge, 1)
        self._asked -= extra
