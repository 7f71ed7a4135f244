"""``ferry smb``: addresses, the summary line and its JSON twin (a stable format other tools
parse), the password's sources, and the one-line messages of failures."""

from __future__ import annotations

import json
import re

import pytest
from ferry_cli.common import CliError
from ferry_cli.main import build_parser
from ferry_cli.smb import SmbAddress, describe, parse_address, password_from, report, summary_line
from smbcore.aio_multichannel import ChannelInfo
from smbcore.client_errors import (
    BadNetworkName,
    ConnectionLost,
    LogonFailure,
    SMBFileNotFoundError,
    SMBStatusError,
)
from smbcore.ntstatus import NTStatus
from smbcore.selection import Nic, NicAddress

#: What tests/support/multihost.py (the netns tests and the benchmark) match.
THEIR_PATTERN = re.compile(r"put (\d+) bytes in ([\d.]+) s, ([\d.]+) MB/s, (\d+) channels?")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("//fs1/data/dir/file.bin", SmbAddress("fs1", 445, "data", "dir/file.bin")),
        ("//fs1:4455/data", SmbAddress("fs1", 4455, "data", "")),
        ("//198.18.1.2/data/x", SmbAddress("198.18.1.2", 445, "data", "x")),
        ("//[fd00::2]:445/data/a/b", SmbAddress("fd00::2", 445, "data", "a/b")),
        ("//[::1]/data/", SmbAddress("::1", 445, "data", "")),
        ("\\\\fs1\\data\\dir\\f", SmbAddress("fs1", 445, "data", "dir/f")),
        ("//fs1//data///dir//", SmbAddress("fs1", 445, "data", "dir/")),  # a folder: put keeps the name
    ],
)
def test_addresses(text: str, expected: SmbAddress) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fs1/data", "starts with //"),
        ("//", "no host"),
        ("//fs1", "no share"),
        ("//fs1:/data", "bad port"),
        ("//fs1:99999/data", "bad port"),
        ("//[fd00::2/data", "IPv6"),
        ("//fs1/data/../etc", r"'\.\.'"),
    ],
)
def test_bad_addresses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_address(text)


def test_address_prints_back() -> None:
    assert str(SmbAddress("fd00::2", 4455, "data", "a/b")) == "//[fd00::2]:4455/data/a/b"
    assert str(SmbAddress("fs1", 445, "data", "")) == "//fs1/data"


CHANNELS = [
    ChannelInfo("198.18.1.1", "198.18.1.2", 40001, 445, "eth1", 10**10, 268435456),
    ChannelInfo("198.18.2.1", "198.18.2.2", 40002, 445, "eth2", 10**10, 268435456),
    ChannelInfo("fd00:1::1", "fd00:1::2", 40003, 445, "eth3", None, 0),
]


def test_the_summary_line_is_stable() -> None:
    line = summary_line("put", 536870912, 2.7134, CHANNELS[:2])
    assert line == (
        "put 536870912 bytes in 2.71 s, 197.9 MB/s, 2 channels: 198.18.1.1->198.18.1.2 198.18.2.1->198.18.2.2"
    )
    match = THEIR_PATTERN.match(line)
    assert match is not None and match.groups() == ("536870912", "2.71", "197.9", "2")
    one = summary_line("get", 10, 0.5, CHANNELS[2:])
    assert one == "get 10 bytes in 0.50 s, 0.0 MB/s, 1 channel: [fd00:1::1]->[fd00:1::2]"
    assert summary_line("rm", 0, 0.0, CHANNELS[:1]).startswith("rm 0 bytes in 0.00 s, 0.0 MB/s, 1 channel: ")


def test_the_json_report_says_the_same() -> None:
    data = report("put", 536870912, 2.7134, CHANNELS[:2], dialect="3.1.1")
    again = json.loads(json.dumps(data))
    assert again["command"] == "put" and again["bytes"] == 536870912
    assert again["seconds"] == 2.7134 and again["mb_per_s"] == pytest.approx(197.86, abs=0.01)
    assert again["channels"] == 2 and again["dialect"] == "3.1.1"
    assert again["channel_list"][0] == {
        "local": "198.18.1.1", "remote": "198.18.1.2", "local_port": 40001, "remote_port": 445,
        "interface": "eth1", "speed_bps": 10**10, "bytes": 268435456,
    }  # fmt: skip


def test_password_from_the_environment_or_a_prompt() -> None:
    assert password_from({"FERRY_SMB_PASSWORD": "s3cret"}, None) == "s3cret"
    assert password_from({"FERRY_SMB_PASSWORD": ""}, lambda _: "x") == ""  # set, even if empty
    assert password_from({}, lambda prompt: f"typed at {prompt!r}") == "typed at 'SMB password: '"
    with pytest.raises(CliError, match="FERRY_SMB_PASSWORD") as failed:
        password_from({}, None)
    assert failed.value.exit_code == 2


def test_failures_in_one_line() -> None:
    address = SmbAddress("fs1", 445, "data", "dir/f.bin")
    assert describe(LogonFailure(NTStatus.LOGON_FAILURE, "SESSION_SETUP"), address, "alice") == (
        "logon failed for 'alice' on fs1: wrong password or unknown user "
        "(SESSION_SETUP: STATUS_LOGON_FAILURE (0xC000006D))"
    )
    assert describe(BadNetworkName(NTStatus.BAD_NETWORK_NAME), address, "a") == "fs1 has no share 'data'"
    assert describe(SMBFileNotFoundError(NTStatus.OBJECT_NAME_NOT_FOUND), address, "a") == (
        "no such file or directory: //fs1/data/dir/f.bin"
    )
    lost = describe(ConnectionLost("cannot connect to fs1:445: Name or service not known"), address, "a")
    assert lost == "connection to fs1:445 failed: cannot connect to fs1:445: Name or service not known"
    assert "0xC0000022" in str(describe(SMBStatusError(0xC0000022, "CREATE"), address, "a"))
    assert describe(FileNotFoundError(2, "No such file or directory", "x.bin"), address, "a") == (
        "x.bin: No such file or directory"
    )
    assert describe(KeyError("a bug"), address, "a") is None  # not an SMB or I/O failure: a traceback


def test_the_parser_has_the_options() -> None:
    args = build_parser().parse_args(
        ["smb", "put", "f.bin", "//fs1/data/", "--user", "bob", "--max-channels", "8", "--encrypt", "--json"]
    )
    assert (args.smb_command, args.local, args.address, args.user) == ("put", "f.bin", "//fs1/data/", "bob")
    assert args.max_channels == 8 and args.encrypt and args.json and not args.no_multichannel
    with pytest.raises(SystemExit) as usage:
        build_parser().parse_args(["smb", "get", "//fs1/data/f", "--max-channels", "33"])
    assert usage.value.code == 2


def test_local_interfaces_become_nics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads this namespace's interfaces through ferry_hostnet's inventory model."""
    from ferry_cli import smb
    from ferry_hostnet.model import Address, Interface

    interface = Interface(
        name="eth1", ifindex=3, mac=None, mtu=1500, oper_state="up", admin_up=True, kind="veth",
        loopback=False, addresses=[Address(family=4, address="198.18.1.1", prefix_len=24, scope="global")],
        speed_bps=10**10, rx_queues=1, rss_capable=False, rdma=[], rdma_kind=None, pfc_enabled=None,
    )  # fmt: skip
    monkeypatch.setattr("ferry_hostnet.kernel.read_interfaces", lambda **_: [interface])
    assert smb.local_interfaces() == [
        Nic("eth1", 3, (NicAddress("198.18.1.1", 24),), 10**10, rss_capable=False, rx_queues=1)
    ]
