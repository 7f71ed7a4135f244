"""The smbserver's migration-share API on the bus: what a source host's migrator asks a target
host's smbserver, and the names both sides derive from (source host, migration id).

For one migration of a VM from host SOURCE to this host, the smbserver serves

* the share ``<SOURCE>.<ID>$``: the trailing ``$`` marks it hidden (never in share listings
  unless hidden shares are asked for);
* rooted at the staging folder ``<destination>/.ferry-staging/<SOURCE>.<ID>/``, one subfolder
  per migration (as Hyper-V's ``$VSM$`` folder holds one per migration), created by the
  smbserver under the destination the migrator names, which must lie under one of the
  smbserver's allowed roots;
* open to one account only, the source host's identity ``host$<SOURCE>`` (the account's NT
  hash is in the target's user database; its password is the source host's secret);
* for a lease: the share is removed when the migrator removes it, or when ``lease_seconds``
  pass without a renewal; a removal by lease (or with ``keep_staging=False``) deletes the
  staging folder too.

Requests go to ``ferry.smbserver.share.{create,renew,remove}.<target host>`` (see
:mod:`ferry_runtime.subjects`) with the bodies below; create and renew answer a
:class:`MigrationShare`, remove a :class:`ShareRemoved`. Errors are answered as
:class:`~ferry_runtime.codec.ErrorReply` with an HTTP-like status: 400 (a malformed request),
403 (a destination outside the allowed roots, or no account for the source host), 404 (renew of
a share that is gone), 409 (the same migration with another destination), 503 (the lease
cannot be recorded). Creating is idempotent: the same (source, id, destination) again renews
the lease and answers the same share.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .codec import Schema
from .config import validate_host_name

#: A migration id: what names one migration (a UUID fits).
MIGRATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

#: A host's SMB account is this prefix and its host name (``host$hv01``).
HOST_ACCOUNT_PREFIX = "host$"

#: The folder, in a destination, that holds one staging folder per migration.
STAGING_DIR = ".ferry-staging"

#: SMB account names are at most 64 characters (smbcore's user database, as Windows' SAM).
MAX_ACCOUNT_LENGTH = 64

#: Share names are at most 80 characters (Windows' NetShareAdd limit).
MAX_SHARE_NAME_LENGTH = 80


def host_account(host: str) -> str:
    """The SMB account a host's migrator logs on with at other hosts' smbservers."""
    return f"{HOST_ACCOUNT_PREFIX}{host}"


def staging_name(source: str, migration_id: str) -> str:
    """The staging folder's name (in ``<destination>/.ferry-staging/``) for one migration."""
    return f"{source}.{migration_id}"


def share_name(source: str, migration_id: str) -> str:
    """The hidden share of one migration: ``<SOURCE>.<ID>$``."""
    return f"{staging_name(source, migration_id)}$"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ShareKey(_Body):
    """Which migration: the source host and the migration's id."""

    source: str = Field(description="the source host's name (its migrator is asking)")
    migration_id: str = Field(description="the migration's id: letters, digits, '-' and '_', up to 64")

    _check_source = field_validator("source")(validate_host_name)

    @field_validator("migration_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not MIGRATION_ID_RE.fullmatch(value):
            raise ValueError("letters, digits, '-' and '_' (starting with a letter or digit), at most 64")
        return value

    @model_validator(mode="after")
    def _check_lengths(self) -> ShareKey:
        if len(host_account(self.source)) > MAX_ACCOUNT_LENGTH:
            raise ValueError(
                f"source host name too long for its SMB account {host_account(self.source)!r} "
                f"(at most {MAX_ACCOUNT_LENGTH} characters)"
            )
        if len(share_name(self.source, self.migration_id)) > MAX_SHARE_NAME_LENGTH:
            raise ValueError(
                f"share name {share_name(self.source, self.migration_id)!r} longer than "
                f"{MAX_SHARE_NAME_LENGTH} characters"
            )
        return self

    @property
    def share(self) -> str:
        return share_name(self.source, self.migration_id)

    @property
    def account(self) -> str:
        return host_account(self.source)


class CreateShare(ShareKey):
    destination: str = Field(description="absolute folder on the target the migration writes into")
    lease_seconds: float = Field(gt=0, description="the share goes away unless renewed within this")

    @field_validator("destination")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "\0" in value or not PurePosixPath(value).is_absolute():
            raise ValueError("an absolute path")
        return value


class RenewShare(ShareKey):
    lease_seconds: float = Field(gt=0, description="from now")


class RemoveShare(ShareKey):
    keep_staging: bool = Field(
        False,
        description="keep the staging folder and its files (the target's migrator adopts them); "
        "otherwise it is deleted with the share",
    )
    reason: str = Field("", max_length=200, description="why (completed, cancelled, failed): for the log")


class MigrationShare(_Body):
    """A migration share as the target's smbserver serves it."""

    host: str = Field(description="the host serving the share (the migration's target)")
    share: str
    unc: str = Field(description="\\\\host\\share")
    source: str
    migration_id: str
    account: str = Field(description="the one account that may connect: the source host's identity")
    destination: str
    path: str = Field(description="the staging folder on the target: the share's root")
    encrypt: bool
    lease_seconds: float
    expires_at: float = Field(description="UNIX time the share goes away unless renewed")
    created: bool = Field(False, description="true when this request created it (not an idempotent repeat)")


class ShareRemoved(_Body):
    share: str
    removed: bool = Field(description="false when no such share existed (removal is idempotent)")
    staging_removed: bool = Field(description="the staging folder was deleted")


CREATE_SHARE = Schema("ferry.smbserver.create-share", 1, CreateShare)
RENEW_SHARE = Schema("ferry.smbserver.renew-share", 1, RenewShare)
REMOVE_SHARE = Schema("ferry.smbserver.remove-share", 1, RemoveShare)
MIGRATION_SHARE = Schema("ferry.smbserver.migration-share", 1, MigrationShare)
SHARE_REMOVED = Schema("ferry.smbserver.share-removed", 1, ShareRemoved)
