"""What Ferry's SMB client raises, each carrying the NTSTATUS behind it.

Three families, so a caller can tell "the server said no" from "the connection is gone" from
"too slow":

* :class:`SMBStatusError`: the server answered a request with an error NTSTATUS. The common
  ones have their own class, which is also the matching built-in ``OSError`` (a missing file
  is a :class:`FileNotFoundError`, a refused logon a :class:`PermissionError`), so callers can
  catch either. :func:`status_error` picks the class.
* :class:`SMBConnectionError` (a :class:`ConnectionError`): the connection ended; every request
  in flight on it fails with the same exception. :class:`ConnectionLost` when the peer or the
  network closed it, :class:`ConnectionAborted` when this client closed it after the server
  broke the protocol (a bad signature, a malformed response: the
  :class:`~smbcore.errors.RemoteProtocolError` is the ``__cause__``), :class:`ConnectionClosed`
  when the application closed it.
* :class:`SMBTimeoutError` (a :class:`TimeoutError`): a request got no final response in time.

:class:`SecurityRequirementError` is raised before anything is sent when the caller requires
encryption (or signing) that the negotiated connection cannot give.
"""

from __future__ import annotations

import errno

from .ntstatus import NTStatus


class SMBClientError(Exception):
    """Base of the client's errors; ``status`` is the NTSTATUS behind it (or a local stand-in)."""

    status: int = NTStatus.UNSUCCESSFUL


def _describe(status: int) -> str:
    return f"{NTStatus.name_of(status)} (0x{status:08X})"


class SMBStatusError(SMBClientError, OSError):
    """The server failed a request with ``status``; ``command`` and ``path`` say which."""

    errno_value: int | None = None

    def __init__(self, status: int, command: str = "", path: str | None = None) -> None:
        self.status = status
        self.command = command
        self.path = path
        where = " ".join(p for p in (command, repr(path) if path is not None else "") if p)
        self.message = f"{where}: {_describe(status)}" if where else _describe(status)
        super().__init__(self.errno_value, self.message, path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[SMBStatusError], tuple[int, str, str | None]]:
        return type(self), (self.status, self.command, self.path)


class SMBFileNotFoundError(SMBStatusError, FileNotFoundError):
    errno_value = errno.ENOENT


class SMBFileExistsError(SMBStatusError, FileExistsError):
    errno_value = errno.EEXIST


class SMBPermissionError(SMBStatusError, PermissionError):
    errno_value = errno.EACCES


class SMBIsADirectoryError(SMBStatusError, IsADirectoryError):
    errno_value = errno.EISDIR


class SMBNotADirectoryError(SMBStatusError, NotADirectoryError):
    errno_value = errno.ENOTDIR


class SMBDirectoryNotEmptyError(SMBStatusError):
    errno_value = errno.ENOTEMPTY


class SMBSharingViolation(SMBStatusError):
    """Another open's share mode does not allow this one (STATUS_SHARING_VIOLATION)."""

    errno_value = errno.EBUSY


class LogonFailure(SMBPermissionError):
    """SESSION_SETUP refused the credentials (wrong password, unknown or disabled account)."""


class BadNetworkName(SMBStatusError):
    """TREE_CONNECT named a share the server does not have (STATUS_BAD_NETWORK_NAME)."""

    errno_value = errno.ENOENT


class SessionExpired(SMBStatusError):
    """The session's authentication expired (STATUS_NETWORK_SESSION_EXPIRED): log in again."""


class SessionDeleted(SMBStatusError):
    """The server no longer knows the session (STATUS_USER_SESSION_DELETED)."""


class TreeDisconnected(SMBStatusError):
    """The tree connect is gone (STATUS_NETWORK_NAME_DELETED): the share was removed or closed."""


class FileClosed(SMBStatusError):
    """The open is gone (STATUS_FILE_CLOSED, STATUS_INVALID_HANDLE)."""

    errno_value = errno.EBADF


_CLASSES: dict[int, type[SMBStatusError]] = {
    NTStatus.OBJECT_NAME_NOT_FOUND: SMBFileNotFoundError,
    NTStatus.OBJECT_PATH_NOT_FOUND: SMBFileNotFoundError,
    NTStatus.NO_SUCH_FILE: SMBFileNotFoundError,
    NTStatus.NOT_FOUND: SMBFileNotFoundError,
    NTStatus.DELETE_PENDING: SMBFileNotFoundError,
    NTStatus.OBJECT_NAME_COLLISION: SMBFileExistsError,
    NTStatus.ACCESS_DENIED: SMBPermissionError,
    NTStatus.PRIVILEGE_NOT_HELD: SMBPermissionError,
    NTStatus.FILE_IS_A_DIRECTORY: SMBIsADirectoryError,
    NTStatus.NOT_A_DIRECTORY: SMBNotADirectoryError,
    NTStatus.DIRECTORY_NOT_EMPTY: SMBDirectoryNotEmptyError,
    NTStatus.SHARING_VIOLATION: SMBSharingViolation,
    NTStatus.LOGON_FAILURE: LogonFailure,
    NTStatus.ACCOUNT_RESTRICTION: LogonFailure,
    NTStatus.BAD_NETWORK_NAME: BadNetworkName,
    NTStatus.NETWORK_SESSION_EXPIRED: SessionExpired,
    NTStatus.USER_SESSION_DELETED: SessionDeleted,
    NTStatus.NETWORK_NAME_DELETED: TreeDisconnected,
    NTStatus.FILE_CLOSED: FileClosed,
    NTStatus.INVALID_HANDLE: FileClosed,
}

#: NTSTATUS values of failed logons beyond the ones NTStatus names ([MS-ERREF] 2.3.1).
_LOGON_STATUSES = {
    0xC0000064,  # STATUS_NO_SUCH_USER
    0xC000006A,  # STATUS_WRONG_PASSWORD
    0xC000006F,  # STATUS_INVALID_LOGON_HOURS
    0xC0000070,  # STATUS_INVALID_WORKSTATION
    0xC0000071,  # STATUS_PASSWORD_EXPIRED
    0xC0000072,  # STATUS_ACCOUNT_DISABLED
    0xC0000193,  # STATUS_ACCOUNT_EXPIRED
    0xC0000224,  # STATUS_PASSWORD_MUST_CHANGE
    0xC0000234,  # STATUS_ACCOUNT_LOCKED_OUT
}


def status_error(status: int, command: str = "", path: str | None = None) -> SMBStatusError:
    """The exception for a request the server failed with ``status``."""
    cls = _CLASSES.get(status)
    if cls is None:
        cls = LogonFailure if status in _LOGON_STATUSES else SMBStatusError
    return cls(status, command, path)


class SMBConnectionError(SMBClientError, ConnectionError):
    """The connection ended; every request in flight on it failed with this."""

    def __init__(self, message: str, status: int = NTStatus.CONNECTION_DISCONNECTED) -> None:
        self.status = status
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class ConnectionLost(SMBConnectionError):
    """The peer closed or reset the connection, or the network failed."""


class ConnectionAborted(SMBConnectionError):
    """This client dropped the connection because the server broke the protocol
    (see ``__cause__``) or the connection could not be used any more."""


class ConnectionClosed(SMBConnectionError):
    """The application closed the client while the request was in flight or queued."""


class SMBTimeoutError(SMBClientError, TimeoutError):
    """No final response within the request's timeout (STATUS_PENDING extends it)."""

    def __init__(self, message: str) -> None:
        self.status = NTStatus.IO_TIMEOUT
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class SecurityRequirementError(SMBClientError):
    """The caller requires encryption or signing that the connection or session cannot give."""

    def __init__(self, message: str) -> None:
        self.status = NTStatus.ACCESS_DENIED
        super().__init__(message)
