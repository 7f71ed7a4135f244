"""The one exception family of the protocol core.

A :class:`LocalProtocolError` is this side's fault (the caller asked for something the
protocol does not allow); a :class:`RemoteProtocolError` is the peer's (malformed or
out-of-order input). The receive boundary turns every parse failure into the remote kind;
anything else escaping the core is a bug. Each error carries the NTSTATUS to answer with.
"""

from __future__ import annotations

from .ntstatus import NTStatus


class SMBProtocolError(Exception):
    """Base of all protocol errors."""

    def __init__(self, message: str, status: int = NTStatus.INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.status = status

    def __str__(self) -> str:
        return f"{self.args[0]} ({NTStatus.name_of(self.status)})"


class LocalProtocolError(SMBProtocolError):
    """This side tried to do something the protocol or the state does not allow."""


class RemoteProtocolError(SMBProtocolError):
    """The peer sent something malformed, oversized or out of order."""
