"""Samba's smbtorture against Ferry's SMB server: the suites we track, running one, and
reading its results.

Shared by ``tests/interop/test_smbtorture.py`` (a regression guard against
``tests/interop/smbtorture-baseline.txt``) and ``scripts/smbtorture_report.py`` (the README's
table). smbtorture runs with ``--format=subunit --fullname``: each subtest is announced by
``test: NAME`` and ends with ``success: NAME``, ``skip: NAME [``, ``failure: NAME [`` or
``error: NAME [`` (a bracketed reason follows on the next lines, closed by a lone ``]``).
Its exit status is non-zero as soon as one subtest fails, so it is not used: the results are.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from smbcore.ioctl import InterfaceCapability, NetworkInterfaceInfo

from tests.support.smbserver import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER, RunningServer, smb_server

BASELINE = Path(__file__).resolve().parent.parent / "interop" / "smbtorture-baseline.txt"

#: What FSCTL_QUERY_NETWORK_INTERFACE_INFO answers during the runs (ioctl and multichannel).
INTERFACES = [
    NetworkInterfaceInfo(1, InterfaceCapability.RSS, 10_000_000_000, "127.0.0.1"),
    NetworkInterfaceInfo(1, InterfaceCapability.RSS, 10_000_000_000, "::1"),
]

#: Seconds one smbtorture run may take. Every suite below takes under 6 s today (smb2.notify
#: is the slowest, 5 s); the bound keeps a subtest that waits for something the server does
#: not send from stalling the run (each suite is its own pytest test, under pytest's 300 s).
TIMEOUT = 20.0

PASS, FAIL, SKIP = "pass", "fail", "skip"
_OUTCOMES = {"success": PASS, "skip": SKIP, "failure": FAIL, "error": FAIL, "xfail": FAIL, "uxsuccess": FAIL}


@dataclass(frozen=True)
class Suite:
    """One smbtorture run: ``name`` labels it, ``tests`` are the names given to smbtorture."""

    name: str
    tests: tuple[str, ...]
    timeout: float = TIMEOUT

    def covers(self, subtest: str) -> bool:
        """Whether ``subtest`` (a full name) is one of this run's subtests."""
        return any(subtest == t or subtest.startswith(t + ".") for t in self.tests)


def _single(name: str) -> Suite:
    return Suite(name, (name,))


SUITES = (
    _single("smb2.connect"),
    _single("smb2.read"),
    _single("smb2.rw"),
    _single("smb2.credits"),
    _single("smb2.getinfo"),
    Suite("smb2.session", ("smb2.session",), timeout=90.0),
    _single("smb2.ioctl.network_interface_info"),
    _single("smb2.multichannel.generic"),
    _single("smb2.streams"),
    # All of smb2.notify but ``mask``, which alone takes 80 s (its design: against smbd as long).
    Suite(
        "smb2.notify",
        tuple(
            f"smb2.notify.{t}"
            for t in [
                "valid-req",
                "tcon",
                "dir",
                "tdis",
                "tdis1",
                "mask-change",
                "close",
                "logoff",
                "session-reconnect",
                "invalid-reauth",
                "tree",
                "basedir",
                "double",
                "file",
                "tcp",
                "rec",
                "overflow",
                "rmdir1",
                "rmdir2",
                "rmdir3",
                "rmdir4",
                "handle-permissions",
            ]
        ),
        timeout=60.0,
    ),
)


@dataclass(frozen=True)
class Result:
    name: str
    outcome: str  # PASS, FAIL or SKIP
    reason: str = ""  # smbtorture's first line of explanation, if any


@dataclass
class SuiteRun:
    suite: Suite
    results: dict[str, Result] = field(default_factory=dict)
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    stderr: str = ""

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results.values())

    def names(self, outcome: str) -> list[str]:
        return sorted(r.name for r in self.results.values() if r.outcome == outcome)


def find_smbtorture() -> str | None:
    return shutil.which("smbtorture")


def parse_subunit(text: str, *, timed_out: bool = False) -> dict[str, Result]:
    """The results in smbtorture's subunit output, in order. A subtest that started but has
    no outcome (the run was killed, or smbtorture crashed) is a failure."""
    results: dict[str, Result] = {}
    started: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        keyword, sep, rest = line.partition(": ")
        if not sep:
            keyword, sep, rest = line.partition(":")
        if keyword == "test":
            started.append(rest.strip())
            continue
        outcome = _OUTCOMES.get(keyword)
        if outcome is None:  # time:, progress:, banners, comments
            continue
        name, details = rest.rstrip(), []
        for opening in (" [", " [ multipart"):
            if name.endswith(opening):  # the details follow, up to a lone "]"
                name = name.removesuffix(opening).rstrip()
                for detail in lines:
                    if detail.strip() == "]":
                        break
                    details.append(detail.strip())
                break
        reason = next((d for d in details if d), "")
        results[name] = Result(name, outcome, reason.removeprefix("../../source4/torture/"))
    for name in started:
        if name not in results:
            why = "killed after the timeout" if timed_out else "no result (smbtorture ended)"
            results[name] = Result(name, FAIL, why)
    return results


def run_suite(server: RunningServer, suite: Suite, smbtorture: str, cwd: Path) -> SuiteRun:
    """Run ``suite`` against ``server``, killing smbtorture after ``suite.timeout`` seconds."""
    command = [
        smbtorture, f"//{server.host}/data", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
        f"--option=torture:user2name={OTHER_USER}", f"--option=torture:user2password={OTHER_PASSWORD}",
        "--configfile=/dev/null", "--format=subunit", "--fullname", *suite.tests,
    ]  # fmt: skip
    run = SuiteRun(suite)
    start = time.monotonic()
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(timeout=suite.timeout)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            proc.kill()
            out, err = proc.communicate()  # what was written before the kill, too
    run.seconds = time.monotonic() - start
    run.returncode = proc.returncode
    run.stderr = err.decode(errors="replace")
    run.results = parse_subunit(out.decode(errors="replace"), timed_out=run.timed_out)
    return run


@contextmanager
def ferry_server(tmp: Path) -> Iterator[RunningServer]:
    """Ferry's server as the smbtorture runs expect it: share ``data``, user alice, interfaces,
    and a guest share (smb2.session.reauth2 re-authenticates as anonymous)."""
    with smb_server(tmp, interfaces=INTERFACES, guests=True) as server:
        yield server


def load_baseline(path: Path = BASELINE) -> list[str]:
    """The subtests that must pass: one full name a line; ``#`` starts a comment."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [name for name in names if name]


def summary(run: SuiteRun) -> str:
    extra = f", killed after {run.suite.timeout:.0f} s" if run.timed_out else ""
    return (
        f"{run.suite.name}: {run.count(PASS)} pass, {run.count(FAIL)} fail, {run.count(SKIP)} skip "
        f"({run.seconds:.1f} s{extra})"
    )


def markdown_table(runs: list[SuiteRun]) -> str:
    rows = ["| suite | pass | fail | skip |", "|---|---|---|---|"]
    rows += [f"| {r.suite.name} | {r.count(PASS)} | {r.count(FAIL)} | {r.count(SKIP)} |" for r in runs]
    return "\n".join(rows)


def failures(runs: list[SuiteRun]) -> list[str]:
    """``- NAME: reason`` for every subtest that did not pass or skip."""
    return [
        f"- {r.name}: {r.reason}" if r.reason else f"- {r.name}"
        for run in runs
        for r in run.results.values()
        if r.outcome == FAIL
    ]
