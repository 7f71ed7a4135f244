"""Building a host's inventory: the kernel's view plus the operator's overrides and labels."""

from __future__ import annotations

import time
from pathlib import Path

from .kernel import read_interfaces
from .model import InterfaceOverride, Inventory, apply_overrides


def collect_inventory(
    host: str,
    labels: dict[str, str],
    overrides: dict[str, InterfaceOverride],
    *,
    include_loopback: bool = False,
    sysfs: Path = Path("/sys"),
) -> Inventory:
    interfaces = apply_overrides(read_interfaces(sysfs, include_loopback=include_loopback), overrides)
    return Inventory(host=host, labels=labels, interfaces=interfaces, collected_at=time.time())
