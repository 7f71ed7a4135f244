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


# -- the selector (services/selector) ------------------------------------------------------------

#: KV bucket of Multichannel constraints, one key per client host (schema ferry.constraints).
CONSTRAINTS_BUCKET = "ferry-constraints"

#: KV bucket of host settings, one key per host (schema ferry.host-settings): migration networks
#: now, more sections as services need them.
HOST_SETTINGS_BUCKET = "ferry-host-settings"

#: Queue group of the selector's responders: one instance answers each request.
SELECTOR_QUEUE = "ferry-selector"

#: Request/reply: the channel plan for (client, server, purpose).
SELECTOR_PLAN = "ferry.selector.plan"

#: Request/reply: the hosts whose inventory the selector holds.
SELECTOR_HOSTS = "ferry.selector.hosts"

#: Request/reply: Multichannel constraints (add interfaces, list, remove).
SELECTOR_CONSTRAINT_ADD = "ferry.selector.constraints.add"
SELECTOR_CONSTRAINT_LIST = "ferry.selector.constraints.list"
SELECTOR_CONSTRAINT_REMOVE = "ferry.selector.constraints.remove"

#: Request/reply: a host's migration networks (read, replace or clear).
SELECTOR_MIGRATION_NETWORKS_GET = "ferry.selector.migration-networks.get"
SELECTOR_MIGRATION_NETWORKS_SET = "ferry.selector.migration-networks.set"


# -- smbserver: temporary hidden migration shares (see ferry_runtime.migration_shares) --------

#: KV bucket of the migration shares every smbserver serves, keyed
#: ``<host>.<source>.<migration id>`` (dots in host names written as ``=``): a restarted
#: smbserver restores the shares whose lease still runs and cleans the staging folders of the rest.
SMBSERVER_LEASES_BUCKET = "ferry-smbserver-leases"

#: Request/reply: a source host's migrator asks a target host's smbserver for a migration share...
SMBSERVER_SHARE_CREATE_PREFIX = "ferry.smbserver.share.create"
#: ... renews its lease while the migration runs ...
SMBSERVER_SHARE_RENEW_PREFIX = "ferry.smbserver.share.renew"
#: ... and removes it when the migration ends or is cancelled.
SMBSERVER_SHARE_REMOVE_PREFIX = "ferry.smbserver.share.remove"


def smbserver_share_create(host: str) -> str:
    return f"{SMBSERVER_SHARE_CREATE_PREFIX}.{host}"


def smbserver_share_renew(host: str) -> str:
    return f"{SMBSERVER_SHARE_RENEW_PREFIX}.{host}"


def smbserver_share_remove(host: str) -> str:
    return f"{SMBSERVER_SHARE_REMOVE_PREFIX}.{host}"
