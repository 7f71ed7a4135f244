"""Large buffers reused instead of allocated per message.

An 8 MiB READ body or received WRITE costs, when it is a fresh ``bytearray``, a memset of
8 MiB and, whenever malloc has given the memory back to the kernel in between, a page fault
per 4 KiB page (expensive on the VMs Ferry runs on). A :class:`BufferPool` keeps a few such
buffers and hands one out again once nothing refers to it any more.

"Nothing refers to it" is CPython's reference count: the pool's own list is the only holder
left (every ``memoryview`` of a ``bytearray`` keeps a reference to it, so a buffer still
being sent, signed, written to disk or parsed is never handed out again). The check needs
no release call from the taker, so a buffer can travel through the core and the transport
the way any ``bytearray`` does; ``tests/unit/test_smb_buffers.py`` pins the behaviour it
relies on. Sans-IO; thread-safe (file operations take buffers on worker threads).
"""

from __future__ import annotations

import sys
import threading

MiB = 1 << 20


class PoolBuffer(bytearray):
    """A buffer from a :class:`BufferPool`: its taker has it to itself until it drops it,
    so it may overwrite it (the server encrypts a READ's data in place). Its initial
    contents are whatever its last taker left: fill it before reading from it."""

    __slots__ = ()


class BufferPool:
    """Buffers of ``min_size`` bytes or more, kept for reuse up to ``max_bytes`` in all.

    :meth:`take` returns an idle kept buffer of exactly the size asked for, or a new one
    (kept if there is room, after dropping idle buffers of other sizes if need be). Smaller
    requests get a plain new ``bytearray``: malloc serves those well.
    """

    __slots__ = ("_buffers", "_guard", "max_bytes", "min_size")

    def __init__(self, *, max_bytes: int = 64 * MiB, min_size: int = 256 * 1024) -> None:
        if max_bytes < 0 or min_size < 1:
            raise ValueError("max_bytes must be 0 or more and min_size positive")
        self.max_bytes = max_bytes
        self.min_size = min_size
        self._buffers: list[PoolBuffer] = []
        self._guard = threading.Lock()

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes that nobody else holds (contents undefined, see
        :class:`PoolBuffer`); ``size`` below ``min_size`` gives a fresh zeroed ``bytearray``."""
        if size < self.min_size:
            return bytearray(size)
        with self._guard:
            buffers = self._buffers
            for index in range(len(buffers)):
                if len(buffers[index]) == size and self._idle(index):
                    return buffers[index]
            fresh = PoolBuffer(size)
            kept = sum(len(b) for b in buffers)
            index = len(buffers) - 1
            while kept + size > self.max_bytes and index >= 0:
                if self._idle(index):
                    kept -= len(buffers.pop(index))
                index -= 1
            if kept + size <= self.max_bytes:
                buffers.append(fresh)
            return fresh

    def _idle(self, index: int) -> bool:
        # Two references: the list's and getrefcount's own argument.
        return sys.getrefcount(self._buffers[index]) <= 2

    @property
    def kept_bytes(self) -> int:
        """Bytes the pool holds (idle or handed out)."""
        with self._guard:
            return sum(len(b) for b in self._buffers)
