"""Direct TCP framing for a receiver that reads straight into its buffers (MS-SMB2 2.1).

:class:`~smbcore.framing.FrameDecoder` takes bytes the transport already read; this reader
instead tells the transport *where* to read (:meth:`PDUReader.get_buffer`, the shape of
``socket.recv_into`` and :class:`asyncio.BufferedProtocol`), so a large PDU (a READ response
of 8 MiB) goes from the kernel into a buffer of its own exactly once, and its data can be
handed to the application as a ``memoryview`` that no later receive overwrites.

Small PDUs share a fixed staging buffer and are copied out of it (cheap at that size). A PDU
larger than ``direct_threshold`` switches the reader to a buffer of the PDU's size: what
was staged is copied in, and the rest is received into place. Every PDU that
:meth:`PDUReader.next_pdu` returns belongs to the caller. With a
:class:`~smbcore.buffers.BufferPool`, those large buffers are taken from it, so once the
caller has dropped a PDU its buffer receives a later one (no fresh 8 MiB per WRITE).
Sans-IO: no sockets, no time.
"""

from __future__ import annotations

from .buffers import BufferPool
from .errors import RemoteProtocolError
from .ntstatus import NTStatus

#: Largest PDU Direct TCP framing can carry (a 24-bit length).
MAX_FRAME = (1 << 24) - 1


class PDUReader:
    """Bytes in through :meth:`get_buffer` / :meth:`buffer_updated`, PDUs out of :meth:`next_pdu`."""

    __slots__ = ("_big", "_buffers", "_direct", "_end", "_filled", "_max_pdu", "_stage", "_start")

    def __init__(
        self,
        max_pdu: int,
        *,
        staging: int = 256 * 1024,
        direct_threshold: int = 64 * 1024,
        buffers: BufferPool | None = None,
    ) -> None:
        if not 0 < max_pdu <= MAX_FRAME:
            raise ValueError(f"max_pdu must be in 1..{MAX_FRAME}")
        if direct_threshold < 1 or staging < direct_threshold + 4:
            raise ValueError("the staging buffer must hold a whole PDU of direct_threshold bytes")
        self._max_pdu = max_pdu
        self._direct = direct_threshold
        self._stage = bytearray(staging)
        self._start = 0  # first staged byte not yet returned
        self._end = 0  # one past the last staged byte
        self._big: bytearray | None = None  # the large PDU being received in place
        self._filled = 0
        self._buffers = buffers  # where the large PDUs' buffers come from (None: new ones)

    def get_buffer(self) -> memoryview:
        """Where the next receive should write (never empty)."""
        if self._big is not None:
            return memoryview(self._big)[self._filled :]
        if self._start and len(self._stage) - self._end < self._direct:
            pending = self._end - self._start
            self._stage[:pending] = self._stage[self._start : self._end]
            self._start, self._end = 0, pending
        return memoryview(self._stage)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`."""
        if nbytes <= 0:
            raise ValueError("buffer_updated needs a positive byte count")
        if self._big is not None:
            if self._filled + nbytes > len(self._big):
                raise ValueError("more bytes than the buffer had room for")
            self._filled += nbytes
        else:
            if self._end + nbytes > len(self._stage):
                raise ValueError("more bytes than the buffer had room for")
            self._end += nbytes

    @property
    def buffered(self) -> int:
        """Bytes received that are not part of a returned PDU (0 at a clean end of stream)."""
        big = (self._filled + 4) if self._big is not None else 0
        return big + self._end - self._start

    def next_pdu(self) -> memoryview | None:
        """The next complete PDU (the caller's to keep), or None when more data is needed."""
        if self._big is not None:
            if self._filled < len(self._big):
                return None
            pdu = memoryview(self._big)
            self._big, self._filled = None, 0
            return pdu
        available = self._end - self._start
        if available < 4:
            return None
        stage, start = self._stage, self._start
        if stage[start] != 0:
            raise RemoteProtocolError(
                f"Direct TCP frame with non-zero first byte 0x{stage[start]:02x}",
                NTStatus.INVALID_NETWORK_RESPONSE,
            )
        length = int.from_bytes(stage[start + 1 : start + 4], "big")
        if length == 0:
            raise RemoteProtocolError("empty Direct TCP frame", NTStatus.INVALID_NETWORK_RESPONSE)
        if length > self._max_pdu:
            raise RemoteProtocolError(
                f"PDU of {length} bytes exceeds the maximum of {self._max_pdu}",
                NTStatus.INVALID_NETWORK_RESPONSE,
            )
        if available - 4 >= length:
            self._start = start + 4 + length
            if self._start == self._end:
                self._start = self._end = 0
            with memoryview(stage) as view:
                return memoryview(bytes(view[start + 4 : start + 4 + length]))
        if length > self._direct:
            # Receive the rest of this PDU in place; it is the last thing staged.
            big = bytearray(length) if self._buffers is None else self._buffers.take(length)
            got = available - 4
            big[:got] = stage[start + 4 : self._end]
            self._big, self._filled = big, got
            self._start = self._end = 0
        return None
