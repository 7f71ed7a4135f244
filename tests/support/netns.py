"""Test hosts made of network namespaces and veth pairs, always torn down.

Addresses come from 198.18.0.0/15 (RFC 2544, set aside for benchmarking networks), so no
test traffic can be mistaken for traffic to anything real. Every object this module
creates is named with the ``fyt`` prefix, and :func:`sweep` removes leftovers of an
earlier, killed run.

Each run's objects carry its tag (:func:`short_id`); a run claims its tag (:func:`claim`, a
file under :data:`OWNERS` holding its pid) while it lives, and :func:`sweep` leaves alone what
carries the tag of a live process, so a test session that starts while another one runs does
not pull the other's namespaces away.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "fyt"
#: One file per live tag, named after it, holding the owner's pid (tmpfs: gone on reboot).
OWNERS = Path("/run/fyt-owners")


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ip_json(*args: str, ns: str | None = None) -> Any:
    return json.loads(ip("-j", *args, ns=ns) or "[]")


def claim(tag: str) -> None:
    """Mark ``tag`` as this process's, so that :func:`sweep` spares the objects that carry it."""
    OWNERS.mkdir(mode=0o700, exist_ok=True)
    (OWNERS / tag).write_text(str(os.getpid()))


def release(tag: str) -> None:
    with contextlib.suppress(OSError):
        (OWNERS / tag).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_tags() -> set[str]:
    """Tags claimed by processes that still run; stale claims are removed."""
    tags = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in OWNERS.iterdir():
            try:
                pid = int(entry.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                tags.add(entry.name)
            else:
                release(entry.name)
    return tags


def sweep() -> None:
    """Delete namespaces and root-namespace links left by an earlier run (not a live one's)."""
    spared = live_tags()

    def leftover(name: str) -> bool:
        return name.startswith(PREFIX) and not any(tag in name for tag in spared)

    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if leftover(name):
            ip("netns", "delete", name, check=False)
    for link in ip_json("link", "show"):
        if leftover(link["ifname"]):
            ip("link", "delete", link["ifname"], check=False)


def short_id() -> str:
    return uuid.uuid4().hex[:6]


@dataclass
class Namespace:
    """One test host: a network namespace."""

    name: str
    created: bool = False

    def create(self) -> Namespace:
        ip("netns", "add", self.name)
        self.created = True
        ip("link", "set", "lo", "up", ns=self.name)
        return self

    def delete(self) -> None:
        if self.created:
            ip("netns", "delete", self.name, check=False)
            self.created = False

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, **kwargs
        )

    def popen(
        self, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            env={**os.environ, **(env or {})},
            text=True,
            **kwargs,
        )

    def ip(self, *args: str, check: bool = True) -> str:
        return ip(*args, ns=self.name, check=check)

    def ip_json(self, *args: str) -> Any:
        return ip_json(*args, ns=self.name)


@dataclass
class Lab:
    """A set of test hosts joined to the root namespace through a bridge (the "switch").

    The root namespace holds the bridge with ``198.18.0.1/24``; host *i* gets a veth whose
    far end, ``uplink`` in the host's namespace, has ``198.18.0.<10+i>/24``.
    """

    tag: str = field(default_factory=short_id)
    namespaces: list[Namespace] = field(default_factory=list)
    bridge: str | None = None
    gateway: str = "198.18.0.1"

    def __post_init__(self) -> None:
        claim(self.tag)

    def setup_bridge(self) -> None:
        self.bridge = f"{PREFIX}br{self.tag}"
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, label: str) -> tuple[Namespace, str]:
        """A namespace attached to the bridge; returns it and its uplink address."""
        if self.bridge is None:
            self.setup_bridge()
        assert self.bridge is not None
        index = len(self.namespaces)
        ns = Namespace(f"{PREFIX}-{label}-{self.tag}").create()
        self.namespaces.append(ns)
        root_end = f"{PREFIX}{self.tag}h{index}"
        ip("link", "add", root_end, "type", "veth", "peer", "name", "uplink", "netns", ns.name)
        ip("link", "set", root_end, "master", self.bridge)
        ip("link", "set", root_end, "up")
        address = f"198.18.0.{10 + index}"
        ns.ip("addr", "add", f"{address}/24", "dev", "uplink")
        ns.ip("link", "set", "uplink", "up")
        return ns, address

    def add_namespace(self, label: str) -> Namespace:
        ns = Namespace(f"{PREFIX}-{label}-{self.tag}").create()
        self.namespaces.append(ns)
        return ns

    def teardown(self) -> None:
        for ns in self.namespaces:
            ns.delete()
        self.namespaces.clear()
        if self.bridge is not None:
            ip("link", "delete", self.bridge, check=False)
            self.bridge = None
        release(self.tag)
