#!/usr/bin/env python3
"""smbtorture against a freshly started Ferry SMB server: a Markdown table for the README.

Runs the suites of ``tests/support/smbtorture.py`` (the ones ``tests/interop/test_smbtorture.py``
guards), each against its own new server in a temporary folder, and prints
``| suite | pass | fail | skip |`` followed by every failing subtest with smbtorture's reason.
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
    parser.add_argument("suites", nargs="*", help="only these suites (default: all)")
    args = parser.parse_args()
    smbtorture = find_smbtorture()
    if smbtorture is None:
        print("smbtorture is not installed (Debian: samba-testsuite)", file=sys.stderr)
        return 2
    suites = [s for s in SUITES if not args.suites or s.name in args.suites]
    if not suites:
        print(f"no such suite; known: {', '.join(s.name for s in SUITES)}", file=sys.stderr)
        return 2
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
