"""The selector service's configuration (see deploy/local/selector.toml for an example)."""

from __future__ import annotations

from typing import ClassVar, Literal

from ferry_runtime.config import Section, ServiceSettings
from pydantic import Field
from smbcore.selection import PfcPolicy, SelectionPolicy


class SelectorOptions(Section):
    roce_without_pfc: Literal["exclude", "warn"] = Field(
        "exclude",
        description="a RoCE interface with PFC off or unknown: not used for RDMA (exclude), "
        "or used with a warning in the plan (warn); iWARP and InfiniBand are not affected",
    )
    max_channels: int = Field(32, ge=1, le=1024, description="connections in one session, at most")
    rdma_connections: int = Field(2, ge=1, le=64, description="connections per RDMA interface")
    rss_connections: int = Field(4, ge=1, le=64, description="connections per RSS interface")
    plain_connections: int = Field(1, ge=1, le=64, description="connections per other interface")
    unset_migration_networks: Literal["any", "none"] = Field(
        "any",
        description="a host with no migration-network settings: migrations may use any network, "
        "or none (as Windows with no migration network added)",
    )
    kv_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="copies of the constraints and host-settings buckets in a NATS cluster "
        "(set at bucket creation)",
    )
    kv_history: int = Field(
        5, ge=1, le=64, description="revisions kept per key of those buckets (set at bucket creation)"
    )
    retry_interval: float = Field(
        2.0, gt=0, description="seconds between attempts to open a bucket or restart a watcher"
    )
    cas_attempts: int = Field(
        5, ge=1, le=100, description="compare-and-swap attempts of a change before answering 409"
    )

    def policy(self) -> SelectionPolicy:
        return SelectionPolicy(
            max_channels=self.max_channels,
            rdma_connections=self.rdma_connections,
            rss_connections=self.rss_connections,
            plain_connections=self.plain_connections,
            roce_without_pfc=PfcPolicy(self.roce_without_pfc),
        )


class SelectorSettings(ServiceSettings):
    service_name: ClassVar[str] = "selector"

    selector: SelectorOptions = Field(default_factory=SelectorOptions)
