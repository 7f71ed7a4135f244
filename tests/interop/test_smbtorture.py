"""Samba's smbtorture against Ferry's SMB server: every subtest in smbtorture-baseline.txt must
keep passing (new passes are printed, to be added there; they never fail the test).

Each suite runs against a fresh server (no files left over from another suite) and is killed
after ``TIMEOUT`` seconds; a subtest cut short counts as a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.smbserver import RunningServer
from tests.support.smbtorture import (
    BASELINE,
    PASS,
    SUITES,
    Suite,
    failures,
    ferry_server,
    find_smbtorture,
    load_baseline,
    run_suite,
    summary,
)

SMBTORTURE = find_smbtorture()


@pytest.fixture
def smbtorture() -> str:
    return require_tool(SMBTORTURE, "smbtorture", "samba-testsuite")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with ferry_server(tmp_path) as running:
        yield running


def test_baseline_names_are_run() -> None:
    """Every baseline entry belongs to a suite that runs (a typo would silently guard nothing)."""
    baseline = load_baseline()
    assert baseline, f"{BASELINE} is empty"
    orphans = [name for name in baseline if not any(s.covers(name) for s in SUITES)]
    assert not orphans, f"in {BASELINE.name} but run by no suite: {orphans}"
    assert len(set(baseline)) == len(baseline), "duplicate entries in the baseline"


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_suite(suite: Suite, smbtorture: str, server: RunningServer, tmp_path: Path) -> None:
    run = run_suite(server, suite, smbtorture, tmp_path)
    print(f"\n{summary(run)}")
    for line in failures([run]):
        print(f"  {line}")
    expected = [name for name in load_baseline() if suite.covers(name)]
    new = [name for name in run.names(PASS) if name not in expected]
    if new:
        print(f"  passing, not in {BASELINE.name} (add them):")
        for name in new:
            print(f"    {name}")
    assert run.results, f"smbtorture gave no results (exit {run.returncode}):\n{run.stderr[-2000:]}"
    lost = {
        name: run.results[name].reason if name in run.results else "not run"
        for name in expected
        if name not in run.results or run.results[name].outcome != PASS
    }
    assert not lost, f"baseline subtests no longer passing: {lost}"
