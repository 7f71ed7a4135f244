"""The smbserver's configuration (see deploy/local/smbserver.toml for an example).

``[smb]`` is the SMB server itself (where it listens, the user database, security),
``[limits]`` the limits of :class:`smbcore.config.ServerLimits`, ``[shares.<name>]`` the configured shares,
``[migration]`` the temporary migration shares, ``[advertise]`` and ``[interfaces.<name>]``
what FSCTL_QUERY_NETWORK_INTERFACE_INFO tells clients.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import ClassVar, Literal

from ferry_hostnet import parse_speed
from ferry_runtime.config import Section, ServiceSettings
from ferry_runtime.migration_shares import STAGING_DIR
from pydantic import Field, field_validator, model_validator
from smbcore.auth import UserDatabase, UserDatabaseError
from smbcore.config import ServerLimits
from smbcore.negotiate import Dialect

DIALECTS: dict[str, Dialect] = {
    "2.0.2": Dialect.SMB_2_0_2,
    "2.1": Dialect.SMB_2_1,
    "3.0": Dialect.SMB_3_0,
    "3.0.2": Dialect.SMB_3_0_2,
    "3.1.1": Dialect.SMB_3_1_1,
}

_LIMIT_DEFAULTS = ServerLimits()
_SHARE_NAME_FORBIDDEN = set('\\/:*?"<>|')


def _split(value: object) -> object:
    """A list from the environment: ``FERRY_SMB__LISTEN=10.0.0.1,10.0.1.1``."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _speed(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return parse_speed(value)
    raise ValueError("a speed such as 10G, 25Gbit/s or a number of bit/s")


class Limits(Section):
    """The SMB server's limits; each unset one keeps smbcore's default (ServerLimits)."""

    max_read: int | None = Field(None, gt=0, description=f"bytes (default {_LIMIT_DEFAULTS.max_read})")
    max_write: int | None = Field(None, gt=0, description=f"bytes (default {_LIMIT_DEFAULTS.max_write})")
    max_credits: int | None = Field(None, gt=0, description=f"default {_LIMIT_DEFAULTS.max_credits}")
    max_sessions: int | None = Field(
        None, gt=0, description=f"per connection (default {_LIMIT_DEFAULTS.max_sessions})"
    )
    max_opens: int | None = Field(
        None, gt=0, description=f"per session (default {_LIMIT_DEFAULTS.max_opens})"
    )
    max_channels: int | None = Field(
        None, gt=0, description=f"per session (default {_LIMIT_DEFAULTS.max_channels})"
    )
    handshake_timeout: float | None = Field(
        None, gt=0, description=f"seconds (default {_LIMIT_DEFAULTS.handshake_timeout})"
    )
    idle_timeout: float | None = Field(
        None, gt=0, description=f"seconds (default {_LIMIT_DEFAULTS.idle_timeout})"
    )

    def server_limits(self) -> ServerLimits:
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        if "max_read" in values or "max_write" in values:
            # Room for the largest READ/WRITE with its headers and a transform.
            largest = max(values.get("max_read", 0), values.get("max_write", 0), _LIMIT_DEFAULTS.max_write)
            values["max_pdu"] = max(_LIMIT_DEFAULTS.max_pdu, largest + 64 * 1024)
        return dataclasses.replace(_LIMIT_DEFAULTS, **values)


class SmbOptions(Section):
    listen: list[str] = Field(
        default_factory=lambda: ["0.0.0.0"],
        min_length=1,
        description='addresses to listen on ("0.0.0.0" every IPv4 address, "::" every IPv6 one)',
    )
    port: int = Field(445, ge=0, le=65535, description="0 picks a free port (tests)")
    users: str = Field(
        "/etc/ferry/smbusers",
        description="user database (smbpasswd form, NT hashes only; `ferry smbserver user add`); "
        "a missing file is an empty database",
    )
    server_name: str | None = Field(None, max_length=15, description="NetBIOS name (default: the host's)")
    require_signing: bool = True
    encrypt_all: bool = Field(False, description="require encryption on every share")
    min_dialect: Literal["2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"] = "2.0.2"

    _split_listen = field_validator("listen", mode="before")(_split)

    @field_validator("users")
    @classmethod
    def _readable_users(cls, value: str) -> str:
        try:
            UserDatabase(value)
        except UserDatabaseError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def min_dialect_value(self) -> Dialect:
        return DIALECTS[self.min_dialect]


class ShareOptions(Section):
    """One configured share: ``[shares.vms] path = "/var/lib/ferry/vms"``."""

    path: str = Field(description="the folder it serves (must exist)")
    encrypt: bool = False
    users: list[str] | None = Field(None, description="who may connect (default: every account)")
    hidden: bool | None = Field(None, description="left out of share listings (default: a name ending in $)")
    guest_ok: bool = Field(
        False, description="anonymous and guest sessions may connect too (no password; nothing signed)"
    )

    @field_validator("path")
    @classmethod
    def _existing_folder(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError("an absolute path")
        if not Path(value).is_dir():
            raise ValueError(f"{value} is not a folder")
        return value


class MigrationOptions(Section):
    allowed_roots: list[str] = Field(
        default_factory=list,
        description="folders under which migration destinations may lie (none: migration shares refused)",
    )
    min_lease: float = Field(1.0, gt=0, description="shortest lease granted, seconds")
    max_lease: float = Field(3600.0, gt=0, description="longest lease granted, seconds")
    encrypt: bool = Field(False, description="require encryption on migration shares")
    require_account: bool = Field(
        True, description="refuse a share for a source host with no host$<name> account in the user database"
    )
    kv_replicas: int = Field(1, ge=1, le=5, description="copies of the lease bucket (set at bucket creation)")
    maintenance_interval: float = Field(
        5.0, gt=0, description="seconds between retries of lease bookkeeping NATS was not there for"
    )

    _split_roots = field_validator("allowed_roots", mode="before")(_split)

    @field_validator("allowed_roots")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        resolved = []
        for root in value:
            path = Path(os.path.expanduser(root))
            if not path.is_absolute():
                path = Path.cwd() / path  # the local stack's roots are relative to where it runs
            if STAGING_DIR in path.parts:
                raise ValueError(f"{root}: a root inside a staging folder")
            resolved.append(str(path))
        return resolved

    @model_validator(mode="after")
    def _lease_range(self) -> MigrationOptions:
        if self.min_lease > self.max_lease:
            raise ValueError(f"min_lease ({self.min_lease}) above max_lease ({self.max_lease})")
        return self


class AdvertiseOptions(Section):
    """Where the interface list of FSCTL_QUERY_NETWORK_INTERFACE_INFO comes from: this host's
    inventory in the KV bucket ``ferry-inventory`` (kept by the discovery service), or the
    kernel when that is out of reach."""

    source: Literal["auto", "discovery", "kernel"] = Field(
        "auto", description="auto: discovery's inventory, the kernel when NATS or the inventory is missing"
    )
    refresh_interval: float = Field(10.0, gt=0, description="seconds between re-reads")
    include_loopback: bool = False
    default_speed: int = Field(
        1_000_000_000, gt=0, description="link speed advertised when neither the kernel nor an override says"
    )

    _check_speed = field_validator("default_speed", mode="before")(_speed)


class AdvertiseOverride(Section):
    """Per-interface overrides of what is advertised: ``[interfaces.eth0] speed = "25G"``."""

    advertise: bool = Field(True, description="false: never advertise this interface")
    speed: int | None = Field(None, description="link speed: 10G, 25Gbit/s, or bit/s")
    rss: bool | None = None
    rdma: bool | None = None

    _check_speed = field_validator("speed", mode="before")(_speed)


class SmbServerSettings(ServiceSettings):
    service_name: ClassVar[str] = "smbserver"

    smb: SmbOptions = Field(default_factory=SmbOptions)
    limits: Limits = Field(default_factory=Limits)
    shares: dict[str, ShareOptions] = Field(default_factory=dict)
    migration: MigrationOptions = Field(default_factory=MigrationOptions)
    advertise: AdvertiseOptions = Field(default_factory=AdvertiseOptions)
    interfaces: dict[str, AdvertiseOverride] = Field(default_factory=dict)

    @field_validator("shares")
    @classmethod
    def _share_names(cls, value: dict[str, ShareOptions]) -> dict[str, ShareOptions]:
        seen: set[str] = set()
        for name in value:
            if not name or len(name) > 80 or set(name) & _SHARE_NAME_FORBIDDEN:
                raise ValueError(f"invalid share name {name!r}")
            if name.lower() == "ipc$":
                raise ValueError("IPC$ is always served; do not configure it")
            if name.lower() in seen:
                raise ValueError(f"share {name!r} configured twice (names ignore case)")
            seen.add(name.lower())
        return value

    @model_validator(mode="after")
    def _guests_without_keys(self) -> SmbServerSettings:
        for name, options in self.shares.items():
            if options.guest_ok and (options.encrypt or self.smb.encrypt_all):
                raise ValueError(
                    f"shares.{name}: guest_ok and encryption exclude each other (guests have no key)"
                )
        return self
