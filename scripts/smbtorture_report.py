#!/usr/bin/env python3
"""smbtorture against a freshly started Ferry SMB server: a Markdown table for the README.

Runs the suites of ``tests/support/smbtorture.py`` (the ones ``tests/interop/test_smbtorture.py``
guards), or the ones named (any smbtorture suite, e.g. ``smb2.oplock``), each against its own
new server in a temporary folder, and prints ``| suite | pass | fail | skip |`` followed by
every failing subtest with smbtorture's reason.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.smbtorture import (  # noqa: E402
    SUITES,
    Suite,
    SuiteRun,
    failures,
    ferry_server,
    find_smbtorture,
    markdown_table,
    run_suite,
    summary,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help="these suites (default: the tracked ones)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per untracked suite")
    args = parser.parse_args()
    smbtorture = find_smbtorture()
    if smbtorture is None:
        print("smbtorture is not installed (Debian: samba-testsuite)", file=sys.stderr)
        return 2
    tracked = {s.name: s for s in SUITES}
    suites = [tracked.get(n) or Suite(n, (n,), args.timeout) for n in args.suites] or list(SUITES)
    version = subprocess.run([smbtorture, "--version"], capture_output=True, text=True, check=False)
    runs: list[SuiteRun] = []
    with tempfile.TemporaryDirectory(prefix="ferry-smbtorture-") as tmp:
        for i, suite in enumerate(suites):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            with ferry_server(folder) as server:
                runs.append(run_suite(server, suite, smbtorture, folder))
            print(summary(runs[-1]), file=sys.stderr)
    name = (version.stdout.strip().splitlines() or ["smbtorture"])[0]
    print(f"{name} against Ferry's server, {datetime.date.today()}:\n")
    print(markdown_table(runs))
    failed = failures(runs)
    if failed:
        print("\nFailing subtests:\n")
        print("\n".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
