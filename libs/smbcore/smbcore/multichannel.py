"""Multichannel bookkeeping, sans-IO: which channel carries the next request, what becomes of
the requests of a channel that failed, when a lost channel is tried again, and which
connections a new channel plan opens or retires. No sockets, no clock, no ``asyncio``: the
asyncio session (:class:`smbcore.aio_client.SMBSession`) and the channel manager
(:mod:`smbcore.aio_multichannel`) drive these with the current time where one is needed.

* :class:`ChannelScheduler` spreads requests across channels in proportion to their speed:
  each request goes to the channel whose bytes in flight, the request's included, are the
  smallest share of its weight (:func:`smbcore.selection.speed_weights`). With every channel
  busy, the bytes in flight stand in the ratio of the weights; a channel that drains faster
  is given more.
* :class:`ReplayBook` remembers, per channel, the operations in flight on it in the order
  they were sent. When a channel fails, :meth:`ReplayBook.channel_failed` hands them back, so
  that they can be sent again on the surviving channels with SMB2_FLAGS_REPLAY_OPERATION and
  the session's next ChannelSequence (MS-SMB2 3.2.7.1). :func:`replay_decision` says what to
  do with an operation whose channel failed, :func:`retry_delay` how long to wait before
  trying again one the server answered STATUS_FILE_NOT_AVAILABLE (a replay that arrived while
  requests of the older ChannelSequence were still being processed, MS-SMB2 3.3.5.2.10).
* :class:`Backoff` paces the attempts to re-open and re-bind a lost channel.
* :func:`plan_changes` compares the planned connections (:class:`smbcore.selection.ChannelPlan`)
  with the open ones, keyed by their (source address, server address) pair.

What is replayed: every operation of the session except those tied to one connection
(NEGOTIATE, SESSION_SETUP). READ, WRITE, FLUSH, QUERY_INFO and SET_INFO of sizes are
idempotent; a CREATE carries an SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2 context with a
CreateGuid of its own, so the server answers a replay with the open its first try made
(MS-SMB2 3.3.5.9.10). An operation whose first try did complete, but whose response was
lost with the channel, can see its own effect when it is replayed (a replayed delete finds
no file, a replayed CLOSE a closed handle); the callers that care say so
(:attr:`smbcore.client.Request.replay`).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .selection import ChannelPair, speed_weights

__all__ = [
    "MAX_CHANNELS",
    "STATUS_FILE_NOT_AVAILABLE",
    "Backoff",
    "ChannelKey",
    "ChannelScheduler",
    "PlanChanges",
    "ReplayBook",
    "ReplayDecision",
    "plan_changes",
    "replay_decision",
    "retry_delay",
]

#: Channels in one session (MS-SMB2 and Windows: 32).
MAX_CHANNELS = 32
#: A request of an older ChannelSequence, or a replay while such requests are still being
#: processed (MS-SMB2 3.3.5.2.10). Not in :class:`~smbcore.ntstatus.NTStatus`.
STATUS_FILE_NOT_AVAILABLE = 0xC0000467

K = TypeVar("K", bound=Hashable)
Op = TypeVar("Op", bound=Hashable)


# -- spreading requests ------------------------------------------------------------------------


class ChannelScheduler(Generic[K]):
    """Picks the channel for each request, in proportion to the channels' speeds.

    ``add(channel, speed)`` (bit/s, None when unknown) and ``remove(channel)`` keep the set
    current; :meth:`pick` chooses, :meth:`started` and :meth:`finished` count the bytes in
    flight. Channels are tried in the order they were added when everything else is equal.
    """

    def __init__(self) -> None:
        self._speeds: dict[K, int | None] = {}
        self._weights: dict[K, int] = {}
        self._inflight: dict[K, int] = {}
        self._sent: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._speeds)

    def __contains__(self, channel: object) -> bool:
        return channel in self._speeds

    @property
    def channels(self) -> tuple[K, ...]:
        return tuple(self._speeds)

    @property
    def weights(self) -> dict[K, int]:
        return dict(self._weights)

    def inflight(self, channel: K) -> int:
        return self._inflight.get(channel, 0)

    def sent(self, channel: K) -> int:
        """Bytes sent on the channel so far (as counted by :meth:`started`)."""
        return self._sent.get(channel, 0)

    def add(self, channel: K, speed: int | None = None) -> None:
        self._speeds[channel] = speed
        self._inflight.setdefault(channel, 0)
        self._sent.setdefault(channel, 0)
        self._reweigh()

    def remove(self, channel: K) -> None:
        """Stop using ``channel``; what it had in flight is no longer counted."""
        if self._speeds.pop(channel, None) is not None or channel in self._inflight:
            self._inflight.pop(channel, None)
            self._sent.pop(channel, None)
            self._reweigh()

    def pick(self, size: int = 0, exclude: Iterable[K] = ()) -> K:
        """The channel for a request of ``size`` bytes: the smallest ``(in flight + size) /
        weight``, then the fewest bytes sent per weight, then the first added. Raises
        :class:`LookupError` when there is no channel (or every one is excluded)."""
        skip = set(exclude)
        best: K | None = None
        best_key: tuple[float, float] | None = None
        for channel, weight in self._weights.items():
            if channel in skip:
                continue
            key = ((self._inflight[channel] + size) / weight, self._sent[channel] / weight)
            if best_key is None or key < best_key:
                best, best_key = channel, key
        if best is None:
            raise LookupError("no channel")
        return best

    def started(self, channel: K, size: int) -> None:
        if channel in self._inflight:
            self._inflight[channel] += size
            self._sent[channel] += size

    def finished(self, channel: K, size: int) -> None:
        """A request of ``size`` bytes is done; a channel removed meanwhile is ignored."""
        if channel in self._inflight:
            self._inflight[channel] = max(0, self._inflight[channel] - size)

    def _reweigh(self) -> None:
        channels = list(self._speeds)
        weights = speed_weights([self._speeds[c] for c in channels]) if channels else ()
        self._weights = dict(zip(channels, weights, strict=True))


# -- replaying what a failed channel had in flight -----------------------------------------------


class ReplayBook(Generic[K, Op]):
    """The operations in flight on each channel, in the order they were sent."""

    def __init__(self) -> None:
        self._by_channel: dict[K, dict[Op, None]] = {}
        self._where: dict[Op, K] = {}

    def sent(self, channel: K, op: Op) -> None:
        """``op`` went out on ``channel`` (a replay moves it from where it was)."""
        self.done(op)
        self._by_channel.setdefault(channel, {})[op] = None
        self._where[op] = channel

    def done(self, op: Op) -> None:
        channel = self._where.pop(op, None)
        if channel is not None:
            self._by_channel[channel].pop(op, None)

    def channel_of(self, op: Op) -> K | None:
        return self._where.get(op)

    def inflight(self, channel: K) -> tuple[Op, ...]:
        return tuple(self._by_channel.get(channel, ()))

    def channel_failed(self, channel: K) -> list[Op]:
        """Forget ``channel``; its operations in flight, oldest first, to replay or fail."""
        ops = list(self._by_channel.pop(channel, {}))
        for op in ops:
            self._where.pop(op, None)
        return ops

    def __len__(self) -> int:
        return len(self._where)


class ReplayDecision(enum.Enum):
    REPLAY = "replay"  # send it again on a surviving channel
    FAIL = "fail"  # report the connection's failure to the caller


def replay_decision(
    *, replayable: bool, replays: int, channels_left: int, max_replays: int
) -> ReplayDecision:
    """What to do with an operation whose channel failed: replay it when it may be replayed,
    a channel is left, and it has not been replayed ``max_replays`` times already (a request
    that kills every channel it is sent on must not go round for ever)."""
    if replayable and channels_left > 0 and replays < max_replays:
        return ReplayDecision.REPLAY
    return ReplayDecision.FAIL


def retry_delay(tries: int, *, first: float = 0.01, cap: float = 1.0) -> float:
    """Seconds before trying again, for the ``tries``-th time, an operation answered
    STATUS_FILE_NOT_AVAILABLE: doubling from ``first`` up to ``cap``."""
    if tries < 1:
        raise ValueError(f"tries {tries}")
    return float(min(cap, first * 2.0 ** (tries - 1)))


# -- re-opening a lost channel -------------------------------------------------------------------


@dataclass(slots=True)
class Backoff:
    """Delays between attempts to re-open a lost channel: ``initial`` seconds, doubling up to
    ``maximum``; :meth:`reset` once the channel is back."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    _next: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("0 < initial <= maximum and factor >= 1")
        self._next = self.initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial


# -- plans ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ChannelKey:
    """A channel's two ends, as addresses (normalized): what a plan names and a socket has."""

    source: str
    remote: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", str(ipaddress.ip_address(self.source)))
        object.__setattr__(self, "remote", str(ipaddress.ip_address(self.remote)))

    @classmethod
    def of(cls, pair: ChannelPair) -> ChannelKey:
        return cls(pair.source_address, pair.remote_address)

    def __str__(self) -> str:
        return f"{_bracket(self.source)}->{_bracket(self.remote)}"


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True, slots=True)
class PlanChanges:
    """What a plan asks of the open channels: connections to open per pair (with the pair),
    and how many of each open pair's connections to retire."""

    open: tuple[tuple[ChannelPair, int], ...]
    retire: tuple[tuple[ChannelKey, int], ...]

    @property
    def empty(self) -> bool:
        return not self.open and not self.retire


def plan_changes(
    planned: Sequence[ChannelPair], current: Mapping[ChannelKey, int], *, limit: int = MAX_CHANNELS
) -> PlanChanges:
    """Compare the planned connections with ``current`` (open or being opened, per pair):
    what to open, in plan order, so that at most ``limit`` exist at once, and what to retire
    (pairs the plan no longer has, or has fewer connections of). A pair with connections
    already open keeps them; the plan's counts are targets, not increments."""
    wanted: dict[ChannelKey, int] = {}
    pairs: dict[ChannelKey, ChannelPair] = {}
    for pair in planned:
        key = ChannelKey.of(pair)
        wanted[key] = wanted.get(key, 0) + pair.connections
        pairs.setdefault(key, pair)
    retire = tuple(
        (key, count - wanted.get(key, 0)) for key, count in current.items() if count > wanted.get(key, 0)
    )
    total = sum(min(count, wanted.get(key, 0)) for key, count in current.items())
    opened: list[tuple[ChannelPair, int]] = []
    for key, target in wanted.items():
        missing = min(target - current.get(key, 0), limit - total)
        if missing > 0:
            opened.append((pairs[key], missing))
            total += missing
    return PlanChanges(tuple(opened), retire)
