"""Buffer reuse on the data path: the pool (a buffer comes back only once nothing refers to
it), the PDU reader taking its large buffers from a pool, and the server's sender (PDUs out
with sendmsg from the core's buffers, reading paused while too much waits)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from smbcore import aio_server
from smbcore.aio_server import ServerSettings, SMBServer, _Sender
from smbcore.buffers import BufferPool, PoolBuffer
from smbcore.pdureader import PDUReader
from smbcore.server import Share

KiB = 1024


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


# -- BufferPool ---------------------------------------------------------------------------------


def test_a_buffer_comes_back_once_dropped() -> None:
    pool = BufferPool(min_size=1)
    first = pool.take(100)
    assert isinstance(first, PoolBuffer) and len(first) == 100
    first_id = id(first)
    del first
    assert id(pool.take(100)) == first_id


def test_a_buffer_held_or_viewed_is_not_handed_out_again() -> None:
    pool = BufferPool(min_size=1)
    held = pool.take(100)
    other = pool.take(100)
    assert other is not held
    view = memoryview(held)[10:20]  # what the core and the sender keep: slices
    held_id = id(held)
    del held
    third = pool.take(100)
    assert id(third) != held_id and third is not other  # only viewed, still not free
    del view
    assert id(pool.take(100)) == held_id


def test_sizes_must_match_and_small_requests_are_not_pooled() -> None:
    pool = BufferPool(min_size=64)
    small = pool.take(10)
    assert type(small) is bytearray and small == bytes(10)
    big = pool.take(100)
    big_id = id(big)
    del big
    assert id(pool.take(200)) != big_id
    assert pool.kept_bytes == 300


def test_the_pool_stays_within_its_bytes() -> None:
    pool = BufferPool(max_bytes=250, min_size=1)
    a = pool.take(100)
    b = pool.take(100)
    c = pool.take(100)  # no room: handed out, not kept
    assert pool.kept_bytes == 200
    del a
    d = pool.take(150)  # drops the idle 100-byte buffer to make room
    assert pool.kept_bytes == 250
    assert len(b) == len(c) == 100 and len(d) == 150


def test_threads_never_share_a_buffer() -> None:
    pool = BufferPool(min_size=1)
    clashes: list[int] = []

    def work(tag: int) -> None:
        for _ in range(2000):
            buf = pool.take(64)
            buf[0] = tag
            if buf[0] != tag:
                clashes.append(tag)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not clashes


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BufferPool(max_bytes=-1)
    with pytest.raises(ValueError, match="min_size"):
        BufferPool(min_size=0)


# -- PDUReader with a pool --------------------------------------------------------------------


def feed(reader: PDUReader, data: bytes) -> list[memoryview]:
    out: list[memoryview] = []
    view = memoryview(data)
    while view:
        buf = reader.get_buffer()
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        reader.buffer_updated(n)
        view = view[n:]
        while (pdu := reader.next_pdu()) is not None:
            out.append(pdu)
    return out


def test_reader_reuses_a_large_buffer_once_the_pdu_is_dropped() -> None:
    pool = BufferPool(min_size=1)
    reader = PDUReader(1 << 20, staging=8 * KiB, direct_threshold=4 * KiB, buffers=pool)
    first_payload = bytes(range(256)) * 64  # 16 KiB: received in a buffer of its own
    (pdu,) = feed(reader, frame(first_payload))
    assert bytes(pdu) == first_payload
    first_buffer = pdu.obj
    assert isinstance(first_buffer, PoolBuffer)
    second_payload = b"\x5a" * len(first_payload)
    (held,) = feed(reader, frame(second_payload))  # the first PDU is still held: a new buffer
    assert held.obj is not first_buffer and bytes(pdu) == first_payload
    del pdu, first_buffer, held
    (third,) = feed(reader, frame(first_payload[::-1]))
    assert bytes(third) == first_payload[::-1]
    assert pool.kept_bytes == 2 * len(first_payload)


def test_reader_without_a_pool_is_unchanged() -> None:
    reader = PDUReader(1 << 20, staging=8 * KiB, direct_threshold=4 * KiB)
    payloads = [b"a" * 10, b"b" * 20 * KiB, b"c" * 5]
    got = feed(reader, b"".join(frame(p) for p in payloads))
    assert [bytes(p) for p in got] == payloads
    assert type(got[1].obj) is bytearray


# -- the server's sender ------------------------------------------------------------------------


class _Sink(asyncio.Protocol):
    pass


async def sender_pair(
    high: int, low: int
) -> tuple[_Sender, asyncio.Transport, socket.socket, list[str], list[OSError]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(_Sink, ours)
    assert isinstance(transport, asyncio.Transport)
    calls: list[str] = []
    errors: list[OSError] = []
    sender = _Sender(
        transport,
        high_water=high,
        low_water=low,
        pause=lambda: calls.append("pause"),
        resume=lambda: calls.append("resume"),
        failed=errors.append,
    )
    return sender, transport, theirs, calls, errors


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < size:
        chunk = await loop.sock_recv(sock, size - len(got))
        assert chunk
        got += chunk
    return bytes(got)


async def test_sender_frames_pdus_from_their_pieces_in_order() -> None:
    sender, transport, theirs, calls, errors = await sender_pair(1 << 30, 1 << 29)
    big = bytearray(b"\x01\x02\x03" * (3 << 20))  # more than the socket takes at once
    pdus: list[list[bytes | bytearray | memoryview]] = [
        [b"head", big, b""],
        [memoryview(b"xyz")[1:]],
    ]
    expected = frame(b"head" + bytes(big)) + frame(b"yz")
    sender.send(pdus)
    assert sender.queued > 0  # the rest waits, as views of `big`, not copies
    assert await read_exactly(theirs, len(expected)) == expected
    await asyncio.sleep(0)
    assert sender.queued == 0 and calls == [] and errors == []
    sender.close()
    transport.close()
    theirs.close()


async def test_sender_pauses_above_high_water_and_resumes_at_low_water() -> None:
    sender, transport, theirs, calls, errors = await sender_pair(high=1 << 20, low=64 * KiB)
    payload = b"p" * (4 << 20)
    sender.send([[payload]])
    assert calls == ["pause"]
    assert await read_exactly(theirs, 4 + len(payload)) == frame(payload)
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls == ["pause", "resume"] and errors == []
    sender.close()
    transport.close()
    theirs.close()


async def test_sender_runs_its_callback_once_everything_is_sent() -> None:
    sender, transport, theirs, _, _ = await sender_pair(1 << 30, 1 << 29)
    done: list[int] = []
    sender.when_sent(lambda: done.append(0))
    assert done == [0]  # nothing queued: at once
    payload = b"q" * (4 << 20)
    sender.send([[payload]])
    sender.when_sent(lambda: done.append(sender.queued))
    assert done == [0]
    await read_exactly(theirs, 4 + len(payload))
    for _ in range(10):
        await asyncio.sleep(0)
    assert done == [0, 0]
    sender.close()
    transport.close()
    theirs.close()


async def test_a_failed_send_is_reported_and_the_queue_dropped() -> None:
    sender, transport, theirs, _, errors = await sender_pair(1 << 30, 1 << 29)
    theirs.close()
    payload = b"r" * (4 << 20)
    for _ in range(20):
        if errors:
            break
        sender.send([[payload]])
        await asyncio.sleep(0.01)
    assert errors and isinstance(errors[0], OSError)
    assert sender.queued == 0
    transport.close()


async def test_a_connection_without_an_fd_for_its_sender_is_refused_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fd(*args: object, **kwargs: object) -> _Sender:
        raise OSError(24, "Too many open files")

    settings = ServerSettings(shares={"IPC$": Share("IPC$")}, authenticator_factory=object, initial_token=b"")  # type: ignore[arg-type]
    server = SMBServer(settings)
    ((_, port),) = await server.start("127.0.0.1", 0)
    try:
        monkeypatch.setattr(aio_server, "_Sender", no_fd)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        writer.close()
        assert not server.connections
    finally:
        await server.close()
