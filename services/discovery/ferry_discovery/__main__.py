"""``ferry-discovery``: run the discovery service."""

from __future__ import annotations

import sys

from ferry_runtime.service import main as run_service

from .app import create_app
from .settings import DiscoverySettings


def main() -> int:
    return run_service(
        DiscoverySettings, create_app, "Publish this host's network interface inventory to NATS."
    )


if __name__ == "__main__":
    sys.exit(main())
