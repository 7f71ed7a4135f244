"""The selector's payloads and KV documents: validation, normalisation, and fields a newer
writer added surviving an older one's read-modify-write."""

from __future__ import annotations

import msgpack
import pytest
from ferry_hostnet.netsettings import (
    CONSTRAINTS,
    HOST_SETTINGS,
    ConstraintSpec,
    HostConstraints,
    HostSettings,
    MigrationNetworks,
    MigrationNetworkSpec,
)
from ferry_hostnet.selector_api import (
    CONSTRAINT_ADD,
    PLAN_REQUEST,
    ConstraintAdd,
    ConstraintRemove,
    MigrationNetworksSet,
    PlanRequest,
)
from ferry_runtime.codec import PayloadError
from pydantic import ValidationError


def test_interface_refs_are_names_or_indexes() -> None:
    spec = ConstraintSpec(server="hv02", interfaces=["eth1", 4, "eth1", 4, "enp65s0f0np0"])
    assert spec.interfaces == ["eth1", 4, "enp65s0f0np0"]  # duplicates dropped, order kept
    assert ConstraintAdd.model_validate(
        {"client": "a", "server": "b", "interfaces": [3, "3"]}
    ).interfaces == [
        3,
        "3",
    ]
    for bad in ([], [0], [-1], [""], ["a" * 16], ["a/b"], ["a b"], [True], [1.5]):
        with pytest.raises(ValidationError):
            ConstraintSpec(server="hv02", interfaces=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "hv 02", "hv02.*", "a>b", "-hv"])
def test_host_names_are_checked(bad: str) -> None:
    with pytest.raises(ValidationError):
        PlanRequest(client="hv01", server=bad)
    with pytest.raises(ValidationError):
        ConstraintRemove(client=bad, server="hv02")
    with pytest.raises(ValidationError):
        MigrationNetworksSet(host=bad)


def test_plan_request_purposes() -> None:
    assert PlanRequest(client="a", server="b").purpose == "smb"
    assert PLAN_REQUEST.decode(
        PLAN_REQUEST.encode(PlanRequest(client="a.x", server="b", purpose="migration"))
    ) == (PlanRequest(client="a.x", server="b", purpose="migration"))
    with pytest.raises(ValidationError):
        PlanRequest(client="a", server="b", purpose="backup")  # type: ignore[arg-type]


def test_migration_networks_normalised_and_unique() -> None:
    net = MigrationNetworkSpec(subnet=" 10.0.2.7/24 ")
    assert net.subnet == "10.0.2.0/24" and net.priority == 0
    assert MigrationNetworkSpec(subnet="fd00:2::1/64", priority=3).subnet == "fd00:2::/64"
    assert MigrationNetworkSpec(subnet="10.0.0.9").subnet == "10.0.0.9/32"
    for bad in ("10.0.0.0/33", "eth0", ""):
        with pytest.raises(ValidationError):
            MigrationNetworkSpec(subnet=bad)
    with pytest.raises(ValidationError):
        MigrationNetworkSpec(subnet="10.0.0.0/8", priority=-1)
    with pytest.raises(ValidationError, match="listed twice"):
        MigrationNetworks(
            networks=[MigrationNetworkSpec(subnet="10.0.2.1/24"), MigrationNetworkSpec(subnet="10.0.2.0/24")]
        )


def test_constraints_round_trip_and_lookup() -> None:
    value = HostConstraints(host="hv01", constraints=[ConstraintSpec(server="HV02", interfaces=["eth1", 4])])
    assert CONSTRAINTS.decode(CONSTRAINTS.encode(value)) == value
    assert value.for_server("hv02") is value.constraints[0]
    assert value.for_server("hv03") is None


def test_host_settings_keep_fields_they_do_not_know() -> None:
    """A newer service's section survives this version's read-modify-write."""
    newer = msgpack.packb(
        {
            "schema": "ferry.host-settings",
            "v": 1,
            "body": {
                "host": "hv01",
                "migration": None,
                "updated_at": 1.0,
                "vm_migration": {"enabled": True, "max_concurrent": 2},
            },
        }
    )
    settings = HOST_SETTINGS.decode(newer)
    changed = settings.model_copy(update={"migration": MigrationNetworks(use_any_network=True)})
    again = HOST_SETTINGS.decode(HOST_SETTINGS.encode(changed))
    assert again.extra_fields() == {"vm_migration": {"enabled": True, "max_concurrent": 2}}
    assert again.migration == MigrationNetworks(use_any_network=True)
    assert HostSettings(host="hv02").migration is None


def test_wrong_schema_is_refused() -> None:
    with pytest.raises(PayloadError):
        CONSTRAINT_ADD.decode(PLAN_REQUEST.encode(PlanRequest(client="a", server="b")))
