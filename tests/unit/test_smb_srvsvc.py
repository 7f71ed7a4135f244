"""srvsvc (share list, share and server info) and the named pipes that carry it: Samba's
answers to Samba's rpcclient as golden vectors, the interface's rules, the pipe service's
message-mode reads, and hostile stubs."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbcore.dcerpc import (
    NDR32,
    Bind,
    BindAck,
    ContextElement,
    Fault,
    FaultStatus,
    NdrError,
    Request,
    Response,
    RpcFault,
    decode_pdu,
    reassemble_response,
)
from smbcore.fileinfo import FileInfoClass
from smbcore.fileops import (
    CloseRequest,
    CreateRequest,
    FileTimes,
    InfoType,
    QueryInfoRequest,
    ReadRequest,
    WriteRequest,
)
from smbcore.header import Command
from smbcore.ioctl import CtlCode, IoctlRequest, decode_ioctl_response
from smbcore.messages import ShareType
from smbcore.ntstatus import NTStatus
from smbcore.pipes import STATUS_PIPE_DISCONNECTED, PipeInstance, PipeService, ShareRouter, pipe_name
from smbcore.server import FileOperation, FileResult, Share
from smbcore.srvsvc import (
    IPC_REMARK,
    SRVSVC,
    Opnum,
    ServerGetInfoRequest,
    ServerGetInfoResponse,
    ServerInfo,
    ShareEnumRequest,
    ShareEnumResponse,
    ShareGetInfoRequest,
    ShareGetInfoResponse,
    ShareInfo,
    ShareTypeCode,
    SrvsvcInterface,
    WinError,
)

from tests.unit.test_smb_dcerpc import SAMBA_SHARE_ENUM, SMBCLIENT_SHARE_ENUM

# Captured from Samba 4.17's rpcclient against Samba 4.17's smbd (shares "data" with the
# comment "Data files" and "other"; server string "golden"): srvinfo, netshareenum 0 (opnum 36),
# netsharegetinfo data 1, netsharegetinfo nosuch 1, netsharegetinfo data 1005, netshareenumall 7.
SRVINFO_REQUEST = bytes.fromhex(
    "050000031000000044000000020000002c00000000001500000002000c00000000000000"
    "0c0000005c005c003100320037002e0030002e0030002e003100000065000000"
)
SRVINFO_RESPONSE = bytes.fromhex(
    "0500020310000000780000000200000060000000000000006500000004000200f4010000"
    "080002000600000001000000039a80000c0002000a000000000000000a00000046004500"
    "52005200590047004f004c004400000007000000000000000700000067006f006c006400"
    "65006e000000000000000000"
)
STICKY_0_REQUEST = bytes.fromhex(
    "050000031000000058000000040000004000000000002400000002000a00000000000000"
    "0a0000003100320037002e0030002e0030002e0031000000000000000000000004000200"
    "0000000000000000ffffffff00000000"
)
STICKY_0_RESPONSE = bytes.fromhex(
    "050002031000000074000000040000005c00000000000000000000000000000008000200"
    "020000000c00020002000000100002001400020005000000000000000500000064006100"
    "74006100000000000600000000000000060000006f007400680065007200000002000000"
    "0000000000000000"
)
GETINFO_1_REQUEST = bytes.fromhex(
    "050000031000000058000000060000004000000000001000000002000a00000000000000"
    "0a0000003100320037002e0030002e0030002e0031000000050000000000000005000000"
    "64006100740061000000000001000000"
)
GETINFO_1_RESPONSE = bytes.fromhex(
    "05000203100000006c000000060000005400000000000000010000000400020008000200"
    "000000000c0002000500000000000000050000006400610074006100000000000b000000"
    "000000000b00000044006100740061002000660069006c00650073000000000000000000"
)
GETINFO_UNKNOWN_REQUEST = bytes.fromhex(
    "05000003100000005c000000070000004400000000001000000002000a00000000000000"
    "0a0000003100320037002e0030002e0030002e0031000000070000000000000007000000"
    "6e006f0073007500630068000000000001000000"
)
GETINFO_UNKNOWN_RESPONSE = bytes.fromhex(
    "050002031000000024000000070000000c0000000000000001000000000000007b000000"
)
GETINFO_1005_REQUEST = bytes.fromhex(
    "0500000310000000580000000a0000004000000000001000000002000a00000000000000"
    "0a0000003100320037002e0030002e0030002e0031000000050000000000000005000000"
    "640061007400610000000000ed030000"
)
GETINFO_1005_RESPONSE = bytes.fromhex(
    "0500020310000000280000000a0000001000000000000000ed030000040002000000000000000000"
)
ENUM_7_REQUEST = bytes.fromhex(
    "05000003100000004c0000000c0000003400000000000f00000002000a00000000000000"
    "0a0000003100320037002e0030002e0030002e00310000000700000007000000ffffffff"
    "00000000"
)
ENUM_7_RESPONSE = bytes.fromhex(
    "05000203100000002c0000000c0000001400000000000000070000000700000000000000000000007c000000"
)


def stub(pdu: bytes) -> memoryview:
    decoded = decode_pdu(pdu)
    assert isinstance(decoded, Request | Response)
    return memoryview(decoded.stub)


SHARES = [
    Share("data", path="/srv/data"),
    Share("IPC$", ShareType.PIPE),
    Share("vm-migration-7$", hidden=True, path="/srv/mig"),
    Share("tools$", path="/srv/tools"),
    Share("printer", ShareType.PRINT),
]


def srvsvc(shares: list[Share] | None = None) -> SrvsvcInterface:
    table = SHARES if shares is None else shares
    return SrvsvcInterface(lambda: table, ServerInfo("FERRYTEST", "a comment"))


# -- golden vectors ------------------------------------------------------------------------------


def test_smbclient_share_enum_golden_both_ways() -> None:
    req = ShareEnumRequest.decode(stub(SMBCLIENT_SHARE_ENUM))
    assert req == ShareEnumRequest(1, "127.0.0.1", 0xFFFFFFFF, 0)
    assert req.encode() == bytes(stub(SMBCLIENT_SHARE_ENUM))
    resp = ShareEnumResponse.decode(stub(SAMBA_SHARE_ENUM))
    entries = (
        ShareInfo("data", 0, "Data files"),
        ShareInfo("other", 0, ""),
        ShareInfo("IPC$", 0x80000003, "IPC Service (golden)"),
    )
    assert resp == ShareEnumResponse(1, entries, 3, 0, 0)
    assert resp.encode(first_referent=0x2000C) == bytes(stub(SAMBA_SHARE_ENUM))  # Samba's referent ids


def test_server_get_info_golden_both_ways() -> None:
    req = ServerGetInfoRequest.decode(stub(SRVINFO_REQUEST))
    assert req == ServerGetInfoRequest(101, "\\\\127.0.0.1")
    assert req.encode() == bytes(stub(SRVINFO_REQUEST))
    resp = ServerGetInfoResponse.decode(stub(SRVINFO_RESPONSE))
    assert resp == ServerGetInfoResponse(101, ServerInfo("FERRYGOLD", "golden", 500, 6, 1, 0x809A03))
    assert resp.encode(first_referent=0x20004) == bytes(stub(SRVINFO_RESPONSE))


def test_share_get_info_golden_both_ways() -> None:
    req = ShareGetInfoRequest.decode(stub(GETINFO_1_REQUEST))
    assert req == ShareGetInfoRequest("data", 1, "127.0.0.1")
    assert req.encode() == bytes(stub(GETINFO_1_REQUEST))
    resp = ShareGetInfoResponse.decode(stub(GETINFO_1_RESPONSE))
    assert resp == ShareGetInfoResponse(1, ShareInfo("data", 0, "Data files"))
    assert resp.encode(first_referent=0x20004) == bytes(stub(GETINFO_1_RESPONSE))
    flags = ShareGetInfoResponse.decode(stub(GETINFO_1005_RESPONSE))
    assert flags == ShareGetInfoResponse(1005, ShareInfo("", flags=0))
    assert flags.encode(first_referent=0x20004) == bytes(stub(GETINFO_1005_RESPONSE))
    assert ShareGetInfoRequest.decode(stub(GETINFO_1005_REQUEST)).level == 1005
    # Samba answers an unknown name with ERROR_INVALID_NAME; [MS-SRVS] (and Ferry) NERR_NetNameNotFound.
    assert ShareGetInfoRequest.decode(stub(GETINFO_UNKNOWN_REQUEST)).net_name == "nosuch"
    assert ShareGetInfoResponse.decode(stub(GETINFO_UNKNOWN_RESPONSE)) == ShareGetInfoResponse(1, None, 123)
    assert ShareGetInfoResponse(1, None, 123).encode() == bytes(stub(GETINFO_UNKNOWN_RESPONSE))


def test_sticky_enum_and_unknown_level_golden_both_ways() -> None:
    req = ShareEnumRequest.decode(stub(STICKY_0_REQUEST))
    assert req == ShareEnumRequest(0, "127.0.0.1", 0xFFFFFFFF, None)
    assert req.encode() == bytes(stub(STICKY_0_REQUEST))
    resp = ShareEnumResponse.decode(stub(STICKY_0_RESPONSE))
    assert resp == ShareEnumResponse(0, (ShareInfo("data"), ShareInfo("other")), 2, None)
    assert resp.encode(first_referent=0x20008) == bytes(stub(STICKY_0_RESPONSE))
    req = ShareEnumRequest.decode(stub(ENUM_7_REQUEST))
    assert req == ShareEnumRequest(7, "127.0.0.1", 0xFFFFFFFF, None)
    resp = ShareEnumResponse.decode(stub(ENUM_7_RESPONSE))
    assert resp == ShareEnumResponse(7, None, 0, None, WinError.INVALID_LEVEL)
    assert resp.encode() == bytes(stub(ENUM_7_RESPONSE))
    assert srvsvc().call(Opnum.NETR_SHARE_ENUM, stub(ENUM_7_REQUEST)) == bytes(stub(ENUM_7_RESPONSE))


# -- the interface -------------------------------------------------------------------------------


def enum(
    iface: SrvsvcInterface, req: ShareEnumRequest, opnum: int = Opnum.NETR_SHARE_ENUM
) -> ShareEnumResponse:
    return ShareEnumResponse.decode(iface.call(opnum, memoryview(req.encode())))


def test_enum_lists_all_but_hidden_shares_with_types() -> None:
    resp = enum(srvsvc(), ShareEnumRequest(1))
    assert resp.status == WinError.SUCCESS
    assert resp.entries == (
        ShareInfo("data", ShareTypeCode.DISKTREE, ""),
        ShareInfo("IPC$", ShareTypeCode.IPC | ShareTypeCode.SPECIAL, IPC_REMARK),
        ShareInfo("tools$", ShareTypeCode.SPECIAL, ""),
        ShareInfo("printer", ShareTypeCode.PRINTQ, ""),
    )
    assert resp.total_entries == 4
    sticky = enum(srvsvc(), ShareEnumRequest(0), Opnum.NETR_SHARE_ENUM_STICKY)
    assert [e.name for e in sticky.entries or ()] == ["data", "printer"]
    info501 = enum(srvsvc(), ShareEnumRequest(501))
    assert info501.entries is not None and info501.entries[0] == ShareInfo("data", 0, "", 0)


def test_the_share_list_is_live() -> None:
    table = [Share("data")]
    iface = srvsvc(table)
    assert [e.name for e in enum(iface, ShareEnumRequest(0)).entries or ()] == ["data"]
    table.append(Share("later"))
    table.pop(0)
    assert [e.name for e in enum(iface, ShareEnumRequest(0)).entries or ()] == ["later"]


def test_small_preferred_length_pages_with_the_resume_handle() -> None:
    iface = srvsvc([Share(f"share{i:02}") for i in range(10)])
    names: list[str] = []
    resume: int | None = 0
    calls = 0
    while True:
        resp = enum(iface, ShareEnumRequest(1, preferred_maximum_length=100, resume_handle=resume))
        calls += 1
        assert resp.total_entries == 10
        names += [e.name for e in resp.entries or ()]
        if resp.status == WinError.SUCCESS:
            assert resp.resume_handle == 0
            break
        assert resp.status == WinError.MORE_DATA and resp.resume_handle
        resume = resp.resume_handle
    assert names == [f"share{i:02}" for i in range(10)]
    assert calls > 2
    tiny = enum(iface, ShareEnumRequest(1, preferred_maximum_length=1, resume_handle=None))
    assert len(tiny.entries or ()) == 1 and tiny.status == WinError.MORE_DATA and tiny.resume_handle is None


@pytest.mark.parametrize(
    ("level", "status"),
    [
        (2, WinError.ACCESS_DENIED),
        (502, WinError.ACCESS_DENIED),
        (503, WinError.INVALID_LEVEL),
        (9, WinError.INVALID_LEVEL),
    ],
)
def test_enum_levels_not_served(level: int, status: int) -> None:
    resp = enum(srvsvc(), ShareEnumRequest(level))
    assert resp.status == status and not resp.entries


def test_get_info() -> None:
    iface = srvsvc()

    def get(name: str, level: int) -> ShareGetInfoResponse:
        req = ShareGetInfoRequest(name, level)
        return ShareGetInfoResponse.decode(iface.call(Opnum.NETR_SHARE_GET_INFO, memoryview(req.encode())))

    assert get("DATA", 1) == ShareGetInfoResponse(1, ShareInfo("data", 0, ""))
    assert get("ipc$", 0) == ShareGetInfoResponse(0, ShareInfo("IPC$"))
    assert get("vm-migration-7$", 1).status == WinError.NET_NAME_NOT_FOUND  # hidden: not found
    assert get("nothing", 1).status == WinError.NET_NAME_NOT_FOUND
    assert get("data", 2).status == WinError.ACCESS_DENIED
    assert get("data", 1501).status == WinError.INVALID_LEVEL
    assert get("data", 7777) == ShareGetInfoResponse(7777, None, WinError.INVALID_LEVEL)
    assert get("data", 1005) == ShareGetInfoResponse(1005, ShareInfo("", flags=0))


def test_server_get_info() -> None:
    iface = srvsvc()
    for level in (100, 101):
        raw = iface.call(Opnum.NETR_SERVER_GET_INFO, memoryview(ServerGetInfoRequest(level).encode()))
        info = ServerGetInfoResponse.decode(raw).info
        assert info is not None and info.name == "FERRYTEST"
    raw = iface.call(Opnum.NETR_SERVER_GET_INFO, memoryview(ServerGetInfoRequest(102).encode()))
    assert ServerGetInfoResponse.decode(raw) == ServerGetInfoResponse(102, None, WinError.INVALID_LEVEL)


def test_unknown_opnum_and_bad_stub_fault() -> None:
    with pytest.raises(RpcFault) as info:
        srvsvc().call(14, memoryview(b""))
    assert info.value.fault == FaultStatus.OP_RNG_ERROR
    with pytest.raises(NdrError):
        srvsvc().call(Opnum.NETR_SHARE_ENUM, memoryview(b"\x00\x00\x02\x00"))
    mismatch = bytearray(ShareEnumRequest(1).encode())
    mismatch[4:8] = (2).to_bytes(4, "little")  # Level 1, discriminant 2
    with pytest.raises(NdrError, match="discriminant"):
        srvsvc().call(Opnum.NETR_SHARE_ENUM, memoryview(bytes(mismatch)))


@given(st.binary(max_size=200), st.sampled_from([15, 16, 21, 36, 99]))
def test_arbitrary_stubs_answer_or_fault(data: bytes, opnum: int) -> None:
    with contextlib.suppress(RpcFault):
        srvsvc().call(opnum, memoryview(data))


@given(st.binary(max_size=200))
def test_arbitrary_response_stubs_decode_or_raise_ndr_error(data: bytes) -> None:
    for decoder in (ShareEnumResponse.decode, ShareGetInfoResponse.decode, ServerGetInfoResponse.decode):
        with contextlib.suppress(NdrError):
            decoder(data)


names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
share_infos = st.builds(ShareInfo, names, st.integers(0, 2**32 - 1), names, st.integers(0, 2**32 - 1))


@given(
    st.sampled_from([0, 1, 501]),
    st.lists(share_infos, max_size=6),
    st.none() | st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_share_enum_response_round_trip(
    level: int, infos: list[ShareInfo], resume: int | None, status: int
) -> None:
    keep = {
        0: lambda i: ShareInfo(i.name),
        1: lambda i: ShareInfo(i.name, i.type, i.remark),
        501: lambda i: i,
    }
    entries = tuple(keep[level](i) for i in infos)
    resp = ShareEnumResponse(level, entries, len(entries), resume, status)
    assert ShareEnumResponse.decode(resp.encode()) == resp


@given(names, st.integers(0, 2**32 - 1), st.none() | names)
def test_requests_round_trip(name: str, level: int, server: str | None) -> None:
    for req in (
        ShareEnumRequest(level, server),
        ShareGetInfoRequest(name, level, server),
        ServerGetInfoRequest(level, server),
    ):
        assert type(req).decode(req.encode()) == req


# -- named pipes ---------------------------------------------------------------------------------

IPC = Share("IPC$", ShareType.PIPE)
FID = bytes(16)


class Ops:
    """FileOperations for the pipe service, as the core would send them."""

    def __init__(self) -> None:
        self.next_id = 0

    def op(self, command: Command, request: object, handle: object = None) -> FileOperation:
        self.next_id += 1
        return FileOperation(
            self.next_id, command, request, IPC, "alice", handle, None if handle is None else FID
        )  # type: ignore[arg-type]


def create(name: str) -> CreateRequest:
    return CreateRequest(0x0012019F, 0, 7, 1, 0, name)


@pytest.mark.parametrize("name", ["srvsvc", "SRVSVC", "\\srvsvc", "PIPE\\srvsvc", "\\pipe\\SrvSvc"])
def test_pipe_names(name: str) -> None:
    assert pipe_name(name) == "srvsvc"


async def open_pipe(service: PipeService, ops: Ops, name: str = "srvsvc") -> PipeInstance:
    result, create_info = await service.run(ops.op(Command.CREATE, create(name)))
    assert result.status == NTStatus.SUCCESS and isinstance(result.handle, PipeInstance)
    assert create_info is not None and isinstance(create_info[1], FileTimes)
    return result.handle


async def transceive(
    service: PipeService, ops: Ops, pipe: PipeInstance, data: bytes, max_out: int = 4280
) -> tuple[int, bytes]:
    req = IoctlRequest(CtlCode.FSCTL_PIPE_TRANSCEIVE, FID, data, max_out)
    result, _ = await service.run(ops.op(Command.IOCTL, req, pipe))
    if result.status not in (NTStatus.SUCCESS, NTStatus.BUFFER_OVERFLOW):
        return result.status, b""
    return result.status, decode_ioctl_response(bytes(64) + bytes(result.body))[1]


async def read(service: PipeService, ops: Ops, pipe: PipeInstance, length: int = 4280) -> FileResult:
    result, _ = await service.run(ops.op(Command.READ, ReadRequest(length=length, file_id=FID), pipe))
    return result


def read_data(result: FileResult) -> bytes:
    return bytes(result.body[16:])


async def test_unknown_pipe_is_not_found() -> None:
    service = PipeService(lambda: SHARES)
    result, info = await service.run(Ops().op(Command.CREATE, create("winreg")))
    assert (result.status, info) == (NTStatus.OBJECT_NAME_NOT_FOUND, None)


async def test_share_list_over_a_pipe_with_overflow_and_read() -> None:
    service = PipeService(lambda: [Share(f"share-with-a-long-name-{i:03}") for i in range(100)] + SHARES)
    ops = Ops()
    pipe = await open_pipe(service, ops)
    status, ack = await transceive(
        service, ops, pipe, Bind(1, 4280, 4280, 0, (ContextElement(0, SRVSVC, (NDR32,)),)).encode()
    )
    assert status == NTStatus.SUCCESS and isinstance(decode_pdu(ack), BindAck)
    # A small MaxOutputResponse: the first fragment comes in parts, then READs get the rest.
    status, first = await transceive(
        service, ops, pipe, Request(2, 0, 15, ShareEnumRequest(1).encode()).encode(), 1000
    )
    assert status == NTStatus.BUFFER_OVERFLOW and len(first) == 1000
    fragments = [first]
    while True:
        result = await read(service, ops, pipe, 1000)
        assert result.status in (NTStatus.SUCCESS, NTStatus.BUFFER_OVERFLOW)
        fragments[-1] += read_data(result)
        if result.status == NTStatus.SUCCESS:
            if decode_pdu(fragments[-1]).flags & 0x02:  # type: ignore[union-attr]
                break
            fragments.append(b"")
    assert len(fragments) > 1  # the answer spans several fragments of at most 4280 bytes
    assert all(len(f) <= 4280 for f in fragments)
    resp = ShareEnumResponse.decode(reassemble_response(fragments))
    assert resp.total_entries == 104 and len(resp.entries or ()) == 104
    # WRITE then READ works as well as the transceive.
    result, _ = await service.run(
        ops.op(
            Command.WRITE,
            WriteRequest(
                0, FID, memoryview(Request(3, 0, 16, ShareGetInfoRequest("data", 1).encode()).encode())
            ),
            pipe,
        )
    )
    assert result.status == NTStatus.SUCCESS
    answer = read_data(await read(service, ops, pipe))
    assert ShareGetInfoResponse.decode(reassemble_response([answer])).info == ShareInfo("data", 0, "")
    result, _ = await service.run(
        ops.op(Command.QUERY_INFO, QueryInfoRequest(InfoType.FILE, FileInfoClass.STANDARD, 24, FID), pipe)
    )
    assert result.status == NTStatus.SUCCESS
    result, _ = await service.run(ops.op(Command.CLOSE, CloseRequest(file_id=FID), pipe))
    assert result.status == NTStatus.SUCCESS and pipe.closed


async def test_garbage_gets_a_fault_then_the_pipe_is_disconnected() -> None:
    service = PipeService(lambda: SHARES)
    ops = Ops()
    pipe = await open_pipe(service, ops)
    await transceive(
        service, ops, pipe, Bind(1, 4280, 4280, 0, (ContextElement(0, SRVSVC, (NDR32,)),)).encode()
    )
    status, answer = await transceive(service, ops, pipe, b"\x05\x00\x00\x03" + bytes(12) + b"garbage!")
    fault = decode_pdu(answer)
    assert status == NTStatus.SUCCESS and isinstance(fault, Fault) and fault.status == FaultStatus.PROTO_ERROR
    assert (await transceive(service, ops, pipe, b"more"))[0] == STATUS_PIPE_DISCONNECTED
    assert (await read(service, ops, pipe)).status == STATUS_PIPE_DISCONNECTED
    # Another pipe instance is unaffected.
    other = await open_pipe(service, ops)
    status, ack = await transceive(
        service, ops, other, Bind(1, 4280, 4280, 0, (ContextElement(0, SRVSVC, (NDR32,)),)).encode()
    )
    assert isinstance(decode_pdu(ack), BindAck)


async def test_read_with_nothing_to_read_waits_until_cancelled_or_closed() -> None:
    service = PipeService(lambda: SHARES)
    router = ShareRouter(disk=service, pipes=service)
    ops = Ops()
    pipe = await open_pipe(service, ops)
    op = ops.op(Command.READ, ReadRequest(length=100, file_id=FID), pipe)
    waiting = asyncio.create_task(service.run(op))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    router.cancel(op.op_id)
    result, _ = await asyncio.wait_for(waiting, 5)
    assert result.status == NTStatus.CANCELLED
    # A write on the same pipe satisfies a waiting read.
    waiting = asyncio.create_task(read(service, ops, pipe, 4280))
    await asyncio.sleep(0.01)
    bind = Bind(1, 4280, 4280, 0, (ContextElement(0, SRVSVC, (NDR32,)),)).encode()
    await service.run(ops.op(Command.WRITE, WriteRequest(0, FID, memoryview(bind)), pipe))
    assert isinstance(decode_pdu(read_data(await asyncio.wait_for(waiting, 5))), BindAck)
    # Releasing the pipe (the connection went) ends a wait.
    waiting = asyncio.create_task(read(service, ops, pipe))
    await asyncio.sleep(0.01)
    router.release(pipe)
    assert (await asyncio.wait_for(waiting, 5)).status != NTStatus.SUCCESS
