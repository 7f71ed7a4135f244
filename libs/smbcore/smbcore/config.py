"""Every limit of the SMB server core in one place, with its default and why."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class ServerLimits:
    #: Largest Direct TCP PDU accepted: a WRITE of ``max_write`` plus headers and a transform.
    max_pdu: int = 8 * MiB + 64 * 1024
    #: MaxReadSize / MaxWriteSize / MaxTransactSize offered in NEGOTIATE (8 MiB, as Windows 2016+).
    max_read: int = 8 * MiB
    max_write: int = 8 * MiB
    max_transact: int = 8 * MiB
    #: Credits a client may hold at once per connection (Samba's default is 8192, Windows' 512).
    max_credits: int = 8192
    #: Sessions per connection and opens per session.
    max_sessions: int = 64
    max_opens: int = 16384
    #: Channels bound to one session (MS-SMB2 and Windows: 32).
    max_channels: int = 32
    #: Seconds a connection may stay idle before NEGOTIATE/authentication completes, and after.
    handshake_timeout: float = 30.0
    idle_timeout: float = 15 * 60.0
    #: Seconds a file operation may run before the client gets an interim STATUS_PENDING
    #: response (MS-SMB2 3.3.4.2; Samba waits 0.5 s too).
    interim_response_delay: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "max_pdu",
            "max_read",
            "max_write",
            "max_transact",
            "max_credits",
            "max_sessions",
            "max_opens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_pdu < max(self.max_read, self.max_write) + 64:
            raise ValueError("max_pdu must hold a full READ/WRITE with its header")
