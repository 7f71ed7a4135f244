"""The smbserver's settings, its shipped configuration files, and the migration-share API's
messages and names (ferry_runtime.migration_shares)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ferry_runtime import subjects
from ferry_runtime.codec import PayloadError
from ferry_runtime.config import ConfigError, load_settings
from ferry_runtime.migration_shares import (
    CREATE_SHARE,
    MIGRATION_SHARE,
    CreateShare,
    MigrationShare,
    RemoveShare,
    RenewShare,
    host_account,
    share_name,
)
from ferry_smbserver.app import configured_shares
from ferry_smbserver.settings import SmbServerSettings
from pydantic import ValidationError
from smbcore.config import ServerLimits
from smbcore.messages import ShareType
from smbcore.negotiate import Dialect

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["deploy/local/smbserver.toml", "deploy/systemd/smbserver.toml.example", "k8s/base/smbserver.toml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_HOST__NAME", "hv01")
    settings = load_settings(SmbServerSettings, REPO / path)
    assert settings.migration.allowed_roots
    assert all(Path(root).is_absolute() for root in settings.migration.allowed_roots)
    assert settings.limits.server_limits() == ServerLimits()


def test_defaults() -> None:
    settings = SmbServerSettings()
    assert settings.smb.port == 445
    assert settings.smb.listen == ["0.0.0.0"]
    assert settings.smb.min_dialect_value == Dialect.SMB_2_0_2
    assert settings.migration.allowed_roots == []
    assert settings.advertise.source == "auto"


def test_environment_lists_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_SMB__LISTEN", "127.0.0.1, 10.0.0.1")
    monkeypatch.setenv("FERRY_MIGRATION__ALLOWED_ROOTS", f"{tmp_path}/a,{tmp_path}/b")
    monkeypatch.setenv("FERRY_LIMITS__MAX_CHANNELS", "4")
    monkeypatch.setenv("FERRY_LIMITS__MAX_WRITE", str(16 << 20))
    monkeypatch.setenv("FERRY_SMB__MIN_DIALECT", "3.1.1")
    settings = load_settings(SmbServerSettings)
    assert settings.smb.listen == ["127.0.0.1", "10.0.0.1"]
    assert settings.migration.allowed_roots == [f"{tmp_path}/a", f"{tmp_path}/b"]
    limits = settings.limits.server_limits()
    assert limits.max_channels == 4
    assert limits.max_write == 16 << 20
    assert limits.max_pdu >= limits.max_write + 64  # room for the largest WRITE
    assert limits.max_read == ServerLimits().max_read
    assert settings.smb.min_dialect_value == Dialect.SMB_3_1_1


def test_relative_roots_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = SmbServerSettings.model_validate({"migration": {"allowed_roots": [".ferry/vms"]}})
    assert settings.migration.allowed_roots == [str(tmp_path / ".ferry/vms")]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[smb]\nport = 70000\n", "smb.port"),
        ("[smb]\nmin_dialect = '1.0'\n", "smb.min_dialect"),
        ("[limits]\nmax_channels = 0\n", "limits.max_channels"),
        ("[shares.data]\npath = 'relative'\n", "shares.data.path"),
        ("[shares.data]\npath = '/nonexistent-ferry-folder'\n", "is not a folder"),
        ("[shares.'a/b']\npath = '/tmp'\n", "invalid share name"),
        ("[shares.'IPC$']\npath = '/tmp'\n", "IPC$ is always served"),
        ("[shares.data]\npath = '/tmp'\n[shares.DATA]\npath = '/tmp'\n", "configured twice"),
        ("[migration]\nmin_lease = 10\nmax_lease = 5\n", "above max_lease"),
        ("[migration]\nallowed_roots = ['/x/.ferry-staging']\n", "inside a staging folder"),
        ("[interfaces.eth0]\nspeed = 'fast'\n", "interfaces.eth0.speed"),
        ("[interfaces.eth0]\nrdma = 'roce'\n", "interfaces.eth0.rdma"),
        ("[advertise]\nsource = 'dhcp'\n", "advertise.source"),
        ("[smb]\nusers = '/proc/self'\n", "smb.users"),
        (
            "[shares.pub]\npath = '/tmp'\nguest_ok = true\nencrypt = true\n",
            "shares.pub: guest_ok and encryption",
        ),
        ("[smb]\nencrypt_all = true\n[shares.pub]\npath = '/tmp'\nguest_ok = true\n", "shares.pub: guest_ok"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "smbserver.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(SmbServerSettings, config)
    assert expected in str(err.value)


def test_configured_shares(tmp_path: Path) -> None:
    settings = SmbServerSettings.model_validate(
        {
            "smb": {"encrypt_all": False},
            "shares": {
                "data": {"path": str(tmp_path), "users": ["Alice"]},
                "admin$": {"path": str(tmp_path), "encrypt": True},
                "shown$": {"path": str(tmp_path), "hidden": False},
            },
        }
    )
    shares = configured_shares(settings)
    assert set(shares) == {"data", "admin$", "shown$", "IPC$"}
    assert shares["data"].users == frozenset({"alice"}) and not shares["data"].hidden
    assert shares["admin$"].hidden and shares["admin$"].encrypt
    assert not shares["shown$"].hidden
    assert shares["IPC$"].share_type == ShareType.PIPE and not shares["IPC$"].hidden
    assert not any(share.guest_ok for share in shares.values())


def test_a_guest_share_opens_ipc_to_guests(tmp_path: Path) -> None:
    settings = SmbServerSettings.model_validate(
        {"shares": {"pub": {"path": str(tmp_path), "guest_ok": True}, "data": {"path": str(tmp_path)}}}
    )
    shares = configured_shares(settings)
    assert shares["pub"].guest_ok and shares["IPC$"].guest_ok and not shares["data"].guest_ok


# -- the migration-share API's messages ---------------------------------------------------------


def test_names() -> None:
    assert share_name("hv01", "7f3a") == "hv01.7f3a$"
    assert host_account("hv01") == "host$hv01"
    request = CreateShare(
        source="hv01", migration_id="7f3a", destination="/var/lib/ferry/vms", lease_seconds=30
    )
    assert request.share == "hv01.7f3a$" and request.account == "host$hv01"
    assert (
        subjects.smbserver_share_create("hv02.example.net") == "ferry.smbserver.share.create.hv02.example.net"
    )
    assert subjects.smbserver_share_renew("hv02") == "ferry.smbserver.share.renew.hv02"
    assert subjects.smbserver_share_remove("hv02") == "ferry.smbserver.share.remove.hv02"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"source": "bad host"}, "source"),
        ({"source": "h" * 60}, "too long for its SMB account"),
        ({"migration_id": "a/b"}, "migration_id"),
        ({"migration_id": "-x"}, "migration_id"),
        ({"migration_id": "x" * 65}, "migration_id"),
        ({"destination": "relative/path"}, "destination"),
        ({"lease_seconds": 0}, "lease_seconds"),
    ],
)
def test_create_requests_are_validated(fields: dict[str, object], problem: str) -> None:
    body: dict[str, object] = {
        "source": "hv01",
        "migration_id": "m1",
        "destination": "/var/lib/ferry/vms",
        "lease_seconds": 30,
    }
    with pytest.raises(ValidationError) as err:
        CreateShare.model_validate({**body, **fields})
    assert problem in str(err.value)


def test_share_name_length_is_bounded() -> None:
    # 59-character host (the account limit) plus a 64-character id is more than 80.
    with pytest.raises(ValidationError, match="longer than 80"):
        RenewShare(source="h" * 59, migration_id="m" * 64, lease_seconds=5)
    assert RenewShare(source="h" * 59, migration_id="m" * 19, lease_seconds=5).share.endswith("$")


def test_messages_round_trip_and_refuse_others() -> None:
    request = CreateShare(source="hv01", migration_id="m1", destination="/d", lease_seconds=3)
    assert CREATE_SHARE.decode(CREATE_SHARE.encode(request)) == request
    reply = MigrationShare(
        host="hv02", share="hv01.m1$", unc="\\\\hv02\\hv01.m1$", source="hv01", migration_id="m1",
        account="host$hv01", destination="/d", path="/d/.ferry-staging/hv01.m1", encrypt=False,
        lease_seconds=3, expires_at=1.0, created=True,
    )  # fmt: skip
    assert MIGRATION_SHARE.decode(MIGRATION_SHARE.encode(reply)) == reply
    with pytest.raises(PayloadError):
        CREATE_SHARE.decode(MIGRATION_SHARE.encode(reply))
    assert RemoveShare(source="hv01", migration_id="m1").keep_staging is False
    assert json.loads(reply.model_dump_json())["unc"] == "\\\\hv02\\hv01.m1$"


# -- the deployment files --------------------------------------------------------------------------


def test_dashboard_shows_the_metrics() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/ferry-smbserver.json").read_text())
    assert dashboard["uid"] == "ferry-smbserver"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in (
        "ferry_smbserver_sessions",
        "ferry_smbserver_channels",
        "ferry_smbserver_share_bytes_total",
        "ferry_smbserver_interface_bytes_total",
        "ferry_smbserver_request_duration_seconds_bucket",
        "ferry_smbserver_errors_total",
        "ferry_smbserver_migration_share_events_total",
    ):
        assert metric in exprs
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_systemd_unit_and_kubernetes_manifests() -> None:
    unit = (REPO / "deploy/systemd/ferry-smbserver.service").read_text()
    assert "ferry-smbserver --config /etc/ferry/smbserver.toml" in unit
    assert "RestartPreventExitStatus=78" in unit
    kustomization = (REPO / "k8s/base/kustomization.yaml").read_text()
    assert "- smbserver.yaml" in kustomization and "- smbserver.toml" in kustomization
    manifest = (REPO / "k8s/base/smbserver.yaml").read_text()
    assert "hostNetwork: true" in manifest and "kind: DaemonSet" in manifest
    assert '"--config", "/etc/ferry/smbserver.toml"' in manifest
