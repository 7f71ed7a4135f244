"""``ferry-selector``: run the selector service."""

from __future__ import annotations

import sys

from ferry_runtime.service import main as run_service

from .app import create_app
from .settings import SelectorSettings


def main() -> int:
    return run_service(
        SelectorSettings,
        create_app,
        "Serve Multichannel channel plans from the inventories, constraints and migration networks in NATS.",
    )


if __name__ == "__main__":
    sys.exit(main())
