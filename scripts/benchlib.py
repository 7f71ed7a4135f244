"""What the benchmark scripts share: test files with their digest, and the machine they ran on."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 16 << 20


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(CHUNK, remaining))
            f.write(chunk)
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def command_output(args: Sequence[str]) -> str:
    """The first line a command prints (stdout, else stderr), or why it could not run."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else ""


def machine() -> dict[str, str]:
    """The date, host, CPU, kernel, versions and Ferry commit a benchmark's figures belong to."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    head = command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "libs", "cli"])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "smbd": command_output(["smbd", "-V"]),
        "smbclient": command_output(["smbclient", "--version"]),
        "ferry": f"{head}{' + uncommitted changes in libs/ or cli/' if dirty else ''}",
    }
