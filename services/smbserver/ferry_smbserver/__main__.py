"""``ferry-smbserver``: run the smbserver service."""

from __future__ import annotations

import sys

from ferry_runtime.service import main as run_service

from .app import create_app
from .settings import SmbServerSettings


def main() -> int:
    return run_service(
        SmbServerSettings,
        create_app,
        "Serve SMB 3 shares and temporary migration shares; sessions and channels over HTTP.",
    )


if __name__ == "__main__":
    sys.exit(main())
