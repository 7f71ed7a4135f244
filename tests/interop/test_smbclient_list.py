"""Share browsing on Ferry's server: Samba's ``smbclient -L`` and ``rpcclient`` over the srvsvc
pipe (signed and encrypted), and the smbprotocol package driving the pipe by hand (WRITE/READ,
FSCTL_PIPE_TRANSCEIVE, a garbage PDU)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from smbcore.dcerpc import (
    NDR32,
    Bind,
    BindAck,
    ContextElement,
    Fault,
    FaultStatus,
    Request,
    decode_pdu,
    reassemble_response,
)
from smbcore.messages import ShareType
from smbcore.server import Share
from smbcore.srvsvc import IPC_REMARK, SRVSVC, ShareEnumRequest, ShareEnumResponse
from smbprotocol import exceptions as smbexc
from smbprotocol.connection import Connection
from smbprotocol.ioctl import CtlCode, IOCTLFlags, SMB2IOCTLRequest, SMB2IOCTLResponse
from smbprotocol.open import (
    CreateDisposition,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    ShareAccess,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tests.conftest import require_tool
from tests.support.smbserver import PASSWORD, USER, RunningServer, smb_server

SMBCLIENT = shutil.which("smbclient")
RPCCLIENT = shutil.which("rpcclient")
HIDDEN = "vm-migration-42$"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("smbclient-list")
    for name in ("data", "secret", "tools", "mig"):
        (root / name).mkdir()
    shares = {
        "data": Share("data", path=str(root / "data")),
        "IPC$": Share("IPC$", ShareType.PIPE),
        "secret": Share("secret", encrypt=True, path=str(root / "secret")),
        "tools$": Share("tools$", path=str(root / "tools")),
        HIDDEN: Share(HIDDEN, hidden=True, path=str(root / "mig")),
    }
    with smb_server(root, shares=shares) as running:
        yield running


def run(tool: str, *args: str) -> str:
    result = subprocess.run(
        [tool, *args, "-U", f"{USER}%{PASSWORD}", "--configfile=/dev/null"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "NT_STATUS" not in output and "WERR" not in output, output
    return output


def listing(output: str) -> dict[str, tuple[str, str]]:
    """smbclient -L's share table: name -> (type, comment)."""
    shares = {}
    for line in output.splitlines():
        if not line.startswith("\t") or line.strip().startswith(("Sharename", "---------")):
            continue
        name, kind, *comment = line.split(None, 2)
        shares[name] = (kind, comment[0] if comment else "")
    return shares


@pytest.mark.parametrize("protection", ["sign", "encrypt"])
def test_smbclient_lists_the_shares(server: RunningServer, protection: str) -> None:
    smbclient = require_tool(SMBCLIENT, "smbclient")
    out = run(
        smbclient, "-L", f"//{server.host}", "-p", str(server.port), "-m", "SMB3",
        f"--client-protection={protection}",
    )  # fmt: skip
    print(out)
    shares = listing(out)
    assert shares == {
        "data": ("Disk", ""),
        "IPC$": ("IPC", IPC_REMARK),
        "secret": ("Disk", ""),
        "tools$": ("Disk", ""),
    }
    assert HIDDEN not in out


def test_a_share_added_at_run_time_is_listed(server: RunningServer) -> None:
    smbclient = require_tool(SMBCLIENT, "smbclient")
    args = ("-L", f"//{server.host}", "-p", str(server.port), "-m", "SMB3")
    table = server.server.settings.shares
    server.loop.call_soon_threadsafe(table.__setitem__, "late", Share("late", path="/nonexistent"))
    try:
        assert "late" in listing(run(smbclient, *args))
    finally:
        server.loop.call_soon_threadsafe(table.pop, "late")
    assert "late" not in listing(run(smbclient, *args))


def test_rpcclient_server_and_share_info(server: RunningServer) -> None:
    rpcclient = require_tool(RPCCLIENT, "rpcclient")
    commands = "srvinfo; netsharegetinfo data 1; netshareenumall 1"
    protocols = ("--option=clientmaxprotocol=SMB3", "--option=clientminprotocol=SMB2")
    out = run(rpcclient, "-p", str(server.port), *protocols, "-c", commands, server.host)
    assert "FERRYTEST" in out and "platform_id     :\t500" in out
    assert "netname: data" in out and "netname: IPC$" in out and HIDDEN not in out


class RawPipe:
    """The srvsvc pipe driven by smbprotocol's low-level client."""

    def __init__(self, server: RunningServer, encrypt: bool) -> None:
        self.conn = Connection(uuid.uuid4(), server.host, server.port)
        self.conn.connect(timeout=10)
        self.session = Session(self.conn, USER, PASSWORD, require_encryption=encrypt)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\{server.host}\IPC$")
        self.tree.connect()

    def open(self) -> Open:
        pipe = Open(self.tree, "srvsvc")
        pipe.create(
            ImpersonationLevel.Impersonation,
            FilePipePrinterAccessMask.FILE_READ_DATA | FilePipePrinterAccessMask.FILE_WRITE_DATA,
            0, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE, CreateDisposition.FILE_OPEN, 0,
        )  # fmt: skip
        return pipe

    def transceive(self, pipe: Open, data: bytes, max_output: int = 4280) -> bytes:
        req = SMB2IOCTLRequest()
        req["ctl_code"] = CtlCode.FSCTL_PIPE_TRANSCEIVE
        req["file_id"] = pipe.file_id
        req["max_output_response"] = max_output
        req["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
        req["buffer"] = data
        request = self.conn.send(req, sid=self.session.session_id, tid=self.tree.tree_connect_id)
        resp = SMB2IOCTLResponse()
        resp.unpack(self.conn.receive(request)["data"].get_value())
        return bytes(resp["buffer"].get_value())

    def close(self) -> None:
        self.conn.disconnect(True)


@pytest.mark.parametrize("encrypt", [False, True], ids=["signed", "encrypted"])
def test_smbprotocol_drives_the_pipe(server: RunningServer, encrypt: bool) -> None:
    client = RawPipe(server, encrypt)
    try:
        pipe = client.open()
        bind = Bind(1, 4280, 4280, 0, (ContextElement(0, SRVSVC, (NDR32,)),)).encode()
        pipe.write(bind, 0)  # WRITE, then READ the bind_ack
        ack = decode_pdu(pipe.read(0, 4280))
        assert isinstance(ack, BindAck) and ack.results[0].transfer_syntax == NDR32
        answer = client.transceive(pipe, Request(2, 0, 15, ShareEnumRequest(1, "x").encode()).encode())
        resp = ShareEnumResponse.decode(reassemble_response([answer]))
        assert [e.name for e in resp.entries or ()] == ["data", "IPC$", "secret", "tools$"]
        # A garbage PDU: a protocol-error fault, then the pipe is disconnected.
        fault = decode_pdu(client.transceive(pipe, b"\x05\x00\x00\x03\x10\x00\x00\x00" + bytes(8) + b"junk"))
        assert isinstance(fault, Fault) and fault.status == FaultStatus.PROTO_ERROR
        with pytest.raises(smbexc.SMBResponseException) as info:
            client.transceive(pipe, bind)
        assert info.value.status == 0xC00000B0  # STATUS_PIPE_DISCONNECTED
        pipe.close()
        with pytest.raises(smbexc.SMBResponseException) as info:
            Open(client.tree, "winreg").create(
                ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.FILE_READ_DATA, 0,
                ShareAccess.FILE_SHARE_READ, CreateDisposition.FILE_OPEN, 0,
            )  # fmt: skip
        assert info.value.status == 0xC0000034  # STATUS_OBJECT_NAME_NOT_FOUND
        # The server and this session keep serving: a new pipe instance works.
        again = client.open()
        assert isinstance(decode_pdu(client.transceive(again, bind)), BindAck)
        again.close()
    finally:
        client.close()
    if SMBCLIENT is not None:
        assert "data" in listing(
            run(SMBCLIENT, "-L", f"//{server.host}", "-p", str(server.port), "-m", "SMB3")
        )


def test_path_of_shares_is_not_disclosed(server: RunningServer, tmp_path: Path) -> None:
    rpcclient = require_tool(RPCCLIENT, "rpcclient")
    result = subprocess.run(
        [rpcclient, "-p", str(server.port), "-U", f"{USER}%{PASSWORD}", "--configfile=/dev/null",
         "--option=clientmaxprotocol=SMB3", "-c", "netshareenumall 2; netsharegetinfo data 502", server.host],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "WERR_ACCESS_DENIED" in output
    assert str(tmp_path.parent) not in output and "path:" not in output
