"""The selector's planner over inventories as discovery publishes them: the seed's scenarios,
constraints, both hosts' migration networks and the defaults, the KV mirror's revision rules,
and smbcore's ``remote_migration`` (the server's own migration networks)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from ferry_hostnet import INVENTORY, Interface, Inventory
from ferry_hostnet.netsettings import (
    CONSTRAINTS,
    HOST_SETTINGS,
    ConstraintSpec,
    HostConstraints,
    HostSettings,
    MigrationNetworks,
    MigrationNetworkSpec,
)
from ferry_hostnet.selector_api import PLAN, PlanRequest
from ferry_runtime.bus import HandlerError
from ferry_selector.planner import UNREACHABLE_NOTE, Planner, same_subnet
from ferry_selector.state import ClusterState, Mirror, host_view
from hypothesis import given
from hypothesis import strategies as st
from smbcore import selection
from smbcore.selection import (
    MigrationNetwork,
    MigrationSettings,
    Nic,
    NicAddress,
    PfcPolicy,
    Purpose,
    Reason,
    SelectionPolicy,
    select_channels,
)

from tests.support.selector import G, iface, seed

PICKED = None


def put_inventory(state: ClusterState, host: str, interfaces: list[Interface], revision: int = 1) -> None:
    inventory = Inventory(host=host, interfaces=interfaces, collected_at=time.time())
    assert state.inventories.put(host, revision, INVENTORY.encode(inventory))


def put_constraints(state: ClusterState, host: str, *specs: tuple[str, list[int | str]]) -> None:
    value = HostConstraints(host=host, constraints=[ConstraintSpec(server=s, interfaces=i) for s, i in specs])
    assert state.constraints.put(host, state.constraints.revision(host) + 1, CONSTRAINTS.encode(value))


def put_migration(state: ClusterState, host: str, *nets: tuple[str, int], any_network: bool = False) -> None:
    value = HostSettings(
        host=host,
        migration=MigrationNetworks(
            networks=[MigrationNetworkSpec(subnet=s, priority=p) for s, p in nets],
            use_any_network=any_network,
        ),
    )
    revision = state.host_settings.revision(host) + 1
    assert state.host_settings.put(host, revision, HOST_SETTINGS.encode(value))


@dataclass
class Scenario:
    client: list[Interface]
    server: list[Interface]
    #: (local, remote, transport, connections)
    channels: list[tuple[str, str, str, int]]
    reasons: dict[str, Reason | None]
    purpose: str = "smb"
    constraint: list[int | str] | None = None
    client_migration: list[tuple[str, int]] | None = None
    server_migration: list[tuple[str, int]] | None = None
    policy: SelectionPolicy = field(default_factory=SelectionPolicy)
    warnings: int = 0


TC, SC, UR, CO = Reason.TYPE_CLASS, Reason.SPEED_CLASS, Reason.UNREACHABLE, Reason.CONSTRAINED_OUT
NMN, MP, RWP = Reason.NOT_MIGRATION_NETWORK, Reason.MIGRATION_PRIORITY, Reason.ROCE_WITHOUT_PFC
ALL5 = ("eth0", "eth1", "eth2", "rdma0", "rdma1")


def both(reasons: dict[str, Reason | None]) -> dict[str, Reason | None]:
    """The same reason for an interface on both sides (the hosts are symmetric)."""
    return {f"{side}:{name}": r for name, r in reasons.items() for side in "lr"}


SCENARIOS = {
    "seed: the two RDMA NICs, 2 connections each": Scenario(
        seed(1),
        seed(2),
        [("rdma0", "rdma0", "rdma", 2), ("rdma1", "rdma1", "rdma", 2)],
        both({"eth0": TC, "eth1": TC, "eth2": TC, "rdma0": PICKED, "rdma1": PICKED}),
    ),
    "RDMA disabled on the client: the RDMA NICs serve as 10 Gb RSS NICs": Scenario(
        seed(1, rdma0={"rdma": None, "pfc": None}, rdma1={"rdma": None}),
        seed(2),
        [(n, n, "tcp", 4) for n in ("eth1", "eth2", "rdma0", "rdma1")],
        both({"eth0": SC, "eth1": PICKED, "eth2": PICKED, "rdma0": PICKED, "rdma1": PICKED}),
    ),
    "a constraint (a name and an index): exactly those": Scenario(
        seed(1),
        seed(2),
        [("eth1", "eth1", "tcp", 4), ("eth2", "eth2", "tcp", 4)],
        {"l:eth0": CO, "l:eth1": PICKED, "l:eth2": PICKED, "l:rdma0": CO, "l:rdma1": CO}
        | {"r:eth0": UR, "r:eth1": PICKED, "r:eth2": PICKED, "r:rdma0": UR, "r:rdma1": UR},
        constraint=["eth1", 4],
    ),
    "mixed speeds: only the 25 Gb pair": Scenario(
        seed(1, eth2={"speed": 25 * G}, rdma0={"rdma": None, "pfc": None}, rdma1={"rdma": None}),
        seed(2, eth2={"speed": 25 * G}, rdma0={"rdma": None, "pfc": None}, rdma1={"rdma": None}),
        [("eth2", "eth2", "tcp", 4)],
        both({"eth0": SC, "eth1": SC, "eth2": PICKED, "rdma0": SC, "rdma1": SC}),
    ),
    "migration networks: priority 1 first, the rest not migration networks": Scenario(
        seed(1),
        seed(2),
        [("eth2", "eth2", "tcp", 4)],
        {"l:eth0": NMN, "l:eth1": MP, "l:eth2": PICKED, "l:rdma0": NMN, "l:rdma1": NMN}
        | {"r:eth0": UR, "r:eth1": UR, "r:eth2": PICKED, "r:rdma0": UR, "r:rdma1": UR},
        purpose="migration",
        client_migration=[("10.0.2.0/24", 1), ("10.0.1.0/24", 2)],
    ),
    "migration networks: priority beats speed and RDMA": Scenario(
        seed(1),
        seed(2),
        [("eth0", "eth0", "tcp", 4)],
        {"l:eth0": PICKED, "l:eth1": NMN, "l:eth2": NMN, "l:rdma0": MP, "l:rdma1": NMN}
        | {"r:eth0": PICKED, "r:eth1": UR, "r:eth2": UR, "r:rdma0": UR, "r:rdma1": UR},
        purpose="migration",
        client_migration=[("10.0.0.0/24", 0), ("10.0.3.0/24", 1)],
    ),
    "the server's migration networks leave only its interfaces in them": Scenario(
        seed(1),
        seed(2),
        [("eth1", "eth1", "tcp", 4), ("eth2", "eth2", "tcp", 4)],
        {"l:eth0": UR, "l:eth1": PICKED, "l:eth2": PICKED, "l:rdma0": UR, "l:rdma1": UR}
        | {"r:eth0": NMN, "r:eth1": PICKED, "r:eth2": PICKED, "r:rdma0": NMN, "r:rdma1": NMN},
        purpose="migration",
        server_migration=[("10.0.1.0/24", 0), ("10.0.2.0/24", 5)],
    ),
    "RoCE without PFC excluded, iWARP kept": Scenario(
        seed(1, rdma0={"pfc": None}),
        seed(2),
        [("rdma1", "rdma1", "rdma", 2)],
        {"l:eth0": TC, "l:eth1": TC, "l:eth2": TC, "l:rdma0": RWP, "l:rdma1": PICKED}
        | {"r:eth0": TC, "r:eth1": TC, "r:eth2": TC, "r:rdma0": TC, "r:rdma1": PICKED},
    ),
    "RoCE without PFC under the warn policy: used, with a warning": Scenario(
        seed(1, rdma0={"pfc": False}),
        seed(2),
        [("rdma0", "rdma0", "rdma", 2), ("rdma1", "rdma1", "rdma", 2)],
        both({"eth0": TC, "eth1": TC, "eth2": TC, "rdma0": PICKED, "rdma1": PICKED}),
        policy=SelectionPolicy(roce_without_pfc=PfcPolicy.WARN),
        warnings=1,
    ),
}


def run(scenario: Scenario) -> tuple[ClusterState, Planner, PlanRequest]:
    state = ClusterState()
    put_inventory(state, "hv01", scenario.client)
    put_inventory(state, "hv02", scenario.server)
    if scenario.constraint is not None:
        put_constraints(state, "hv01", ("HV02", scenario.constraint), ("hv03", ["eth0"]))
    if scenario.client_migration is not None:
        put_migration(state, "hv01", *scenario.client_migration)
    if scenario.server_migration is not None:
        put_migration(state, "hv02", *scenario.server_migration)
    request = PlanRequest(client="hv01", server="hv02", purpose=scenario.purpose)  # type: ignore[arg-type]
    return state, Planner(scenario.policy), request


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(scenario: Scenario) -> None:
    state, planner, request = run(scenario)
    plan = planner.plan(state, request)
    got = [(c.local_name, c.remote_name, c.transport, c.connections) for c in plan.channels]
    assert got == scenario.channels
    reasons = {f"{d.side[0]}:{d.name}": d.reason for d in plan.decisions}
    assert reasons == {k: None if v is None else v.value for k, v in scenario.reasons.items()}
    assert len(plan.warnings) == scenario.warnings
    for d in plan.decisions:
        assert d.text and d.picked == (d.reason is None)
        if d.reason == Reason.UNREACHABLE:
            assert d.text.endswith(UNREACHABLE_NOTE)
    # The plan survives its own wire format.
    assert PLAN.decode(PLAN.encode(plan)) == plan


def test_the_plan_is_smbcores_over_the_inventories() -> None:
    """Exactly the pure module's answer for the same inputs (the service adds no rule of its own)."""
    for scenario in SCENARIOS.values():
        state, planner, request = run(scenario)
        plan = planner.plan(state, request)
        client, server = state.host("hv01"), state.host("hv02")
        assert client is not None and server is not None
        mine = state.constraints.get("hv01")
        expected = select_channels(
            client.nics,
            server.nics,
            server="hv02",
            purpose=Purpose(scenario.purpose),
            constraints=[
                selection.Constraint(c.server, tuple(c.interfaces))
                for c in (mine.constraints if mine else [])
            ],
            migration=_settings(scenario.client_migration),
            remote_migration=_settings(scenario.server_migration),
            policy=scenario.policy,
        ).to_dict()
        body = plan.model_dump(mode="json", by_alias=True)
        for d in expected["decisions"]:  # type: ignore[attr-defined]
            if d["reason"] == "unreachable":
                d["text"] += UNREACHABLE_NOTE
        assert {k: body[k] for k in expected} == expected


def _settings(nets: list[tuple[str, int]] | None) -> MigrationSettings:
    if nets is None:
        return MigrationSettings(use_any_network=True)
    return MigrationSettings(tuple(MigrationNetwork(s, p) for s, p in nets))


def test_plan_reports_what_it_applied() -> None:
    state, planner, request = run(SCENARIOS["a constraint (a name and an index): exactly those"])
    plan = planner.plan(state, request)
    assert plan.applied.constraint == ["eth1", 4]
    assert plan.applied.client_migration is None and plan.applied.migration_defaulted == []
    assert plan.applied.roce_without_pfc == "exclude" and plan.applied.reachability == "same-subnet"
    assert plan.client == "hv01" and plan.server == "hv02"
    assert plan.nic_class == "rss" and plan.transport == "tcp" and plan.connections == 8

    state, planner, request = run(
        SCENARIOS["migration networks: priority 1 first, the rest not migration networks"]
    )
    plan = planner.plan(state, request)
    assert plan.migration_priority == 1
    assert plan.applied.client_migration is not None
    assert [n.subnet for n in plan.applied.client_migration.networks] == ["10.0.2.0/24", "10.0.1.0/24"]
    assert plan.applied.migration_defaulted == ["hv02"]  # the server has none: the default, any network
    assert plan.applied.server_migration == MigrationNetworks(use_any_network=True)


def test_hosts_without_migration_settings_under_the_none_default() -> None:
    state, _, request = run(SCENARIOS["seed: the two RDMA NICs, 2 connections each"])
    migration = PlanRequest(client="hv01", server="hv02", purpose="migration")
    planner = Planner(SelectionPolicy(), "none")
    plan = planner.plan(state, migration)
    assert plan.channels == []
    assert {d.reason for d in plan.decisions if d.side == "local"} == {"not_migration_network"}
    assert {d.reason for d in plan.decisions if d.side == "remote"} == {"not_migration_network"}
    assert plan.applied.migration_defaulted == ["hv01", "hv02"]
    # An SMB plan ignores migration networks.
    assert planner.plan(state, request).connections == 4
    # With settings on both hosts, they apply.
    put_migration(state, "hv01", any_network=True)
    put_migration(state, "hv02", ("10.0.1.0/24", 0))
    plan = planner.plan(state, migration)
    assert [(c.local_name, c.remote_name) for c in plan.channels] == [("eth1", "eth1")]
    view = planner.migration_networks(state, "hv02")
    assert view.configured and [n.subnet for n in view.networks] == ["10.0.1.0/24"]
    assert not planner.migration_networks(state, "hv03").configured
    assert not planner.migration_networks(state, "hv03").use_any_network
    assert Planner(SelectionPolicy()).migration_networks(state, "hv03").use_any_network


def test_constraints_of_other_servers_and_case() -> None:
    state, planner, request = run(SCENARIOS["seed: the two RDMA NICs, 2 connections each"])
    put_constraints(state, "hv01", ("hv03", ["eth0"]))
    assert planner.plan(state, request).connections == 4  # RDMA, unconstrained
    put_constraints(state, "hv01", ("Hv02", ["eth9"]))  # names nothing the host has
    plan = planner.plan(state, request)
    assert plan.channels == [] and len(plan.warnings) == 1 and plan.applied.constraint == ["eth9"]


def test_unknown_hosts_are_404() -> None:
    state, planner, _ = run(SCENARIOS["seed: the two RDMA NICs, 2 connections each"])
    with pytest.raises(HandlerError) as caught:
        planner.plan(state, PlanRequest(client="hv01", server="nosuch"))
    assert caught.value.status == 404 and "'nosuch'" in caught.value.message
    with pytest.raises(HandlerError):
        planner.plan(state, PlanRequest(client="ghost", server="hv02"))


def test_a_host_to_itself() -> None:
    state = ClusterState()
    put_inventory(state, "hv01", seed(1))
    plan = Planner(SelectionPolicy()).plan(
        state, PlanRequest(client="hv01", server="hv01", purpose="migration")
    )
    assert [c.local_name for c in plan.channels] == ["rdma0", "rdma1"]
    assert plan.applied.migration_defaulted == ["hv01"]


def test_down_and_unaddressed_interfaces_from_the_inventory() -> None:
    state = ClusterState()
    client = [*seed(1)[:3], iface("eth5", 9, "10.0.1.5/24", up=False), iface("eth6", 10, None)]
    put_inventory(state, "hv01", client)
    put_inventory(state, "hv02", seed(2)[:3])
    plan = Planner(SelectionPolicy()).plan(state, PlanRequest(client="hv01", server="hv02"))
    reasons = {d.name: d.reason for d in plan.decisions if d.side == "local"}
    assert reasons == {
        "eth0": "speed_class",
        "eth1": None,
        "eth2": None,
        "eth5": "down",
        "eth6": "no_address",
    }


# -- the KV mirror -------------------------------------------------------------------------------


def test_mirror_keeps_the_newest_revision() -> None:
    mirror: Mirror[str] = Mirror("b", lambda data: data.decode())
    assert mirror.put("k", 5, b"five")
    assert not mirror.put("k", 4, b"four")  # late and older: ignored
    assert not mirror.put("k", 5, b"again")
    assert mirror.get("k") == "five" and mirror.revision("k") == 5
    assert not mirror.delete("k", 3)
    assert mirror.delete("k", 7)
    assert mirror.get("k") is None and mirror.revision("k") == 7
    assert not mirror.put("k", 6, b"six")  # written before the delete: stays deleted
    assert mirror.put("k", 8, b"eight")
    assert mirror.put_value("j", 9, "nine")
    mirror.retain({"j"})
    assert mirror.keys() == ["j"] and mirror.revision("k") == 8
    assert len(mirror) == 1


def test_mirror_ignores_unreadable_values(caplog: pytest.LogCaptureFixture) -> None:
    state = ClusterState()
    assert not state.inventories.put("hv01", 1, b"\x81\xa1a\x01")  # msgpack, not an envelope
    assert not state.constraints.put("hv01", 1, b"not msgpack \xc1")
    assert "unreadable KV value ignored" in caplog.text
    assert len(state.inventories) == 0


def test_host_view_and_the_roce_gauge() -> None:
    state = ClusterState()
    put_inventory(state, "hv01", seed(1, rdma0={"pfc": None}))
    put_inventory(state, "hv02", seed(2, rdma0={"pfc": False}))
    put_inventory(state, "hv03", seed(3))
    view = state.host("hv01")
    assert view is not None and view.roce_without_pfc == ("rdma0",)
    assert view.has_interface("eth1") and view.has_interface(3) and not view.has_interface(99)
    assert not view.has_interface("3")
    assert state.roce_without_pfc() == 2
    inventory = Inventory(host="x", interfaces=seed(1), collected_at=1.0)
    assert host_view(INVENTORY.encode(inventory)).nics[3].rdma_kind == "roce"


# -- reachability --------------------------------------------------------------------------------

addresses = st.one_of(
    st.ip_addresses(v=4).map(str).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 32))),
    st.ip_addresses(v=6).map(str).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 128))),
)


@given(st.lists(addresses, max_size=4), st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_cached_same_subnet_is_smbcores(local: list[tuple[str, int]], remote: object) -> None:
    nic = Nic("eth0", 2, tuple(NicAddress(a, p) for a, p in local))
    assert same_subnet(nic, str(remote)) == selection.same_subnet(nic, str(remote))


# -- smbcore: the server's migration networks --------------------------------------------------------


def _nic(name: str, index: int, *addrs: str) -> Nic:
    parsed = tuple(NicAddress(a.split("/")[0], int(a.split("/")[1]) if "/" in a else None) for a in addrs)
    return Nic(name, index, parsed, 10 * G, True, 8)


def test_remote_migration_cuts_the_servers_addresses() -> None:
    local = (_nic("a", 1, "10.1.0.1/24", "10.2.0.1/24"),)
    remote = (_nic("x", 1, "10.1.0.2", "10.2.0.2"), _nic("y", 2, "10.3.0.2"))
    only_2 = MigrationSettings((MigrationNetwork("10.2.0.0/24", 7),))
    plan = select_channels(local, remote, purpose=Purpose.MIGRATION, remote_migration=only_2)
    assert [(c.source_address, c.remote_address) for c in plan.channels] == [("10.2.0.1", "10.2.0.2")]
    y = plan.decision(selection.Side.REMOTE, "y")
    assert y.reason is Reason.NOT_MIGRATION_NETWORK
    assert y.text == "not in a migration network of the server (10.2.0.0/24)"
    assert plan.migration_priority is None  # the priority is the client's, and it has none
    # Without it, the lowest on-link address; for SMB it does not apply; any network is no filter.
    for options in (
        {"purpose": Purpose.MIGRATION},
        {"purpose": Purpose.SMB, "remote_migration": only_2},
        {"purpose": Purpose.MIGRATION, "remote_migration": MigrationSettings(use_any_network=True)},
    ):
        plan = select_channels(local, remote, **options)  # type: ignore[arg-type]
        assert [c.remote_address for c in plan.channels] == ["10.1.0.2"]
    nothing = select_channels(local, remote, purpose=Purpose.MIGRATION, remote_migration=MigrationSettings())
    assert nothing.channels == ()
    assert nothing.decision(selection.Side.REMOTE, "x").text == (
        "not in a migration network of the server (none configured)"
    )
    assert nothing.decision(selection.Side.LOCAL, "a").reason is Reason.UNREACHABLE


def test_remote_migration_with_the_clients_priorities() -> None:
    local = (_nic("a", 1, "10.1.0.1/24"), _nic("b", 2, "10.2.0.1/24"))
    remote = (_nic("x", 1, "10.1.0.2"), _nic("y", 2, "10.2.0.2"))
    mine = MigrationSettings((MigrationNetwork("10.1.0.0/24", 0), MigrationNetwork("10.2.0.0/24", 1)))
    theirs = MigrationSettings((MigrationNetwork("10.2.0.0/16", 0),))
    plan = select_channels(local, remote, purpose=Purpose.MIGRATION, migration=mine, remote_migration=theirs)
    # The client's priority-0 network reaches nothing the server accepts: priority 1 is used.
    assert [(c.local_name, c.remote_name) for c in plan.channels] == [("b", "y")]
    assert plan.migration_priority == 1
    assert plan.decision(selection.Side.LOCAL, "a").reason is Reason.UNREACHABLE
