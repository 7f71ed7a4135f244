"""Processes the tests start: nats-server and Ferry services, each stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class NatsServer:
    """A real nats-server with JetStream, state in ``store``."""

    store: Path
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> NatsServer:
        if not self.port:
            self.port = free_port(self.host)
        self.store.mkdir(parents=True, exist_ok=True)
        self.log = self.store / "nats-server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(VENV_BIN / "nats-server"),
                    "-js",
                    "-a",
                    self.host,
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class Service:
    """A Ferry service process; its output is collected for assertions and failure reports."""

    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    netns: str | None = None
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    url: str | None = None
    _listening: threading.Event = field(default_factory=threading.Event)

    def start(self, wait_listening: float = 15.0) -> Service:
        argv = [*(["ip", "netns", "exec", self.netns] if self.netns else []), *self.argv]
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if wait_listening and not self._listening.wait(wait_listening):
            self.stop()
            raise TimeoutError(f"{self.argv[0]} did not start listening:\n{self.text}")
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            if line.startswith("listening "):
                self.url = line.split()[1]
                self._listening.set()

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
