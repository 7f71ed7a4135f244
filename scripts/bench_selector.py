#!/usr/bin/env python3
"""The selector at cluster scale: 1,000 hosts with 8 interfaces each in KV, plan latency and memory.

One run, everything on 127.0.0.1 in a temporary folder:

1. starts a nats-server with JetStream and a ``ferry-selector`` (``--hosts`` inventories are
   not there yet), and records the selector's resident memory once it is ready, empty;
2. writes the inventories into ``ferry-inventory`` as discovery writes them (``ferry.inventory``
   v1), plus Multichannel constraints for a tenth of the hosts and migration networks for half,
   and times how long the running selector takes to hold them all (its KV watcher);
3. starts a second selector on the loaded buckets and times its cold start to ready;
4. asks the first selector for ``--plans`` plans over NATS request/reply, one at a time, for
   random (client, server) pairs, a fifth of them migrations, after ``--warmup`` untimed ones;
   then ``--http-plans`` over HTTP (one keep-alive connection); then ``--concurrency``
   requesters at once over NATS for the throughput;
5. computes the same kind of plans in this process with the selector's own planner over the
   same inventories: the rules alone, without NATS, HTTP or encoding;
6. prints latency p50/p90/p99/max per path, plans per second, each selector's resident memory
   (VmRSS, and the peak VmHWM), and a Markdown table for docs/benchmarks.md.

The hosts: eth0 1 Gb RSS (management), eth1-eth4 10 or 25 Gb RSS, eth5 25 Gb RoCE with PFC
(a tenth of the hosts: PFC unknown), eth6 25 Gb iWARP, eth7 down; interface k of every host is
on 10.k.0.0/16, so every pair of hosts reaches each other on all eight subnets and every plan
weighs 8 x 8 interfaces. The goal is a p99 under 10 ms per plan once the inventory is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
from ferry_hostnet import INVENTORY, Address, Interface, Inventory
from ferry_hostnet.netsettings import (
    CONSTRAINTS,
    HOST_SETTINGS,
    ConstraintSpec,
    HostConstraints,
    HostSettings,
    MigrationNetworks,
    MigrationNetworkSpec,
)
from ferry_hostnet.selector_api import PLAN, PLAN_REQUEST, PlanRequest
from ferry_runtime import subjects
from nats.aio.client import Client

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
G = 10**9
START_TIMEOUT = 60.0


class BenchError(Exception):
    """A process failed or an answer was wrong: the run is invalid."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the cluster's data ---------------------------------------------------------------------------------


def host_name(i: int) -> str:
    return f"hv{i:04d}"


def interfaces(i: int) -> list[Interface]:
    rng = random.Random(i)
    third, fourth = (i + 1) >> 8, (i + 1) & 255
    out = []
    for k in range(8):
        speed, rdma, pfc, up, queues = 10 * G, None, None, True, 8
        if k == 0:
            speed = 1 * G
        elif k <= 4:
            speed = rng.choice((10 * G, 25 * G))
        elif k == 5:
            speed, rdma, pfc = 25 * G, "roce", (None if i % 10 == 0 else True)
        elif k == 6:
            speed, rdma = 25 * G, "iwarp"
        else:
            up, queues = False, 1
        out.append(
            Interface(
                name=f"eth{k}",
                ifindex=k + 2,
                mac=f"02:00:{i >> 8:02x}:{i & 255:02x}:00:{k:02x}",
                mtu=9000,
                oper_state="up" if up else "down",
                admin_up=up,
                addresses=[Address(family=4, address=f"10.{k}.{third}.{fourth}", prefix_len=16)],
                speed_bps=speed,
                rx_queues=queues,
                rss_capable=queues > 1,
                rdma_kind=rdma,
                pfc_enabled=pfc,
            )
        )
    return out


def inventory(i: int) -> Inventory:
    return Inventory(
        host=host_name(i),
        labels={"rack": f"r{i // 40:02d}"},
        interfaces=interfaces(i),
        collected_at=time.time(),
    )


def constraints(i: int, hosts: int) -> HostConstraints:
    return HostConstraints(
        host=host_name(i),
        constraints=[
            ConstraintSpec(server=host_name((i + d) % hosts), interfaces=["eth1", "eth2", 7]) for d in (1, 2)
        ],
    )


def host_settings(i: int) -> HostSettings:
    return HostSettings(
        host=host_name(i),
        migration=MigrationNetworks(
            networks=[
                MigrationNetworkSpec(subnet="10.3.0.0/16", priority=0),
                MigrationNetworkSpec(subnet="10.4.0.0/16", priority=1),
            ]
        ),
    )


# -- processes -------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str | None = None

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(folder: Path) -> tuple[Proc, str]:
    port = free_port()
    log = folder / "nats-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(folder / "js")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc = Proc("nats-server", process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        proc.check()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc, f"nats://127.0.0.1:{port}"
        time.sleep(0.05)
    raise BenchError("nats-server did not start")


def start_selector(folder: Path, name: str, nats_url: str) -> Proc:
    port = free_port()
    log = folder / f"{name}.log"
    env = dict(
        os.environ,
        FERRY_HOST__NAME=name,
        FERRY_NATS__URL=nats_url,
        FERRY_HTTP__PORT=str(port),
        FERRY_SELECTOR__RETRY_INTERVAL="0.1",
        FERRY_LOGGING__LEVEL="WARNING",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "ferry-selector")], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    return Proc(name, process, log, f"http://127.0.0.1:{port}")


async def wait_ready(proc: Proc, session: aiohttp.ClientSession, hosts: int | None = None) -> float:
    """Seconds until /readyz is 200 (and, with ``hosts``, that many inventories are held)."""
    started = time.perf_counter()
    deadline = started + START_TIMEOUT * 5
    while time.perf_counter() < deadline:
        proc.check()
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(f"{proc.url}/readyz") as r:
                if r.status == 200:
                    if hosts is None:
                        return time.perf_counter() - started
                    async with session.get(f"{proc.url}/metrics") as m:
                        if f"ferry_selector_inventories {float(hosts)}" in (await m.text()).splitlines():
                            return time.perf_counter() - started
        await asyncio.sleep(0.02)
    raise BenchError(f"{proc.name} not ready:\n{proc.log.read_text()[-3000:]}")


# -- measuring -----------------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50": at(0.50) * 1e3,
        "p90": at(0.90) * 1e3,
        "p99": at(0.99) * 1e3,
        "max": ordered[-1] * 1e3,
        "mean": statistics.fmean(ordered) * 1e3,
    }


def pairs(count: int, hosts: int, seed: int) -> Iterator[PlanRequest]:
    rng = random.Random(seed)
    for _ in range(count):
        client, server = rng.sample(range(hosts), 2)
        purpose = "migration" if rng.random() < 0.2 else "smb"
        yield PlanRequest(client=host_name(client), server=host_name(server), purpose=purpose)


async def over_nats(nc: Client, requests: list[PlanRequest]) -> list[float]:
    out = []
    for request in requests:
        started = time.perf_counter()
        reply = await nc.request(subjects.SELECTOR_PLAN, PLAN_REQUEST.encode(request), timeout=10)
        elapsed = time.perf_counter() - started
        if reply.headers and "Ferry-Status" in reply.headers:
            raise BenchError(f"{request}: error {reply.headers['Ferry-Status']}: {reply.data!r}")
        plan = PLAN.decode(reply.data)
        if not plan.channels:
            raise BenchError(f"{request}: a plan without channels")
        out.append(elapsed)
    return out


async def over_http(session: aiohttp.ClientSession, url: str, requests: list[PlanRequest]) -> list[float]:
    out = []
    for r in requests:
        started = time.perf_counter()
        async with session.get(
            f"{url}/v1/plan", params={"client": r.client, "server": r.server, "purpose": r.purpose}
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise BenchError(f"{r}: HTTP {response.status}: {body[:300]!r}")
        out.append(time.perf_counter() - started)
    return out


async def concurrent(nc: Client, requests: list[PlanRequest], concurrency: int) -> float:
    queue = list(requests)

    async def worker() -> None:
        while queue:
            request = queue.pop()
            await nc.request(subjects.SELECTOR_PLAN, PLAN_REQUEST.encode(request), timeout=10)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - started)


def in_process(hosts: int, requests: list[PlanRequest]) -> tuple[list[float], list[float]]:
    """The selector's planner alone, over the same data, in this process."""
    from ferry_selector.planner import Planner
    from ferry_selector.state import ClusterState
    from smbcore.selection import SelectionPolicy

    state = ClusterState()
    for i in range(hosts):
        state.inventories.put(host_name(i), i + 1, INVENTORY.encode(inventory(i)))
        if i % 10 == 0:
            state.constraints.put(host_name(i), i + 1, CONSTRAINTS.encode(constraints(i, hosts)))
        if i % 2 == 0:
            state.host_settings.put(host_name(i), i + 1, HOST_SETTINGS.encode(host_settings(i)))
    planner = Planner(SelectionPolicy())
    for request in requests[:200]:
        planner.plan(state, request)
    wall, cpu = [], []
    for request in requests:
        started, started_cpu = time.perf_counter(), time.thread_time()
        planner.plan(state, request)
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return wall, cpu


# -- the run -------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, folder: Path) -> int:
    procs: list[Proc] = []
    results: dict[str, dict[str, float]] = {}
    cpu_per_plan: dict[str, float] = {}
    figures: dict[str, str] = {}
    loads: list[str] = []
    try:
        server, url = start_nats(folder)
        procs.append(server)
        nc = await nats.connect(url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=subjects.INVENTORY_BUCKET, history=1)
        first = start_selector(folder, "selector-a", url)
        procs.append(first)
        async with aiohttp.ClientSession() as session:
            await wait_ready(first, session)
            rss, _ = memory_kib(first.process.pid)
            figures["empty"] = f"{rss / 1024:.1f}"
            print(f"selector ready with no inventories: VmRSS {rss / 1024:.1f} MiB", flush=True)

            started = time.perf_counter()
            for i in range(args.hosts):
                await kv.put(host_name(i), INVENTORY.encode(inventory(i)))
            written = time.perf_counter() - started
            constraint_kv = await js.key_value(subjects.CONSTRAINTS_BUCKET)
            settings_kv = await js.key_value(subjects.HOST_SETTINGS_BUCKET)
            for i in range(0, args.hosts, 10):
                await constraint_kv.put(host_name(i), CONSTRAINTS.encode(constraints(i, args.hosts)))
            for i in range(0, args.hosts, 2):
                await settings_kv.put(host_name(i), HOST_SETTINGS.encode(host_settings(i)))
            held = await wait_ready(first, session, args.hosts)
            print(
                f"{args.hosts} inventories of 8 interfaces written in {written:.2f}s; "
                f"the running selector held them all {written + held:.2f}s after the first write",
                flush=True,
            )
            figures["live_load"] = f"{written + held:.1f}"

            second = start_selector(folder, "selector-b", url)
            procs.append(second)
            cold = await wait_ready(second, session, args.hosts)
            rss_b, hwm_b = memory_kib(second.process.pid)
            second.stop()
            figures["cold"] = f"{cold:.1f}"
            print(
                f"a new selector was ready with all of them after {cold:.2f}s (process start included)",
                flush=True,
            )

            requests = list(pairs(args.warmup + args.plans, args.hosts, 1))
            await over_nats(nc, requests[: args.warmup])
            loads.append(load_average())
            cpu_before = cpu_seconds(first.process.pid)
            results[NATS_PATH] = percentiles(await over_nats(nc, requests[args.warmup :]))
            cpu_per_plan[NATS_PATH] = (cpu_seconds(first.process.pid) - cpu_before) / args.plans
            http_requests = list(pairs(args.http_plans, args.hosts, 2))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one:
                await over_http(one, first.url or "", http_requests[:100])
                cpu_before = cpu_seconds(first.process.pid)
                results[HTTP_PATH] = percentiles(await over_http(one, first.url or "", http_requests))
                cpu_per_plan[HTTP_PATH] = (cpu_seconds(first.process.pid) - cpu_before) / args.http_plans
            rate = await concurrent(nc, list(pairs(args.plans, args.hosts, 3)), args.concurrency)
            figures["rate"] = f"{rate:.0f}"
            print(f"{args.concurrency} concurrent requesters over NATS: {rate:.0f} plans/s", flush=True)
            rss, hwm = memory_kib(first.process.pid)
            figures["loaded"] = f"{rss / 1024:.1f}"
            figures["loaded_peak"] = f"{hwm / 1024:.1f}"
            figures["cold_rss"] = f"{rss_b / 1024:.1f}"
            figures["cold_peak"] = f"{hwm_b / 1024:.1f}"
            async with session.get(f"{first.url}/metrics") as m:
                metrics = await m.text()
        await nc.close()
        wall, cpu = in_process(args.hosts, list(pairs(args.plans, args.hosts, 4)))
        results[LOCAL_PATH] = percentiles(wall)
        results[LOCAL_CPU] = percentiles(cpu)
        loads.append(load_average())
        gauge = next(
            line
            for line in metrics.splitlines()
            if line.startswith("ferry_selector_roce_without_pfc_interfaces ")
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
    report(args, results, cpu_per_plan, figures, loads, gauge)
    p99 = results[NATS_PATH]["p99"]
    return 0 if p99 < 10 or not args.strict else 1


NATS_PATH = "NATS request/reply, one at a time (wall)"
HTTP_PATH = "HTTP GET /v1/plan, one keep-alive connection (wall)"
LOCAL_PATH = "the planner alone, in the benchmark's process (wall)"
LOCAL_CPU = "the planner alone, in the benchmark's process (CPU time)"


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, float]],
    cpu_per_plan: dict[str, float],
    figures: dict[str, str],
    loads: list[str],
    gauge: str,
) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    now = datetime.datetime.now(datetime.UTC)
    command = " ".join(["scripts/bench_selector.py", *sys.argv[1:]])
    print()
    print(f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"Python {platform.python_version()}; Ferry at {commit}; {now:%Y-%m-%d %H:%M} UTC; {command}")
    print(f"Load average before the latency runs / after: {loads[0]} / {loads[-1]}")
    print(
        f"{args.hosts} hosts x 8 interfaces; {args.plans} plans per path ({args.http_plans} over HTTP) "
        f"after a warm-up; 20% migrations; {gauge}"
    )
    print()
    print("| path | plans | p50 ms | p90 ms | p99 ms | max ms | selector CPU ms/plan |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        cpu = f"{cpu_per_plan[name] * 1e3:.2f}" if name in cpu_per_plan else ""
        print(
            f"| {name} | {r['n']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} "
            f"| {r['max']:.2f} | {cpu} |"
        )
    print()
    print("| selector memory | VmRSS MiB | peak (VmHWM) MiB |")
    print("|---|---:|---:|")
    print(f"| ready, no inventories | {figures['empty']} | |")
    print(
        f"| {args.hosts} inventories loaded while running, after the latency runs "
        f"| {figures['loaded']} | {figures['loaded_peak']} |"
    )
    print(
        f"| started on {args.hosts} inventories (ready {figures['cold']} s after exec) "
        f"| {figures['cold_rss']} | {figures['cold_peak']} |"
    )
    print()
    print(f"Inventories held {figures['live_load']} s after the first of {args.hosts} writes (live watcher).")
    print(
        f"Throughput, {args.concurrency} concurrent NATS requesters, one selector: {figures['rate']} plans/s."
    )
    p99 = results[NATS_PATH]["p99"]
    print(f"Goal p99 < 10 ms per plan over NATS: {'met' if p99 < 10 else 'NOT met'} ({p99:.2f} ms).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000, help="hosts in KV (default: %(default)s)")
    parser.add_argument("--plans", type=int, default=5000, help="timed plans per path (default: %(default)s)")
    parser.add_argument(
        "--http-plans", type=int, default=2000, help="timed plans over HTTP (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=int, default=500, help="untimed plans first (default: %(default)s)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requesters for the throughput (default: %(default)s)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if the p99 goal is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, JetStream)")
    args = parser.parse_args()
    if args.hosts < 2:
        parser.error("--hosts must be at least 2")
    folder = Path(tempfile.mkdtemp(prefix="ferry-bench-selector-"))
    try:
        return asyncio.run(run(args, folder))
    except BenchError as exc:
        print(f"bench_selector: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
