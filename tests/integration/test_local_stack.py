"""`make run`'s command: the local stack starts nats-server and discovery, serves this host's
inventory over NATS, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.procs import VENV_BIN, free_port

REPO = Path(__file__).resolve().parents[2]


def test_stack_runs_serves_and_stops(tmp_path: Path) -> None:
    shutil.copy(REPO / "deploy/local/discovery.toml", tmp_path / "discovery.toml")
    nats_port, monitor_port, http_port = free_port(), free_port(), free_port()
    (tmp_path / "stack.toml").write_text(
        f"""
state_dir = "{tmp_path / "state"}"
ready_timeout = 30
[nats]
port = {nats_port}
monitor_port = {monitor_port}
[[services]]
name = "discovery"
command = "ferry-discovery"
config = "discovery.toml"
http_port = {http_port}
"""
    )
    host = "stack-test-host"
    stack = subprocess.Popen(
        [str(VENV_BIN / "ferry"), "stack", "run", "--file", str(tmp_path / "stack.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "FERRY_HOST__NAME": host},
    )
    try:
        assert stack.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = stack.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Ctrl-C"):
                break
        summary = "\n".join(lines)
        assert f"nats://127.0.0.1:{nats_port}" in summary, summary + (
            stack.stderr.read() if stack.poll() else ""
        )
        assert f"http://127.0.0.1:{http_port}" in summary
        assert f"ferry interfaces --host {host}" in summary

        proc = subprocess.run(
            [
                str(VENV_BIN / "ferry"),
                "interfaces",
                "--host",
                host,
                "--json",
                "--nats",
                f"nats://127.0.0.1:{nats_port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        local = json.loads(
            subprocess.run(
                [str(VENV_BIN / "ferry"), "interfaces", "--json"], capture_output=True, text=True, check=True
            ).stdout
        )
        served = json.loads(proc.stdout)
        assert served["host"] == host
        assert [i["name"] for i in served["interfaces"]] == [i["name"] for i in local["interfaces"]]
        assert (tmp_path / "state" / "nats").is_dir()
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(30)
        stderr = stack.stderr.read() if stack.stderr else ""
    assert code == 0, stderr
    assert stderr.rstrip().endswith("stopped"), stderr
