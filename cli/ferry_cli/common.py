"""What the subcommands share: errors, the NATS URL, a short-lived bus connection."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ferry_runtime.bus import Bus
from ferry_runtime.config import HostSettings, NatsSettings, TracingSettings
from ferry_runtime.metrics import RuntimeMetrics
from ferry_runtime.tracing import Telemetry
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

DEFAULT_NATS = "nats://127.0.0.1:4222"


class CliError(Exception):
    """A failure to report in one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_nats_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats",
        metavar="URL",
        default=os.environ.get("FERRY_NATS__URL", DEFAULT_NATS),
        help="NATS server(s), comma-separated (default: $FERRY_NATS__URL or %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for NATS (default: %(default)s)"
    )


@asynccontextmanager
async def bus_connection(url: str, timeout: float) -> AsyncIterator[Bus]:
    """A connected bus for one command; fails fast with a clear message if NATS is not there."""
    try:
        settings = NatsSettings(url=url, connect_timeout=min(timeout, 2.0), request_timeout=timeout)
    except ValidationError as exc:
        raise CliError(f"--nats: {exc.errors()[0]['msg']}", 2) from None
    telemetry = Telemetry("ferry-cli", HostSettings(), TracingSettings())
    bus = Bus(settings, "ferry-cli", telemetry, RuntimeMetrics(CollectorRegistry()))
    await bus.start()
    try:
        try:
            await bus.wait_connected(timeout)
        except Exception as exc:
            raise CliError(f"cannot reach NATS at {url}: {exc}") from None
        yield bus
    finally:
        await bus.close()
        telemetry.shutdown()
