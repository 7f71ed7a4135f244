"""Fixtures shared by all tests: root checks, a real nats-server, test hosts in namespaces."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import Lab, sweep
from tests.support.procs import NatsServer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(tool: str | None, name: str, package: str = "") -> str:
    """``tool`` (a path found by ``shutil.which``), or, when it is missing, skip locally and
    fail in CI (nothing may be skipped there; scripts/setup.sh installs the peers as root)."""
    if tool is None:
        where = f"{package}; " if package else ""
        message = f"{name} is not installed ({where}scripts/setup.sh installs it as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return tool


def require_root() -> None:
    """Namespaces need root: without it, skip locally, but fail in CI (nothing may be skipped there)."""
    if os.geteuid() != 0:
        message = "needs root to build network namespaces"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers() -> None:
    if os.geteuid() == 0:
        sweep()


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_root()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.teardown()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream on loopback."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()
