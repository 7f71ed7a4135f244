"""The discovery service's configuration (see deploy/local/discovery.toml for an example)."""

from __future__ import annotations

from typing import ClassVar

from ferry_hostnet import InterfaceOverride
from ferry_runtime.config import Section, ServiceSettings
from pydantic import Field, model_validator


class DiscoveryOptions(Section):
    refresh_interval: float = Field(10.0, gt=0, description="seconds between re-reads and KV refreshes")
    inventory_ttl: float = Field(
        60.0,
        gt=0,
        description="seconds a host's inventory lives in KV without a refresh (set at bucket creation)",
    )
    debounce: float = Field(0.2, ge=0, description="seconds to let a burst of netlink events settle")
    include_loopback: bool = False
    kv_replicas: int = Field(
        1, ge=1, le=5, description="copies of the inventory bucket in a NATS cluster (set at bucket creation)"
    )

    @model_validator(mode="after")
    def _ttl_outlives_refresh(self) -> DiscoveryOptions:
        if self.inventory_ttl < 2 * self.refresh_interval:
            raise ValueError(
                f"inventory_ttl ({self.inventory_ttl}s) must be at least twice refresh_interval "
                f"({self.refresh_interval}s), or a live host's inventory would expire"
            )
        return self


class DiscoverySettings(ServiceSettings):
    service_name: ClassVar[str] = "discovery"

    discovery: DiscoveryOptions = Field(default_factory=DiscoveryOptions)
    #: Per-interface overrides, by interface name: ``[interfaces.eth0] speed = "25G"``.
    interfaces: dict[str, InterfaceOverride] = Field(default_factory=dict)
