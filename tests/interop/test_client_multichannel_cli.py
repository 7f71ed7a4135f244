"""``ferry smb ls|get|put|rm`` as a user runs it, against Ferry's server and Samba's smbd on
loopback (both advertising 127.0.0.1 and ::1 for Multichannel): the summary line other tools
parse, its JSON twin, what lands on the server, and the exit codes and one-line messages of
the usual mistakes.

The kernel's loopback is one interface, so the plan has one channel here; several channels
through the CLI need several interfaces (tests/integration/test_multichannel_netns.py runs it
between network namespaces joined by shaped links).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo

from tests.support.samba import samba_server
from tests.support.smbserver import PASSWORD, USER, smb_server

FERRY = Path(sys.executable).parent / "ferry"
SUMMARY = re.compile(
    r"^(ls|get|put|rm) (\d+) bytes in (\d+\.\d\d) s, (\d+\.\d) MB/s, (\d+) channels?: "
    r"((?:\S+->\S+)(?: \S+->\S+)*)$"
)
SIZE = 24 << 20


@dataclass
class Target:
    name: str
    url: str  # //127.0.0.1:PORT/data
    user: str
    password: str
    folder: Path


def ferry(target: Target, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FERRY_SMB_PASSWORD"}
    if password is not None or target.password:
        env["FERRY_SMB_PASSWORD"] = password if password is not None else target.password
    return subprocess.run(
        [str(FERRY), "smb", *args, "--user", target.user], env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def summary(process: subprocess.CompletedProcess[str]) -> re.Match[str]:
    assert process.returncode == 0, process.stderr
    last = process.stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, last
    return match


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("cli-src") / "payload.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", params=["ferry", "samba"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp(f"cli-{request.param}")
    if request.param == "ferry":
        interfaces = [
            NetworkInterfaceInfo(1, InterfaceCapability.RSS, 10**10, "127.0.0.1"),
            NetworkInterfaceInfo(2, InterfaceCapability.RSS, 10**10, "::1"),
        ]
        with smb_server(root, interfaces=interfaces) as running:
            asyncio.run_coroutine_threadsafe(running.server.start("::1", running.port), running.loop).result()
            yield Target("ferry", f"//127.0.0.1:{running.port}/data", USER, PASSWORD, root / "data")
    else:
        options = {
            "server multi channel support": "yes",
            "interfaces": '"127.0.0.1;speed=10000000000,capability=RSS,if_index=1" '
            '"::1;speed=10000000000,capability=RSS,if_index=2"',
        }
        with samba_server(root, shares={"data": {}}, options=options) as smbd:
            url = f"//127.0.0.1:{smbd.port}/data"
            yield Target("samba", url, smbd.user, smbd.password, smbd.shares["data"])


def test_put_get_ls_rm(target: Target, source: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = source
    put = summary(ferry(target, "put", str(path), f"{target.url}/"))  # a folder: the name stays
    assert put.group(1) == "put" and int(put.group(2)) == SIZE and int(put.group(5)) >= 1
    assert put.group(6).split()[0] == "127.0.0.1->127.0.0.1"
    assert hashlib.sha256((target.folder / "payload.bin").read_bytes()).hexdigest() == digest

    back = tmp_path / "back.bin"
    got = summary(ferry(target, "get", f"{target.url}/payload.bin", str(back)))
    assert got.group(1) == "get" and int(got.group(2)) == SIZE
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest

    (target.folder / "sub").mkdir()
    listing = ferry(target, "ls", target.url)
    summary(listing)
    lines = listing.stdout.strip().splitlines()[:-1]
    assert any(line.endswith(" payload.bin") and f" {SIZE} " in line for line in lines), lines
    assert any(line.startswith("d ") and line.endswith(" sub/") for line in lines), lines
    one = ferry(target, "ls", f"{target.url}/payload.bin", "--json")
    report = json.loads(one.stdout)
    assert report["entries"] == [
        {"name": "payload.bin", "dir": False, "size": SIZE, "mtime": report["entries"][0]["mtime"]}
    ]

    summary(ferry(target, "rm", f"{target.url}/payload.bin"))
    summary(ferry(target, "rm", f"{target.url}/sub"))
    assert not (target.folder / "payload.bin").exists() and not (target.folder / "sub").exists()


def test_json_report(target: Target, source: tuple[Path, str]) -> None:
    path, _ = source
    process = ferry(target, "put", str(path), f"{target.url}/as-json.bin", "--json", "--encrypt")
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout)
    assert report["command"] == "put" and report["bytes"] == SIZE and report["encrypted"] is True
    assert report["channels"] == len(report["channel_list"]) >= 1
    assert report["channel_list"][0]["local"] == "127.0.0.1" and report["dialect"] == "3.1.1"
    assert report["mb_per_s"] == pytest.approx(SIZE / report["seconds"] / 1e6)
    single = ferry(target, "get", f"{target.url}/as-json.bin", os.devnull, "--no-multichannel", "--json")
    assert json.loads(single.stdout)["channels"] == 1
    (target.folder / "as-json.bin").unlink()


@pytest.mark.parametrize(
    ("args", "password", "code", "message"),
    [
        (("ls", "{url}"), "wrong-password", 1, "logon failed for "),
        (("ls", "//127.0.0.1:{port}/no-such-share"), None, 1, "has no share 'no-such-share'"),
        (("get", "{url}/missing.bin", os.devnull), None, 1, "no such file or directory: //"),
        (("rm", "{url}/missing.bin"), None, 1, "no such file or directory"),
        (("put", "/nonexistent/file", "{url}/"), None, 1, "/nonexistent/file: no such file"),
        (("ls", "//no-such-host.invalid/data"), None, 1, "connection to no-such-host.invalid:445 failed"),
        (("ls", "no-slashes/data"), None, 2, "starts with //"),
        (("get", "{url}"), None, 2, "name a file in the share"),
        (("ls", "{url}"), "", 1, "logon failed"),  # an empty password is still a password
    ],
)
def test_mistakes_are_one_line_and_an_exit_code(
    target: Target, args: tuple[str, ...], password: str | None, code: int, message: str
) -> None:
    port = target.url.split(":")[1].split("/")[0]
    argv = [a.format(url=target.url, port=port) for a in args]
    process = ferry(target, *argv, password=password)
    assert process.returncode == code, (process.stdout, process.stderr)
    (line,) = process.stderr.strip().splitlines()
    assert line.startswith("ferry: ") and message in line, line


def test_no_password_and_no_terminal_is_a_usage_error(target: Target) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FERRY_SMB_PASSWORD"}
    process = subprocess.run(
        [str(FERRY), "smb", "ls", target.url, "--user", target.user], env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert process.returncode == 2 and "FERRY_SMB_PASSWORD" in process.stderr
