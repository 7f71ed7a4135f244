"""Named pipes on IPC$ (the shell's side), and the file service that routes by share type.

:class:`PipeService` carries out the core's :class:`~smbcore.server.FileOperation` events on
pipe shares ([MS-SMB2] 3.3.5.9 CREATE of a named pipe, 3.3.5.12/3.3.5.13 READ and WRITE,
3.3.5.15.3 FSCTL_PIPE_TRANSCEIVE): CREATE of ``srvsvc`` (any case, with or without a leading
``\\`` or ``PIPE\\``) opens a pipe instance with its own DCE/RPC association
(:class:`~smbcore.dcerpc.RpcConnection` serving :class:`~smbcore.srvsvc.SrvsvcInterface`);
other names are STATUS_OBJECT_NAME_NOT_FOUND.

The pipes are duplex message-mode pipes, as Windows's RPC pipes: every PDU the RPC server
produces is one message; a READ returns at most one message, and a message longer than the
READ (or than a transceive's MaxOutputResponse) is answered with STATUS_BUFFER_OVERFLOW and
the part that fits, the rest left for the next READ. A READ (or transceive) that finds nothing
to read waits for a message, as pipes opened in blocking mode do on Windows and Samba
([MS-CIFS] 3.3.5.57.9: "wait indefinitely ... or until it is canceled"); closing the pipe or
:meth:`PipeService.cancel` ends the wait. After the RPC association ended on a protocol error,
its last answer (a fault or bind_nak) can still be read, then the pipe reports
STATUS_PIPE_DISCONNECTED.

:class:`ShareRouter` is the server's :class:`~smbcore.aio_server.FileService`: operations on
pipe shares go to a :class:`PipeService`, everything else to the disk service.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .dcerpc import RpcConnection, RpcLimits
from .fileinfo import FileAttributes, FileInfoClass, FileStandardInformation
from .fileops import (
    CLOSE_FLAG_POSTQUERY_ATTRIB,
    CloseRequest,
    CreateRequest,
    FileTimes,
    InfoType,
    QueryInfoRequest,
    ReadRequest,
    WriteRequest,
    encode_close_response,
    encode_output_buffer_response,
    encode_read_response_head,
    encode_write_response,
)
from .ioctl import CtlCode, IoctlRequest, encode_ioctl_response
from .messages import ShareType
from .ntstatus import NTStatus
from .server import FileOperation, FileResult, Share
from .srvsvc import PIPE_NAME as SRVSVC_PIPE
from .srvsvc import ServerInfo, SrvsvcInterface

log = logging.getLogger(__name__)

#: NTSTATUS values of pipes ([MS-ERREF] 2.3.1), kept here until ntstatus.py lists them.
STATUS_PIPE_BROKEN = 0xC000014B
STATUS_PIPE_DISCONNECTED = 0xC00000B0
STATUS_PIPE_BUSY = 0xC00000AE

FILE_OPENED = 1  # CreateAction ([MS-SMB2] 2.2.14)
#: What a pipe reports as its sizes: the in-quota Windows gives RPC pipes.
PIPE_BUFFER_SIZE = 4096
PIPE_TIMES = FileTimes(0, 0, 0, 0, PIPE_BUFFER_SIZE, 0, int(FileAttributes.NORMAL))
#: FilePipeInformation / FilePipeLocalInformation values ([MS-FSCC] 2.4.31, 2.4.32).
FILE_PIPE_MESSAGE_MODE = 1
FILE_PIPE_QUEUE_OPERATION = 0
FILE_PIPE_MESSAGE_TYPE = 1
FILE_PIPE_FULL_DUPLEX = 2
FILE_PIPE_CONNECTED_STATE = 3
FILE_PIPE_SERVER_END = 1


def pipe_name(name: str) -> str:
    """The name a CREATE on IPC$ asks for, without a leading ``\\`` or ``PIPE\\``, lower-cased."""
    name = name.replace("/", "\\").lstrip("\\")
    if name.lower().startswith("pipe\\"):
        name = name[5:]
    return name.lower()


class Cancelled(Exception):
    """A wait on a pipe ended by :meth:`PipeService.cancel`."""


@dataclass(eq=False)
class PipeInstance:
    """One open of a named pipe: its RPC association and the messages waiting to be read."""

    name: str
    rpc: RpcConnection
    messages: deque[bytes] = field(default_factory=deque)
    offset: int = 0  # into messages[0]: a message read in parts
    closed: bool = False
    readable: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> int:
        """Feed the RPC server; what it answers becomes messages to read."""
        if self.rpc.closed:
            return STATUS_PIPE_DISCONNECTED
        self.rpc.receive_data(data)
        self.messages.extend(self.rpc.data_to_send())
        self._signal()
        return NTStatus.SUCCESS

    def read_message(self, limit: int) -> tuple[int, bytes]:
        """At most ``limit`` bytes of the next message (it must be there)."""
        message = self.messages[0]
        chunk = message[self.offset : self.offset + limit]
        self.offset += len(chunk)
        if self.offset < len(message):
            return NTStatus.BUFFER_OVERFLOW, chunk
        self.messages.popleft()
        self.offset = 0
        self._signal()
        return NTStatus.SUCCESS, chunk

    @property
    def pending(self) -> int:
        """Bytes waiting to be read."""
        return sum(len(m) for m in self.messages) - self.offset

    def close(self) -> None:
        self.closed = True
        self.messages.clear()
        self.readable.set()

    def _signal(self) -> None:
        if self.messages or self.closed or self.rpc.closed:
            self.readable.set()
        else:
            self.readable.clear()


class PipeEndpoint(Protocol):
    """Creates the RPC association behind a new pipe instance."""

    def __call__(self) -> RpcConnection: ...


class PipeService:
    """Named pipes for the pipe shares (IPC$); see the module docstring.

    ``shares`` gives the server's current share list (read at every call, so shares added or
    removed at run time show at once); ``server_name`` and ``comment`` are what
    NetrServerGetInfo reports.
    """

    def __init__(
        self,
        shares: Callable[[], Iterable[Share]],
        *,
        server_name: str = "FERRY",
        comment: str = "",
        limits: RpcLimits | None = None,
    ) -> None:
        self._limits = limits or RpcLimits()
        self._assoc_groups = itertools.count(0x1000)
        srvsvc = SrvsvcInterface(shares, ServerInfo(server_name, comment))
        self.endpoints: dict[str, PipeEndpoint] = {
            SRVSVC_PIPE: lambda: RpcConnection(
                [srvsvc],
                secondary_address=f"\\PIPE\\{SRVSVC_PIPE}",
                assoc_group_id=next(self._assoc_groups),
                limits=self._limits,
            ),
        }
        self._waits: dict[int, list[asyncio.Future[None]]] = {}

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        request = op.request
        if isinstance(request, CreateRequest):
            return self._create(request)
        pipe = op.handle
        if not isinstance(pipe, PipeInstance):
            return FileResult(NTStatus.INVALID_HANDLE), None
        if isinstance(request, CloseRequest):
            pipe.close()
            times = PIPE_TIMES if request.flags & CLOSE_FLAG_POSTQUERY_ATTRIB else None
            return FileResult(NTStatus.SUCCESS, encode_close_response(request.flags, times)), None
        if pipe.closed:
            return FileResult(NTStatus.FILE_CLOSED), None
        try:
            if isinstance(request, WriteRequest):
                status = pipe.write(bytes(request.data))
                body = encode_write_response(len(request.data)) if status == NTStatus.SUCCESS else b""
                return FileResult(status, body), None
            if isinstance(request, ReadRequest):
                return await self._read(op, pipe, request), None
            if isinstance(request, IoctlRequest):
                return await self._transceive(op, pipe, request), None
            if isinstance(request, QueryInfoRequest):
                return self._query_info(pipe, request), None
        except Cancelled:
            return FileResult(NTStatus.CANCELLED), None
        return FileResult(NTStatus.INVALID_DEVICE_REQUEST), None

    def release(self, handle: object) -> None:
        if isinstance(handle, PipeInstance):
            handle.close()

    def cancel(self, op_id: int) -> None:
        """End the wait of a READ or transceive (the client sent CANCEL, or the connection is
        gone): it answers STATUS_CANCELLED. An operation that is not waiting just finishes."""
        # Op ids are numbered per connection while this service is server-wide: every wait with
        # this id ends (a READ ended too early is answered STATUS_CANCELLED; the client retries).
        for waiter in self._waits.pop(op_id, []):
            if not waiter.done():
                waiter.set_exception(Cancelled())

    def _create(self, request: CreateRequest) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        endpoint = self.endpoints.get(pipe_name(request.name))
        if endpoint is None:
            return FileResult(NTStatus.OBJECT_NAME_NOT_FOUND), None
        pipe = PipeInstance(pipe_name(request.name), endpoint())
        return FileResult(NTStatus.SUCCESS, handle=pipe), (FILE_OPENED, PIPE_TIMES)

    async def _wait_readable(self, op: FileOperation, pipe: PipeInstance) -> int | None:
        """Wait until the pipe has a message; the status to answer with if it never will."""
        while not pipe.messages:
            if pipe.closed:
                return STATUS_PIPE_BROKEN
            if pipe.rpc.closed:
                return STATUS_PIPE_DISCONNECTED
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waits.setdefault(op.op_id, []).append(waiter)
            readable: asyncio.Future[None] = asyncio.ensure_future(self._readable(pipe))
            try:
                await asyncio.wait([readable, waiter], return_when=asyncio.FIRST_COMPLETED)
            finally:
                readable.cancel()
                waiters = self._waits.get(op.op_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waits.pop(op.op_id, None)
            if waiter.done():
                waiter.result()  # raises Cancelled
        return None

    @staticmethod
    async def _readable(pipe: PipeInstance) -> None:
        await pipe.readable.wait()

    async def _read(self, op: FileOperation, pipe: PipeInstance, req: ReadRequest) -> FileResult:
        failed = await self._wait_readable(op, pipe)
        if failed is not None:
            return FileResult(failed)
        status, data = pipe.read_message(req.length)
        body = encode_read_response_head(len(data)) + data
        return FileResult(status, body)

    async def _transceive(self, op: FileOperation, pipe: PipeInstance, req: IoctlRequest) -> FileResult:
        """[MS-SMB2] 3.3.5.15.3: write the input, then read one message (up to
        MaxOutputResponse) into the IOCTL response; a pipe still holding unread data is busy."""
        if req.ctl_code != CtlCode.FSCTL_PIPE_TRANSCEIVE:
            return FileResult(NTStatus.INVALID_DEVICE_REQUEST)
        if pipe.messages:
            return FileResult(STATUS_PIPE_BUSY)
        status = pipe.write(req.input)
        if status != NTStatus.SUCCESS:
            return FileResult(status)
        failed = await self._wait_readable(op, pipe)
        if failed is not None:
            return FileResult(failed)
        status, data = pipe.read_message(req.max_output_response)
        return FileResult(status, encode_ioctl_response(req.ctl_code, req.file_id, data))

    def _query_info(self, pipe: PipeInstance, req: QueryInfoRequest) -> FileResult:
        if req.info_type != InfoType.FILE:
            return FileResult(NTStatus.NOT_SUPPORTED)
        if req.info_class == FileInfoClass.STANDARD:
            # A pipe is deleted when its last handle closes: Windows reports it delete-pending.
            data = FileStandardInformation(PIPE_BUFFER_SIZE, pipe.pending, 1, 1, 0).to_bytes()
        elif req.info_class == FileInfoClass.PIPE:
            data = _u32s(FILE_PIPE_MESSAGE_MODE, FILE_PIPE_QUEUE_OPERATION)
        elif req.info_class == _FILE_PIPE_LOCAL_INFORMATION:
            data = _u32s(
                FILE_PIPE_MESSAGE_TYPE, FILE_PIPE_FULL_DUPLEX, 1, 1, PIPE_BUFFER_SIZE, pipe.pending,
                PIPE_BUFFER_SIZE, 0, FILE_PIPE_CONNECTED_STATE, FILE_PIPE_SERVER_END,
            )  # fmt: skip
        else:
            return FileResult(NTStatus.INVALID_PARAMETER)
        if req.output_length < len(data):
            return FileResult(NTStatus.INFO_LENGTH_MISMATCH)
        return FileResult(NTStatus.SUCCESS, encode_output_buffer_response(data))


_FILE_PIPE_LOCAL_INFORMATION = 24


def _u32s(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


class DiskService(Protocol):
    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]: ...

    def release(self, handle: object) -> None: ...


class ShareRouter:
    """The server's file service: pipe shares to ``pipes``, every other share to ``disk``."""

    def __init__(self, disk: DiskService, pipes: PipeService) -> None:
        self.disk = disk
        self.pipes = pipes

    async def run(self, op: FileOperation) -> tuple[FileResult, tuple[int, FileTimes] | None]:
        if op.share.share_type == ShareType.PIPE:
            return await self.pipes.run(op)
        return await self.disk.run(op)

    def release(self, handle: object) -> None:
        if isinstance(handle, PipeInstance):
            self.pipes.release(handle)
        else:
            self.disk.release(handle)

    def cancel(self, op_id: int) -> None:
        """A client's CANCEL (or a lost connection): op ids are unique per connection, so both
        services are told; each stops the operation if it is one of its waiting ones."""
        self.pipes.cancel(op_id)
        cancel = getattr(self.disk, "cancel", None)
        if cancel is not None:
            cancel(op_id)
