"""Running a service: load config, configure logging, serve until SIGTERM/SIGINT, stop cleanly.

The stop sequence is: stop accepting HTTP connections, let requests in flight finish,
unwind the service's cleanup contexts (its own resources first, then the bus drains, then
the tracer flushes), all within ``shutdown_timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from .config import ConfigError, ServiceSettings, load_settings
from .logs import configure_logging

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)

#: Exit status for a configuration error (like EX_CONFIG in sysexits.h).
EXIT_CONFIG = 78


async def serve(app: web.Application, settings: ServiceSettings, stop: asyncio.Event | None = None) -> None:
    """Serve ``app`` until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout, access_log=None
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            log.info("HTTP API listening", extra={"url": f"http://{shown}:{port}"})
            # One line on stdout that tools (the local stack, tests) can read.
            print(f"listening http://{shown}:{port}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.wait_for(runner.cleanup(), settings.shutdown_timeout + 5)
    log.info("stopped")


def main(
    settings_cls: type[S],
    create_app: Callable[[S], web.Application],
    description: str,
    argv: list[str] | None = None,
) -> int:
    """The whole entry point of a service (its ``__main__`` calls only this)."""
    parser = argparse.ArgumentParser(prog=f"ferry-{settings_cls.service_name}", description=description)
    parser.add_argument(
        "--config", "-c", help="TOML configuration file (default: $FERRY_CONFIG, else defaults)"
    )
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(settings_cls, args.config)
    except ConfigError as exc:
        print(f"ferry-{settings_cls.service_name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(settings.model_dump_json(indent=2))
        return 0
    configure_logging(settings.logging, settings_cls.service_name)
    try:
        asyncio.run(serve(create_app(settings), settings))
    except OSError as exc:  # e.g. the HTTP port is taken
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    return 0
