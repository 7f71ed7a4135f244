"""``ferry stack run``: the local stack on its embedded default, for one host.

Starts a nats-server with JetStream (state under the stack's folder) and each service of
the stack file as child processes, waits until each is ready, prints where everything
listens, and on Ctrl-C or SIGTERM stops the services first, then NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from ferry_runtime.config import HostSettings
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .common import CliError

DEFAULT_STACK = Path("deploy/local/stack.toml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NatsServerConfig(_Model):
    listen: str = "127.0.0.1"
    port: int = Field(4222, ge=1, le=65535)
    monitor_port: int = Field(8222, ge=0, le=65535, description="0 disables the monitoring endpoint")


class ServiceEntry(_Model):
    name: str
    command: str = Field(description="the console script, found next to this Python or on PATH")
    config: str | None = Field(None, description="the service's TOML file, relative to the stack file")
    http_port: int = Field(ge=0, le=65535)


class StackConfig(_Model):
    state_dir: str = ".ferry"
    ready_timeout: float = Field(30.0, gt=0)
    nats: NatsServerConfig = Field(default_factory=NatsServerConfig)
    services: list[ServiceEntry] = Field(default_factory=list)


def load_stack(path: Path) -> StackConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return StackConfig.model_validate(data)
    except FileNotFoundError:
        raise CliError(f"stack file {path} does not exist", 2) from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"stack file {path} is not valid TOML: {exc}", 2) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"stack file {path} is not UTF-8: {exc}", 2) from None
    except OSError as exc:
        raise CliError(f"cannot read stack file {path}: {exc.strerror}", 2) from None
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise CliError(f"invalid stack file {path}:\n" + "\n".join(lines), 2) from None


def find_program(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise CliError(f"{name} not found (run `make setup`, which installs it into .venv)")
    return found


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    url: str | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


async def _pump(
    child: Child, stream: asyncio.StreamReader | None, listening: asyncio.Future[str] | None
) -> None:
    if stream is None:
        return
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        if listening is not None and not listening.done() and text.startswith("listening "):
            listening.set_result(text.split(" ", 1)[1])
            continue
        print(f"[{child.name}] {text}", file=sys.stderr, flush=True)


async def _start(
    name: str, argv: list[str], env: dict[str, str], want_url: bool
) -> tuple[Child, asyncio.Future[str]]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
    )
    child = Child(name, process)
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    child.pumps = [
        asyncio.create_task(_pump(child, process.stdout, listening if want_url else None)),
        asyncio.create_task(_pump(child, process.stderr, None)),
    ]
    return child, listening


async def _wait_ready(url: str, child: Child, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if child.process.returncode is not None:
                raise CliError(f"{child.name} exited with status {child.process.returncode} while starting")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise CliError(f"{child.name} not ready after {timeout}s (see {url}/readyz)")


async def _wait_port(host: str, port: int, child: Child, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if child.process.returncode is not None:
            raise CliError(f"{child.name} exited with status {child.process.returncode} while starting")
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise CliError(f"{child.name} is not listening on {host}:{port} after {timeout}s")


async def _stop(child: Child, timeout: float = 15.0) -> None:
    if child.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.process.wait(), timeout)
    except TimeoutError:
        print(f"[{child.name}] did not stop in {timeout}s, killing", file=sys.stderr)
        child.process.kill()
        await child.process.wait()


async def run_stack(stack_file: Path) -> int:
    config = load_stack(stack_file)
    base = stack_file.parent
    state = Path(config.state_dir)
    (state / "nats").mkdir(parents=True, exist_ok=True)
    host = HostSettings().name
    nats_url = f"nats://{config.nats.listen}:{config.nats.port}"
    env = dict(
        os.environ, FERRY_NATS__URL=nats_url, FERRY_HOST__NAME=os.environ.get("FERRY_HOST__NAME", host)
    )
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = 0
    try:
        nats_argv = [
            find_program("nats-server"),
            "--jetstream",
            "--store_dir", str(state / "nats"),
            "--addr", config.nats.listen,
            "--port", str(config.nats.port),
            "--server_name", f"ferry-{host}",
        ]  # fmt: skip
        if config.nats.monitor_port:
            nats_argv += ["--http_port", str(config.nats.monitor_port)]
        nats_child, _ = await _start("nats", nats_argv, env, want_url=False)
        children.append(nats_child)
        await _wait_port(config.nats.listen, config.nats.port, nats_child, config.ready_timeout)
        rows = [
            (
                "nats",
                nats_url
                + (
                    f"  (monitoring http://{config.nats.listen}:{config.nats.monitor_port})"
                    if config.nats.monitor_port
                    else ""
                ),
            )
        ]
        for entry in config.services:
            argv = [find_program(entry.command)]
            if entry.config:
                argv += ["--config", str((base / entry.config).resolve())]
            child_env = dict(env, FERRY_HTTP__PORT=str(entry.http_port))
            child, listening = await _start(entry.name, argv, child_env, want_url=True)
            children.append(child)
            try:
                child.url = await asyncio.wait_for(asyncio.shield(listening), config.ready_timeout)
            except TimeoutError:
                raise CliError(f"{entry.name} did not start listening in {config.ready_timeout}s") from None
            await _wait_ready(child.url, child, config.ready_timeout)
            rows.append((entry.name, f"{child.url}  (API: {child.url}/openapi.json)"))
        print(f"Ferry local stack for host {env['FERRY_HOST__NAME']} (state in {state}/)")
        for name, where in rows:
            print(f"  {name:<12} {where}")
        print(f"Try: .venv/bin/ferry interfaces --host {env['FERRY_HOST__NAME']}")
        print("Ctrl-C stops the stack.", flush=True)
        waiters = [asyncio.create_task(c.process.wait()) for c in children]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = next(c for c, w in zip(children, waiters, strict=True) if w in done)
            print(
                f"ferry: {dead.name} exited with status {dead.process.returncode}; stopping the stack",
                file=sys.stderr,
            )
            status = 1
        for task in [stopper, *waiters]:
            task.cancel()
    except CliError as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        status = 1
    finally:
        print("stopping ...", file=sys.stderr, flush=True)
        for child in reversed(children):
            await _stop(child)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("stopped", file=sys.stderr)
    return status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stack", help="run Ferry's local stack (nats-server and the services)")
    stack_sub = p.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    run_p = stack_sub.add_parser("run", help="start the stack in the foreground; Ctrl-C stops it")
    run_p.add_argument("--file", type=Path, default=DEFAULT_STACK, help="stack file (default: %(default)s)")
    run_p.set_defaults(run=lambda args: asyncio.run(run_stack(args.file)))
