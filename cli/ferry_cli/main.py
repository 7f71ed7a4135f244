"""``ferry``: the command-line tool, one subcommand per area.

Each area lives in its own module with ``register(subparsers)``; this module only wires
them together, so the entry point stays thin.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import host, interfaces, plan, smb, smbserver, stack
from .common import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry",
        description="Ferry: move running VMs between hosts over SMB 3 Multichannel.",
    )
    sub = parser.add_subparsers(dest="area", metavar="COMMAND", required=True)
    interfaces.register(sub)
    plan.register(sub)
    host.register(sub)
    smb.register(sub)
    smbserver.register(sub)
    stack.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The CLI reports failures itself, in one line; library warnings would only repeat them.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
    except CliError as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
