"""A host's network interfaces as the kernel reports them, and the inventory model Ferry publishes."""

from .model import (
    INVENTORY,
    Address,
    Interface,
    InterfaceOverride,
    Inventory,
    RdmaKind,
    RdmaPort,
    apply_overrides,
    format_speed,
    parse_speed,
)

__all__ = [
    "INVENTORY",
    "Address",
    "Interface",
    "InterfaceOverride",
    "Inventory",
    "RdmaKind",
    "RdmaPort",
    "apply_overrides",
    "format_speed",
    "parse_speed",
]
