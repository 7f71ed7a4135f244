"""Streaming over an :class:`~smbcore.aio_client.SMBFile`: a writer a producer feeds with
back-pressure, and whole-file copies that keep the connection busy in bounded memory.

:class:`FileWriter` is what a migration stream writes into. ``await writer.write(chunk)``
returns as soon as the chunk is on its way and waits while the connection's byte window is
full, so a fast producer is slowed to the network's pace and memory stays bounded. Chunks
of at least a request's size go out from the producer's own memory (keep them unchanged
until :meth:`FileWriter.flush`, or pass ``bytes``); smaller ones are gathered into the
writer's reusable buffers. A producer that can read straight into memory (a socket's
``recv_into``, a file's ``readinto``) asks for a buffer with :meth:`FileWriter.get_buffer`
and hands it back with :meth:`FileWriter.commit`: nothing is copied at all.

A failed WRITE is reported by the next call (``write``, ``commit``, ``flush`` or leaving the
``async with``), as the exception the request failed with.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .aio_client import SMBFile, SMBTree
from .client import Response
from .wire import Buffer

__all__ = ["FileWriter", "copy_from_share", "copy_to_share"]

#: ``progress(done, total)``: bytes confirmed so far (never decreasing) and the total.
Progress = Callable[[int, int], None]


class FileWriter:
    """Writes to ``file`` from ``offset`` on, sequentially (or wherever :meth:`seek` says).

    ``buffer_size`` (default: the session's write size) is the size of each WRITE built from
    small chunks; ``buffers`` bounds how many such buffers exist (default: enough to fill the
    session's window). ``progress(done)`` is called with the bytes the server has confirmed.
    With several channels the WRITEs are spread over them; one whose channel fails is
    replayed on another with the same data, so a buffer is reused only once its WRITE is
    confirmed.
    """

    def __init__(
        self,
        file: SMBFile,
        offset: int = 0,
        *,
        buffer_size: int | None = None,
        buffers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        session = file.session
        self.file = file
        self.position = offset
        self._chunk = min(buffer_size or session.max_write, session.max_write)
        self._max_buffers = buffers or max(2, session.window.size // self._chunk + 1)
        self._free: list[bytearray] = []
        self._made = 0
        self._buffer_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._fill: bytearray | None = None
        self._fill_len = 0
        self._fill_at = 0
        self._lent: bytearray | None = None
        self._inflight: set[asyncio.Future[Response]] = set()
        self._error: BaseException | None = None
        self._progress = progress
        #: Bytes the server has confirmed written.
        self.acknowledged = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.flush()
        else:
            await self._drain()  # settle what is in flight; the original error wins

    # -- feeding ---------------------------------------------------------------------------------

    async def write(self, data: Buffer) -> None:
        """Append ``data`` at :attr:`position`; returns once it is in flight (or buffered)."""
        self._raise_error()
        view = memoryview(data).cast("B")
        chunk = self._chunk
        while view:
            if self._fill_len == 0 and len(view) >= chunk:
                piece = view[:chunk]
                await self._send(self.position, piece, None)
            else:
                if self._fill is None:
                    self._fill = await self._take_buffer()
                    self._fill_at = self.position
                n = min(len(view), chunk - self._fill_len)
                piece = view[:n]
                self._fill[self._fill_len : self._fill_len + n] = piece
                self._fill_len += n
                if self._fill_len == chunk:
                    await self._submit_fill()
            self.position += len(piece)
            view = view[len(piece) :]

    async def seek(self, offset: int) -> None:
        """Continue at ``offset`` (a mirror writes where the guest wrote)."""
        if offset != self.position:
            await self._submit_fill()
            self.position = offset

    async def write_at(self, offset: int, data: Buffer) -> None:
        await self.seek(offset)
        await self.write(data)

    async def get_buffer(self) -> memoryview:
        """A buffer of up to one request's size to fill in place; give it back with :meth:`commit`.
        Waits while every buffer is in flight (that is the back-pressure)."""
        self._raise_error()
        if self._lent is not None:
            raise RuntimeError("commit() the previous buffer first")
        await self._submit_fill()
        self._lent = await self._take_buffer()
        return memoryview(self._lent)

    async def commit(self, nbytes: int) -> None:
        """Send the first ``nbytes`` of the buffer from :meth:`get_buffer` at :attr:`position`."""
        buffer, self._lent = self._lent, None
        if buffer is None:
            raise RuntimeError("commit() without get_buffer()")
        if not 0 <= nbytes <= len(buffer):
            self._give_back(buffer)
            raise ValueError(f"{nbytes} bytes committed from a buffer of {len(buffer)}")
        if nbytes == 0:
            self._give_back(buffer)
            return
        try:
            await self._send(self.position, memoryview(buffer)[:nbytes], buffer)
        except BaseException:
            self._give_back(buffer)
            raise
        self.position += nbytes

    async def flush(self) -> None:
        """Send what is gathered and wait until the server has confirmed everything."""
        await self._submit_fill()
        await self._drain()
        self._raise_error()

    # -- internals -------------------------------------------------------------------------------

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _drain(self) -> None:
        if self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _submit_fill(self) -> None:
        fill, n = self._fill, self._fill_len
        if fill is None:
            return
        self._fill, self._fill_len = None, 0
        if n == 0:
            self._give_back(fill)
            return
        try:
            await self._send(self._fill_at, memoryview(fill)[:n], fill)
        except BaseException:
            self._give_back(fill)
            raise

    async def _send(self, offset: int, data: memoryview, buffer: bytearray | None) -> None:
        self._raise_error()
        future = await self.file.start_write(offset, data)
        self._inflight.add(future)
        size = len(data)
        future.add_done_callback(lambda f: self._done(f, size, buffer))

    def _done(self, future: asyncio.Future[Response], size: int, buffer: bytearray | None) -> None:
        self._inflight.discard(future)
        if buffer is not None:
            self._give_back(buffer)
        try:
            self.file.written(future.result(), size)
        except BaseException as exc:  # the WRITE failed: reported by the next call
            if self._error is None:
                self._error = exc
            return
        self.acknowledged += size
        if self._progress is not None:
            self._progress(self.acknowledged)

    async def _take_buffer(self) -> bytearray:
        while True:
            if self._free:
                return self._free.pop()
            if self._made < self._max_buffers:
                self._made += 1
                return bytearray(self._chunk)
            waiter = asyncio.get_running_loop().create_future()
            self._buffer_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._buffer_waiters:
                    self._buffer_waiters.remove(waiter)
            self._raise_error()

    def _give_back(self, buffer: bytearray) -> None:
        self._free.append(buffer)
        while self._buffer_waiters:
            waiter = self._buffer_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


# -- whole files -----------------------------------------------------------------------------------


async def copy_to_share(
    local_path: str | os.PathLike[str], tree: SMBTree, remote_path: str, *, progress: Progress | None = None
) -> int:
    """Copy a local file to ``remote_path`` on the share (replacing it); returns its size.

    The local file is read in a worker thread straight into the writer's buffers, which go
    out as WRITEs with no further copy; the window keeps the connection full and bounds what
    is held in memory.
    """
    loop = asyncio.get_running_loop()
    fd = os.open(local_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        total = os.fstat(fd).st_size
        report = (lambda done: progress(done, total)) if progress is not None else None
        async with await tree.open(remote_path, "w") as remote, remote.writer(progress=report) as writer:
            offset = 0
            while True:
                buffer = await writer.get_buffer()
                n = await loop.run_in_executor(None, os.preadv, fd, [buffer], offset)
                await writer.commit(n)
                if not n:
                    break
                offset += n
            await writer.flush()
            return writer.acknowledged
    finally:
        os.close(fd)


async def copy_from_share(
    tree: SMBTree, remote_path: str, local_path: str | os.PathLike[str], *, progress: Progress | None = None
) -> int:
    """Copy ``remote_path`` from the share to a local file (replacing it); returns its size.

    READs run ahead as far as the window allows; each chunk is written to the local file in a
    worker thread from the received buffer, then its window space is freed.
    """
    loop = asyncio.get_running_loop()
    fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        async with await tree.open(remote_path, "r") as remote:
            total = remote.size
            done = 0
            async for offset, data in remote.chunks(0, total):
                await loop.run_in_executor(None, _pwrite_all, fd, data, offset)
                done += len(data)
                if progress is not None:
                    progress(done, total)
            return done
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
