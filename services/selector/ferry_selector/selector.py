"""The selector's operations, one method each; the HTTP and NATS handlers (:mod:`.app`) only
translate. Failures are :class:`~ferry_runtime.bus.HandlerError` with an HTTP-like status:
400 a malformed request, 404 an unknown host or constraint, 409 a compare-and-swap that kept
losing, 422 a constraint naming an interface the client does not have, 503 state not loaded
yet or NATS unavailable.
"""

from __future__ import annotations

import logging
import time

from ferry_hostnet.netsettings import (
    ConstraintSpec,
    HostConstraints,
    HostSettings,
    InterfaceRef,
    MigrationNetworks,
    same_server,
)
from ferry_hostnet.selector_api import (
    ConstraintAdd,
    ConstraintEntry,
    ConstraintList,
    ConstraintQuery,
    ConstraintRemove,
    HostMigrationNetworks,
    KnownHost,
    KnownHosts,
    MigrationNetworksSet,
    Plan,
    PlanRequest,
)
from ferry_runtime.bus import HandlerError
from ferry_runtime.tracing import Telemetry
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .planner import Planner
from .state import ClusterState, HostView
from .store import Store

log = logging.getLogger(__name__)

#: Plan latency buckets, in seconds: the goal is under 10 ms.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5)


class SelectorMetrics:
    def __init__(self, registry: CollectorRegistry, state: ClusterState) -> None:
        self.plans = Counter(
            "ferry_selector_plans_total",
            "channel plans answered, by purpose and outcome (channels, no_channels, error)",
            ["purpose", "outcome"],
            registry=registry,
        )
        self.plan_latency = Histogram(
            "ferry_selector_plan_duration_seconds",
            "time to compute a channel plan (inventories in memory), by purpose",
            ["purpose"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.roce_without_pfc = Gauge(
            "ferry_selector_roce_without_pfc_interfaces",
            "RoCE interfaces with PFC off or unknown in the inventories held (not used for RDMA "
            "under the exclude policy)",
            registry=registry,
        )
        self.roce_without_pfc.set_function(lambda: float(state.roce_without_pfc()))
        self.inventories = Gauge("ferry_selector_inventories", "host inventories held", registry=registry)
        self.inventories.set_function(lambda: float(len(state.inventories)))
        self.constraint_changes = Counter(
            "ferry_selector_constraint_changes_total",
            "Multichannel constraint changes, by operation",
            ["op"],
            registry=registry,
        )


class Selector:
    def __init__(
        self,
        state: ClusterState,
        store: Store,
        planner: Planner,
        metrics: SelectorMetrics,
        telemetry: Telemetry,
    ) -> None:
        self.state = state
        self.store = store
        self.planner = planner
        self.metrics = metrics
        self.telemetry = telemetry

    def _require_loaded(self) -> None:
        if not self.store.loaded:
            raise HandlerError(503, f"state not loaded from NATS yet ({self.store.readiness()[1]})")

    # -- plans --------------------------------------------------------------------------------

    def plan(self, request: PlanRequest) -> Plan:
        started = time.perf_counter()
        with self.telemetry.span(
            "select channels",
            attributes={
                "ferry.client": request.client,
                "ferry.server": request.server,
                "ferry.purpose": request.purpose,
            },
        ) as span:
            try:
                self._require_loaded()
                plan = self.planner.plan(self.state, request)
            except HandlerError:
                self.metrics.plans.labels(request.purpose, "error").inc()
                raise
            span.set_attribute("ferry.connections", plan.connections)
            span.set_attribute("ferry.class", plan.nic_class or "none")
        self.metrics.plan_latency.labels(request.purpose).observe(time.perf_counter() - started)
        self.metrics.plans.labels(request.purpose, "channels" if plan.channels else "no_channels").inc()
        return plan

    def hosts(self) -> KnownHosts:
        self._require_loaded()
        return KnownHosts(
            hosts=[
                KnownHost(
                    host=name,
                    interfaces=len(view.nics),
                    collected_at=view.collected_at,
                    roce_without_pfc=list(view.roce_without_pfc),
                )
                for name, view in sorted(self.state.inventories.items())
            ]
        )

    # -- constraints ----------------------------------------------------------------------------

    def list_constraints(self, query: ConstraintQuery) -> ConstraintList:
        self._require_loaded()
        entries = []
        for host, held in sorted(self.state.constraints.items()):
            if query.client is not None and host != query.client:
                continue
            for spec in held.constraints:
                if query.server is None or same_server(spec.server, query.server):
                    entries.append(
                        ConstraintEntry(client=host, server=spec.server, interfaces=spec.interfaces)
                    )
        return ConstraintList(constraints=entries)

    async def add_constraint(self, request: ConstraintAdd) -> ConstraintList:
        view = self._inventory_for_constraint(request.client)
        missing = [ref for ref in request.interfaces if not view.has_interface(ref)]
        if missing:
            raise HandlerError(
                422,
                f"host {request.client!r} has no interface {', '.join(repr(m) for m in missing)} "
                f"(it has: {_interfaces_text(view)})",
            )

        def change(current: HostConstraints | None) -> HostConstraints:
            constraints = list(current.constraints) if current is not None else []
            for i, spec in enumerate(constraints):
                if same_server(spec.server, request.server):
                    added = [r for r in request.interfaces if r not in spec.interfaces]
                    constraints[i] = ConstraintSpec(server=spec.server, interfaces=[*spec.interfaces, *added])
                    break
            else:
                constraints.append(ConstraintSpec(server=request.server, interfaces=request.interfaces))
            return HostConstraints(host=request.client, constraints=constraints)

        written = await self.store.modify_constraints(request.client, change)
        self.metrics.constraint_changes.labels("add").inc()
        log.info(
            "constraint added",
            extra={"client": request.client, "server": request.server, "interfaces": request.interfaces},
        )
        return _entries(request.client, written)

    async def remove_constraint(self, request: ConstraintRemove) -> ConstraintList:
        self._require_loaded()

        def change(current: HostConstraints | None) -> HostConstraints | None:
            spec = current.for_server(request.server) if current is not None else None
            if current is None or spec is None:
                raise HandlerError(
                    404, f"host {request.client!r} has no constraint for server {request.server!r}"
                )
            remaining: list[InterfaceRef] = []
            if request.interfaces:
                absent = [r for r in request.interfaces if r not in spec.interfaces]
                if absent:
                    raise HandlerError(
                        404,
                        f"the constraint of {request.client!r} for {spec.server!r} does not name "
                        f"{', '.join(repr(a) for a in absent)} (it names "
                        f"{', '.join(repr(i) for i in spec.interfaces)})",
                    )
                remaining = [r for r in spec.interfaces if r not in request.interfaces]
            constraints = []
            for held in current.constraints:
                if held is not spec:
                    constraints.append(held)
                elif remaining:
                    constraints.append(ConstraintSpec(server=spec.server, interfaces=remaining))
            return HostConstraints(host=request.client, constraints=constraints) if constraints else None

        written = await self.store.modify_constraints(request.client, change)
        self.metrics.constraint_changes.labels("remove").inc()
        log.info(
            "constraint removed",
            extra={"client": request.client, "server": request.server, "interfaces": request.interfaces},
        )
        return _entries(request.client, written)

    def _inventory_for_constraint(self, host: str) -> HostView:
        self._require_loaded()
        view = self.state.host(host)
        if view is None:
            raise HandlerError(
                404,
                f"no inventory for host {host!r}: a constraint can only name interfaces of a host "
                "whose discovery service has published its inventory",
            )
        return view

    # -- migration networks -------------------------------------------------------------------------

    def migration_networks(self, host: str) -> HostMigrationNetworks:
        self._require_loaded()
        return self.planner.migration_networks(self.state, host)

    async def set_migration_networks(self, request: MigrationNetworksSet) -> HostMigrationNetworks:
        self._require_loaded()

        def change(current: HostSettings | None) -> HostSettings | None:
            if request.clear:
                if current is None:
                    return None
                return current.model_copy(update={"migration": None})
            networks = MigrationNetworks(networks=request.networks, use_any_network=request.use_any_network)
            base = current if current is not None else HostSettings(host=request.host)
            return base.model_copy(update={"migration": networks})

        await self.store.modify_host_settings(request.host, change)
        log.info(
            "migration networks set",
            extra={
                "host": request.host,
                "networks": ", ".join(f"{n.subnet}:{n.priority}" for n in request.networks),
                "use_any_network": request.use_any_network,
                "clear": request.clear,
            },
        )
        return self.planner.migration_networks(self.state, request.host)


def _entries(host: str, held: HostConstraints | None) -> ConstraintList:
    if held is None:
        return ConstraintList(constraints=[])
    return ConstraintList(
        constraints=[
            ConstraintEntry(client=host, server=c.server, interfaces=c.interfaces) for c in held.constraints
        ]
    )


def _interfaces_text(view: HostView) -> str:
    return ", ".join(f"{n.name} (index {n.index})" for n in view.nics) or "no interfaces"
