#!/usr/bin/env python3
"""The SMB data path, Ferry's server against Samba's smbd, with the same client.

One run starts both servers on 127.0.0.1 (each on its own free port, everything in one
temporary folder), then for each mode (signed, encrypted) has Samba's ``smbclient`` put a
random file onto each server and get it back, ``--repeat`` times after ``--warmup`` untimed
rounds, alternating which server goes first. Each transfer is one ``smbclient`` command timed
from outside (connect, session setup and tree connect included), and every copy is checked
with SHA-256. The result is the
median rate of each (mode, op, server) and the ratio Ferry/Samba; 1.0 or more means Ferry is
at least as fast. Beside each rate, the median CPU time the server used for the transfer
(user + system, all its processes and threads; smbd's per-connection child included): on a
small shared machine the wall clock also measures whoever else is running, the CPU time
much less so. The load average before and after is printed for the same reason.
``--get-to-null`` has the timed gets write to /dev/null: with a file, the client's writes
into its own page cache are most of a get's time on a small VM, for both servers alike.

``--baseline DIR`` adds a third server, Ferry's from another checkout in DIR (say
``git archive REV libs cli | tar -x -C DIR``; its packages are put first on PYTHONPATH), run
in the same rounds as the other two, the order rotating: a before/after comparison under the
same conditions, which on a noisy machine two separate runs are not.

Neither server touches the page cache differently: the source file, and the file each server
holds after a put, are in memory for every run, so ``get`` measures the servers, not the disk.

Samba runs with a private ``smb.conf`` whose every directory (private, lock, state, cache,
pid, ncalrpc, usershares, logs) is inside the temporary folder, and a private tdbsam
passdb in which the benchmark account maps to the Unix user ``root`` (the user this script
runs as, as does Ferry's server): no system user is created and nothing under /etc/samba or
/var/lib/samba is read or written. Everything else is left at Samba's defaults.

``--py-spy PATH`` also samples Ferry's server with py-spy during one extra put and one extra
get per mode (not counted in the figures) and prints where its time goes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
from benchlib import make_random_file, sha256

ROOT = Path(__file__).resolve().parent.parent
FERRY = ROOT / ".venv" / "bin" / "ferry"
SHARE = "bench"
FERRY_USER = "bench"
SAMBA_USER = "root"  # smbd needs a Unix account behind each passdb user; root avoids adding one
PASSWORD = "Ferry-Bench-2024"
REMOTE_NAME = "bench.bin"
MODES: dict[str, str] = {"signed": "sign", "encrypted": "encrypt"}
OPS = ("put", "get")
SERVERS = ("ferry", "samba")
BASELINE = "base"  # --baseline: Ferry's server from another checkout
BASELINE_PACKAGES = ("libs/smbcore", "cli", "libs/runtime", "libs/hostnet")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class BenchError(Exception):
    """A server failed, a transfer failed or a copy differs: the run is invalid."""


@dataclass
class Server:
    name: str
    port: int
    share_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    user: str

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"{self.name} server exited with status {code}:\n{tail(self.log)}")


@dataclass
class Results:
    """Seconds per transfer (wall clock, and the server's CPU time), keyed by (mode, op, server)."""

    times: dict[tuple[str, str, str], list[float]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    cpu: dict[tuple[str, str, str], list[float]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def rate(self, size: int, mode: str, op: str, server: str) -> float:
        """Median rate in MB/s (10**6 bytes)."""
        return size / statistics.median(self.times[mode, op, server]) / 1e6

    def cpu_seconds(self, mode: str, op: str, server: str) -> float:
        """Median CPU seconds the server used per transfer."""
        return statistics.median(self.cpu[mode, op, server])


# -- small helpers -----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``512K``, ``1GiB`` or plain bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"expected a size like 1G, 256M or 4096, got {text!r}")
    return int(match[1]) * SIZE_UNITS[match[2].upper()]


def human_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]} {unit}iB"
    return f"{size} bytes"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CPU_SETTLE = 0.2  # seconds for smbd's per-connection child to exit and be reaped


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every process in the process group ``pgid`` (threads
    included), with what their exited children used (``cutime``/``cstime``, which is where an
    smbd connection child's time goes once smbd has reaped it)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:  # pgrp, after state and ppid
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- processes ---------------------------------------------------------------------------------


def spawn(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own process group (smbd forks a child per connection), logging to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created for ``process``, then SIGKILL what is left."""
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # the leader if it hung, smbd's children if they linger
    process.wait()


def wait_for_port(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        server.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), 0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"{server.name} server did not listen on port {server.port}:\n{tail(server.log)}")


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        wait_for_port(server)
        yield server
    finally:
        stop(server.process)


# -- Ferry -------------------------------------------------------------------------------------


def prepare_ferry(tmp: Path) -> Path:
    users = tmp / "ferry" / "users.db"
    users.parent.mkdir()
    (tmp / "ferry" / "share").mkdir()
    env = {**os.environ, "FERRY_SMB_PASSWORD": PASSWORD}
    result = subprocess.run(
        [str(FERRY), "smbserver", "user", "add", FERRY_USER, "--users", str(users)],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise BenchError(f"ferry smbserver user add failed:\n{result.stdout}{result.stderr}")
    return users


def start_ferry(tmp: Path, users: Path, mode: str, baseline: Path | None = None) -> Server:
    """Ferry's server; with ``baseline``, the one in that checkout (share and log of its own)."""
    name = "ferry" if baseline is None else BASELINE
    port = free_port()
    share_dir = tmp / name / "share"
    share_dir.mkdir(parents=True, exist_ok=True)
    log = tmp / name / f"serve-{mode}.log"
    env = None
    if baseline is not None:
        paths = [str(baseline / package) for package in BASELINE_PACKAGES]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    args = [
        str(FERRY), "smbserver", "serve", "--listen", f"127.0.0.1:{port}",
        "--share", f"{SHARE}={share_dir}", "--users", str(users),
        "--interface", "127.0.0.1",
    ]  # fmt: skip
    if mode == "encrypted":
        args.append("--encrypt")
    return Server(name, port, share_dir, spawn(args, log, env), log, FERRY_USER)


# -- Samba -------------------------------------------------------------------------------------

SAMBA_DIRS = ("private", "lock", "state", "cache", "pid", "ncalrpc", "usershares", "log")


def write_smb_conf(tmp: Path, mode: str, port: int) -> Path:
    base = tmp / "samba"
    d = {name: base / name for name in SAMBA_DIRS}
    encrypt = "required" if mode == "encrypted" else "default"
    conf = base / f"smb-{mode}.conf"
    conf.write_text(
        f"""# Ferry's SMB benchmark: a private smbd; nothing outside {base}
[global]
    server role = standalone server
    workgroup = FERRYBENCH
    netbios name = FERRYBENCH
    disable netbios = yes
    smb ports = {port}
    interfaces = 127.0.0.1
    bind interfaces only = yes
    server min protocol = SMB3
    server signing = mandatory
    server smb encrypt = {encrypt}
    passdb backend = tdbsam:{d["private"] / "passdb.tdb"}
    map to guest = never
    private dir = {d["private"]}
    lock directory = {d["lock"]}
    state directory = {d["state"]}
    cache directory = {d["cache"]}
    pid directory = {d["pid"]}
    ncalrpc dir = {d["ncalrpc"]}
    usershare path = {d["usershares"]}
    log file = {d["log"] / "log.%m"}
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes

[{SHARE}]
    path = {base / "share"}
    read only = no
"""
    )
    return conf


def prepare_samba(tmp: Path) -> None:
    base = tmp / "samba"
    base.mkdir()
    for name in (*SAMBA_DIRS, "share"):
        (base / name).mkdir(mode=0o700 if name == "private" else 0o755)
    conf = write_smb_conf(tmp, "signed", free_port())
    result = subprocess.run(
        ["pdbedit", "-s", str(conf), "-a", "-u", SAMBA_USER, "-t"],
        input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise BenchError(f"pdbedit -a -u {SAMBA_USER} failed:\n{result.stdout}{result.stderr}")


def start_samba(tmp: Path, smbd: str, mode: str) -> Server:
    port = free_port()
    conf = write_smb_conf(tmp, mode, port)
    log = tmp / "samba" / "log" / f"smbd-{mode}.log"
    args = [smbd, "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)]
    return Server("samba", port, tmp / "samba" / "share", spawn(args, log), log, SAMBA_USER)


# -- transfers ---------------------------------------------------------------------------------


def smbclient(client: str, server: Server, protection: str, command: str) -> float:
    """Run one smbclient command against ``server``; its wall-clock time in seconds."""
    args = [
        client, f"//127.0.0.1/{SHARE}", "-p", str(server.port), "-m", "SMB3",
        "--configfile=/dev/null", f"--client-protection={protection}",
        "-U", f"{server.user}%{PASSWORD}", "-c", command,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=3600)
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0 or "NT_STATUS" in output:
        server.check_alive()
        raise BenchError(f"smbclient -c {command!r} on {server.name} failed:\n{output}")
    server.check_alive()
    return elapsed


def transfer(
    client: str,
    server: Server,
    mode: str,
    op: str,
    files: tuple[Path, Path, str],
    *,
    discard: bool = False,
) -> tuple[float, float]:
    """One put (source to the share) or get (share to ``back``, or to /dev/null if
    ``discard``), verified unless discarded; the seconds it took and the CPU seconds the
    server used."""
    source, back, digest = files
    remote = server.share_dir / REMOTE_NAME
    if op == "put":
        remote.unlink(missing_ok=True)
    else:
        back.unlink(missing_ok=True)
    cpu_before = group_cpu_seconds(server.process.pid)
    if op == "put":
        elapsed = smbclient(client, server, MODES[mode], f"put {source} {REMOTE_NAME}")
        checked: Path | None = remote
    else:
        checked = None if discard else back
        elapsed = smbclient(client, server, MODES[mode], f"get {REMOTE_NAME} {checked or os.devnull}")
    time.sleep(CPU_SETTLE)
    cpu = group_cpu_seconds(server.process.pid) - cpu_before
    if checked is not None and sha256(checked) != digest:
        raise BenchError(f"{mode} {op} on {server.name}: SHA-256 of {checked} differs from the source")
    back.unlink(missing_ok=True)
    return elapsed, cpu


def measure(
    client: str,
    servers: dict[str, Server],
    mode: str,
    runs: tuple[int, int],
    files: tuple[Path, Path, str],
    *,
    get_to_null: bool = False,
) -> Results:
    """``warmup`` untimed rounds, then ``repeat`` timed ones; each round is a put and a get on
    every server, the first server rotating from round to round. With ``get_to_null`` the
    timed gets go to /dev/null (the warm-up gets are the ones verified)."""
    warmup, repeat = runs
    results = Results()
    size = files[0].stat().st_size
    names = list(servers)
    for run in range(warmup + repeat):
        if len(names) == 2:
            order = names if run % 2 == 0 else names[::-1]
        else:
            order = names[run % len(names) :] + names[: run % len(names)]
        label = f"warm-up {run + 1}/{warmup}" if run < warmup else f"run {run - warmup + 1}/{repeat}"
        for name in order:
            for op in OPS:
                discard = get_to_null and run >= warmup
                seconds, cpu = transfer(client, servers[name], mode, op, files, discard=discard)
                if run >= warmup:
                    results.times[mode, op, name].append(seconds)
                    results.cpu[mode, op, name].append(cpu)
                print(
                    f"  {mode:9} {op} {name:5} {label:13} {seconds:7.3f} s {size / seconds / 1e6:8.1f} MB/s"
                    f"  server CPU {cpu:6.2f} s",
                    flush=True,
                )
    return results


# -- profiling (optional) ----------------------------------------------------------------------


def top_functions(raw: Path, count: int) -> tuple[int, list[tuple[str, int, int, str]]]:
    """Parse py-spy's collapsed stacks (``func (path:line);...;func (path:line) N``): the
    total samples and the top functions by self samples, with their inclusive samples and
    hottest own line."""
    own: collections.Counter[str] = collections.Counter()
    own_lines: collections.Counter[tuple[str, str]] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for entry in raw.read_text().splitlines():
        stack, _, samples = entry.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames: list[tuple[str, str]] = []
        for frame in stack.split(";"):
            match = re.fullmatch(r"(.*) \((?:.*/)?([^/]*?)(?::(\d+))?\)", frame)
            frames.append((f"{match[1]} ({match[2]})", match[3] or "?") if match else (frame, "?"))
        own[frames[-1][0]] += n
        own_lines[frames[-1]] += n
        for function in {f for f, _ in frames}:
            inclusive[function] += n
    hottest: dict[str, str] = {}
    for (function, line), _ in reversed(own_lines.most_common()):
        hottest[function] = line
    return total, [(f, n, inclusive[f], hottest[f]) for f, n in own.most_common(count)]


def profile(py_spy: str, client: str, server: Server, mode: str, files: tuple[Path, Path, str]) -> None:
    for op in OPS:
        raw = server.log.with_name(f"py-spy-{mode}-{op}.txt")
        sampler = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.process.pid), "--rate", "200", "--nonblocking",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(1.0)  # let it attach
            seconds, _ = transfer(client, server, mode, op, files)
        finally:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(60)
        total, top = top_functions(raw, 8) if raw.exists() else (0, [])
        print(f"\n  py-spy, Ferry's server, {mode} {op} ({seconds:.2f} s, {total} busy samples at 200 Hz):")
        print(f"    {'self':>6} {'incl.':>6}  function (file), hottest line")
        for name, n, inc, line in top:
            print(f"    {100 * n / total:5.1f}% {100 * inc / total:5.1f}%  {name}, line {line}")


# -- report ------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    return {**benchlib.machine(), "load": load_average()}


def tables(
    results: Results, size: int, modes: Sequence[str], other: str = "samba", label: str = "Samba"
) -> tuple[str, str]:
    """Ferry against ``other`` (Samba's smbd, or the --baseline server): the text and Markdown tables."""
    rows = []
    for mode in modes:
        for op in OPS:
            ferry = results.rate(size, mode, op, "ferry")
            theirs = results.rate(size, mode, op, other)
            ferry_cpu = results.cpu_seconds(mode, op, "ferry")
            their_cpu = results.cpu_seconds(mode, op, other)
            rates = (f"{ferry:.1f}", f"{theirs:.1f}", f"{ferry / theirs:.2f}")
            rows.append((mode, op, *rates, f"{ferry_cpu:.2f}", f"{their_cpu:.2f}"))
    header = ("mode", "op", "Ferry MB/s", f"{label} MB/s", f"Ferry/{label}", "Ferry CPU s", f"{label} CPU s")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    text = "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in (header, *rows)
    )
    markdown = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|---|---|---:|---:|---:|---:|---:|",
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    )
    return text, markdown


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="SMB data path: Ferry's server vs Samba's smbd, the same smbclient, "
        "put/get of one random file, signed then encrypted. Run as root.",
        epilog="MB/s are 10**6 bytes per second; each figure is the median of --repeat runs.",
    )
    p.add_argument("--size", type=parse_size, default=1 << 30, help="file size: 1G (default), 256M, ...")
    p.add_argument("--repeat", type=int, default=3, help="runs per mode, server and op (default 3)")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed put+get rounds on both servers before the timed ones, per mode (default 1)",
    )
    p.add_argument(
        "--mode", choices=list(MODES), action="append", help="only this mode (repeatable; default both)"
    )
    p.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, confs)")
    p.add_argument(
        "--smbd",
        default=shutil.which("smbd", path="/usr/sbin:/usr/bin") or "smbd",
        help="(default: %(default)s)",
    )
    p.add_argument(
        "--smbclient", default=shutil.which("smbclient") or "smbclient", help="(default: %(default)s)"
    )
    p.add_argument(
        "--py-spy", metavar="PATH", help="also profile Ferry's server with this py-spy for one put and get"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run Ferry's server from the checkout in DIR (libs/ and cli/ of another revision) "
        "in the same rounds, and compare Ferry with it",
    )
    p.add_argument(
        "--get-to-null",
        action="store_true",
        help="timed gets write to /dev/null, so that the client's own file writes (page cache) are "
        "left out; the warm-up gets, which must be at least one, are verified",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be 0 or more")
    if args.get_to_null and args.warmup < 1:
        p.error("--get-to-null needs a warm-up round (its gets are the verified ones)")
    if args.baseline is not None and not (args.baseline / "libs" / "smbcore" / "smbcore").is_dir():
        p.error(f"--baseline {args.baseline}: no libs/smbcore/smbcore there")
    return args


def run(args: argparse.Namespace, tmp: Path) -> Results:
    modes = args.mode or list(MODES)
    print(f"temporary folder {tmp}; making a {human_size(args.size)} random file", flush=True)
    source, back = tmp / "source.bin", tmp / "back.bin"
    files = (source, back, make_random_file(source, args.size))
    users = prepare_ferry(tmp)
    prepare_samba(tmp)
    results = Results()
    for mode in modes:
        print(f"{mode}: starting the servers", flush=True)
        with contextlib.ExitStack() as stack:
            servers = {
                "ferry": stack.enter_context(running(start_ferry(tmp, users, mode))),
                "samba": stack.enter_context(running(start_samba(tmp, args.smbd, mode))),
            }
            if args.baseline is not None:
                servers[BASELINE] = stack.enter_context(running(start_ferry(tmp, users, mode, args.baseline)))
            print("  " + ", ".join(f"{name} on port {s.port}" for name, s in servers.items()), flush=True)
            measured = measure(
                args.smbclient, servers, mode, (args.warmup, args.repeat), files, get_to_null=args.get_to_null
            )
            results.times.update(measured.times)
            results.cpu.update(measured.cpu)
            if args.py_spy:
                profile(args.py_spy, args.smbclient, servers["ferry"], mode, files)
        for server in servers.values():
            (server.share_dir / REMOTE_NAME).unlink(missing_ok=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print(
            "bench_smb.py must run as root (smbd, and the same Unix user for both servers)", file=sys.stderr
        )
        return 2
    for tool in (str(FERRY), args.smbd, args.smbclient, "pdbedit"):
        if shutil.which(tool) is None:
            print(
                f"missing {tool} (make setup installs Ferry; apt-get install samba smbclient)",
                file=sys.stderr,
            )
            return 2
    info = machine()
    print(f"load average {load_average()} (1, 5, 15 min) before", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-smb-", dir=args.tmp))
    try:
        results = run(args, tmp)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info["load"] = f"{info['load']} before, {load_average()} after (1, 5, 15 min)"
    text, markdown = tables(results, args.size, args.mode or list(MODES))
    print()
    for key, value in info.items():
        print(f"{key:9} {value}")
    gets = "; timed gets to /dev/null" if args.get_to_null else ""
    print(
        f"{'file':9} {human_size(args.size)} ({args.size} bytes), median of {args.repeat} runs each "
        f"after {args.warmup} untimed warm-up round(s){gets}"
    )
    print()
    print(text)
    print("\nmarkdown:\n")
    print(
        f"{human_size(args.size)}, median of {args.repeat} runs after {args.warmup} warm-up round(s){gets}; "
        "MB = 10^6 bytes; CPU s = the server's CPU time per transfer.\n"
    )
    print(markdown)
    if args.baseline is not None:
        text, markdown = tables(results, args.size, args.mode or list(MODES), BASELINE, "Base")
        print(f"\nFerry against the baseline ({args.baseline}), same rounds:\n")
        print(text)
        print("\nmarkdown:\n")
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
