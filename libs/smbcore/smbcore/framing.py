"""Direct TCP transport framing (MS-SMB2 2.1): a 4-byte big-endian length before each PDU.

The first byte must be zero (the 24-bit length of NetBIOS session service framing, which
Direct TCP keeps); a length above the configured maximum is refused before any of the
payload is buffered, so a peer cannot make us allocate more than ``max_pdu``.
"""

from __future__ import annotations

from .errors import RemoteProtocolError
from .ntstatus import NTStatus


class FrameDecoder:
    """Bytes in (:meth:`receive_data`), whole PDUs out (:meth:`next_pdu`), no I/O.

    PDUs are returned as ``memoryview`` slices of an internal buffer and stay valid until
    the next :meth:`receive_data` call; consumers that keep data longer copy it.
    """

    __slots__ = ("_buf", "_max_pdu", "_pos")

    def __init__(self, max_pdu: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_pdu = max_pdu

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        try:
            if self._pos:
                del self._buf[: self._pos]
            self._buf += data
        except BufferError:
            # A consumer still holds a view of an earlier PDU: leave that buffer to it.
            rest = bytearray(memoryview(self._buf)[self._pos :])
            rest += data
            self._buf = rest
        self._pos = 0

    def next_pdu(self) -> memoryview | None:
        """The next complete PDU, or None when more data is needed."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        if buf[pos] != 0:
            raise RemoteProtocolError(
                f"Direct TCP frame with non-zero first byte 0x{buf[pos]:02x}",
                NTStatus.INVALID_NETWORK_RESPONSE,
            )
        length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        if length > self._max_pdu:
            raise RemoteProtocolError(
                f"PDU of {length} bytes exceeds the maximum of {self._max_pdu}", NTStatus.INVALID_PARAMETER
            )
        if length == 0:
            raise RemoteProtocolError("empty Direct TCP frame", NTStatus.INVALID_PARAMETER)
        end = pos + 4 + length
        if len(buf) < end:
            return None
        self._pos = end
        return memoryview(buf)[pos + 4 : end]

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos


def frame_header(length: int) -> bytes:
    """The 4-byte prefix for a PDU of ``length`` bytes."""
    if not 0 < length < 1 << 24:
        raise ValueError(f"PDU length {length} out of range")
    return length.to_bytes(4, "big")
