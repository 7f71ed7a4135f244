"""Every NATS subject and JetStream bucket Ferry uses, in one place.

Subjects are ``ferry.<area>.<verb>[.<host>]``; host names are validated to be safe as
subject tokens (see :data:`ferry_runtime.config.HOST_NAME_RE`) and may contain dots, so a
subscriber to one host's subject uses the exact name and a subscriber to all uses ``>``.
"""

from __future__ import annotations

#: KV bucket of host inventories, keyed by host name, values expire unless refreshed.
INVENTORY_BUCKET = "ferry-inventory"

#: Published when a host's inventory changes (body: the new inventory).
INVENTORY_CHANGED_PREFIX = "ferry.inventory.changed"

#: Request/reply: a host's discovery service answers with its current inventory.
DISCOVERY_INTERFACES_PREFIX = "ferry.discovery.interfaces"


def inventory_changed(host: str) -> str:
    return f"{INVENTORY_CHANGED_PREFIX}.{host}"


def discovery_interfaces(host: str) -> str:
    return f"{DISCOVERY_INTERFACES_PREFIX}.{host}"


ALL_INVENTORY_CHANGES = f"{INVENTORY_CHANGED_PREFIX}.>"
