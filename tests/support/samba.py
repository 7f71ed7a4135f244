"""Samba's smbd started by a test, with everything private to a temporary folder.

The configuration keeps every directory smbd uses (private, lock, state, cache, pid, ncalrpc,
usershares, logs) inside the folder and authenticates against a private tdbsam passdb, so
nothing under /etc/samba or /var/lib/samba is read or written. smbd needs a Unix account
behind each passdb user: the account is ``root``, the user the tests run as (as
scripts/bench_smb.py does), so no system user is created. smbd runs in its own process
group (it forks a child per connection), stopped as a group at the end.

By default smbd listens on 127.0.0.1; given a network namespace it runs inside it, bound to
the addresses it is given (:func:`multichannel_options` advertises them, with speeds and
capabilities, to Multichannel clients).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.support.netns import Namespace
from tests.support.procs import free_port

SAMBA_USER = "root"
SAMBA_PASSWORD = "Ferry-Interop-2024"
SAMBA_DIRS = ("private", "lock", "state", "cache", "pid", "ncalrpc", "usershares", "log")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Shares every test server has: ``data`` (signed) and ``secret`` (encryption required).
DEFAULT_SHARES: dict[str, dict[str, str]] = {
    "data": {},
    "secret": {"server smb encrypt": "required"},
}


def smbd_path() -> str | None:
    return shutil.which("smbd", path="/usr/sbin:/usr/bin:/sbin:/bin")


def require_samba() -> str:
    """smbd's path, or skip (locally) / fail (in CI, where nothing may be skipped)."""
    problem = None
    smbd = smbd_path()
    if os.geteuid() != 0:
        problem = "Samba's smbd needs root here (its passdb user is root)"
    elif smbd is None or shutil.which("pdbedit") is None:
        problem = "Samba is not installed (apt-get install samba)"
    if problem is not None:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    assert smbd is not None
    return smbd


@dataclass
class SambaServer:
    base: Path
    conf: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    host: str = "127.0.0.1"
    user: str = SAMBA_USER
    password: str = SAMBA_PASSWORD
    shares: dict[str, Path] = field(default_factory=dict)
    netns: Namespace | None = None

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"smbd exited with status {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill_client_connections(self, address: str = "127.0.0.1") -> None:
        """Have smbd drop every connection from ``address`` (smbcontrol kill-client-ip)."""
        subprocess.run(
            ["smbcontrol", "-s", str(self.conf), "smbd", "kill-client-ip", address],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def listening(self) -> bool:
        """Whether smbd accepts connections on its host and port (inside its namespace, if any)."""
        if self.netns is None:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
                return True
            return False
        listeners = self.netns.run(["ss", "-Hltn", f"sport = :{self.port}"], check=False).stdout
        return any(f"{self.host}:{self.port}" in line.split() for line in listeners.splitlines())


def multichannel_options(addresses: Sequence[str], speed_bps: int, *, rss: bool = True) -> dict[str, str]:
    """smb.conf options for Multichannel on ``addresses`` (bound to them alone), each advertised
    in FSCTL_QUERY_NETWORK_INTERFACE_INFO with ``speed_bps`` and, with ``rss``, RSS capability."""
    capability = ",capability=RSS" if rss else ""
    return {
        "server multi channel support": "yes",
        "interfaces": " ".join(f'"{a};speed={speed_bps}{capability}"' for a in addresses),
        "bind interfaces only": "yes",
    }


def write_conf(base: Path, port: int, shares: dict[str, dict[str, str]], options: dict[str, str]) -> Path:
    d = {name: base / name for name in SAMBA_DIRS}
    settings = {
        "server role": "standalone server",
        "workgroup": "FERRYTEST",
        "netbios name": "FERRYTEST",
        "disable netbios": "yes",
        "smb ports": str(port),
        "interfaces": "127.0.0.1",
        "bind interfaces only": "yes",
        "server min protocol": "SMB3_00",
        "server signing": "mandatory",
        "passdb backend": f"tdbsam:{d['private'] / 'passdb.tdb'}",
        "map to guest": "never",
        "private dir": str(d["private"]),
        "lock directory": str(d["lock"]),
        "state directory": str(d["state"]),
        "cache directory": str(d["cache"]),
        "pid directory": str(d["pid"]),
        "ncalrpc dir": str(d["ncalrpc"]),
        "usershare path": str(d["usershares"]),
        "log file": str(d["log"] / "log.%m"),
        "load printers": "no",
        "printing": "bsd",
        "printcap name": "/dev/null",
        "disable spoolss": "yes",
        **options,
    }
    lines = [f"# A private smbd for Ferry's tests: nothing outside {base}", "[global]"]
    lines += [f"    {k} = {v}" for k, v in settings.items()]
    for name, share_options in shares.items():
        lines += ["", f"[{name}]", f"    path = {base / 'shares' / name}", "    read only = no"]
        lines += [f"    {k} = {v}" for k, v in share_options.items()]
    conf = base / "smb.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this module created for smbd, then SIGKILL what is left."""
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # the leader if it hung, its per-connection children
    process.wait()


@contextlib.contextmanager
def samba_server(
    tmp: Path,
    *,
    shares: dict[str, dict[str, str]] | None = None,
    options: dict[str, str] | None = None,
    netns: Namespace | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> Iterator[SambaServer]:
    """Start smbd with ``shares`` under ``tmp``; stop it after.

    It listens on ``host`` (127.0.0.1 by default; with ``netns``, an address in that namespace,
    and smbd runs inside it), on ``port`` or a free one. ``options`` override the generated
    [global] settings, e.g. :func:`multichannel_options` for its ``interfaces`` line.
    """
    smbd = require_samba()
    base = tmp / "samba"
    base.mkdir(parents=True)
    for name in SAMBA_DIRS:
        (base / name).mkdir(mode=0o700 if name == "private" else 0o755)
    shares = DEFAULT_SHARES if shares is None else shares
    share_dirs = {}
    for name in shares:
        share_dirs[name] = base / "shares" / name
        share_dirs[name].mkdir(parents=True)
    port = port or free_port()
    conf = write_conf(base, port, shares, {"interfaces": host, **(options or {})})
    password = f"{SAMBA_PASSWORD}\n{SAMBA_PASSWORD}\n"
    added = subprocess.run(
        ["pdbedit", "-s", str(conf), "-a", "-u", SAMBA_USER, "-t"],
        input=password, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if added.returncode != 0:
        raise RuntimeError(f"pdbedit -a -u {SAMBA_USER} failed:\n{added.stdout}{added.stderr}")
    log = base / "log" / "smbd.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*(["ip", "netns", "exec", netns.name] if netns else []),  # ip execs smbd: same pid
             smbd, "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = SambaServer(base, conf, port, process, log, host=host, shares=share_dirs, netns=netns)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            server.check_alive()
            if server.listening():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"smbd did not listen on port {port}:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)
