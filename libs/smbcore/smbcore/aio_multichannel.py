"""Multichannel for the asyncio client: one SMB session over every suitable pair of interfaces.

::

    async with await MultichannelClient.connect(
        "fs1", user="alice", password=secret, local_interfaces=read_my_nics
    ) as mc:
        tree = await mc.connect_tree("data")     # also plans and binds the channels
        await copy_to_share("disk.img", tree, "disk.img")
        print(mc.channels)                       # local -> remote address of each channel

What happens (MS-SMB2 3.2.4.20.10, 3.2.5.14.10, 3.2.4.2.3, 3.2.7.1):

1. The first connection goes to the address the caller named; the session is established on it.
2. The first tree connect is followed by FSCTL_QUERY_NETWORK_INTERFACE_INFO. The server's
   interfaces and the local ones (``local_interfaces()``, a callable: smbcore does not read the
   kernel itself) go through :func:`smbcore.selection.select_channels` (classes RDMA > RSS > the
   rest, one speed, connections per interface, at most ``max_channels``, reachability,
   constraints per server name).
3. Each planned connection is opened from its source address to its server address, with the
   session's ClientGuid, offering only what the first connection negotiated, and bound to the
   session (SMB2_SESSION_FLAG_BINDING, signed; its own signing key). The first connection stays
   a channel if the plan has its pair, and is retired (closed once idle) otherwise, as soon as
   a planned channel is up.
4. I/O is spread over the channels in proportion to their speed
   (:class:`smbcore.multichannel.ChannelScheduler`).
5. A channel that fails has its requests replayed on the others by the session
   (:class:`smbcore.aio_client.SMBSession`); here the server's interfaces are queried again,
   and the lost pair is re-opened and re-bound with backoff until it works (or a new plan no
   longer has it). The interfaces are also queried again every ``requery_interval`` seconds,
   and channels opened or retired as the new plan says.

Without a plan (the server does not answer the FSCTL, or no local interface reaches it, or
``enabled`` is False) the session keeps its one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from .aio_client import ByteWindow, SMBClient, SMBSession, SMBTree
from .client import ClientConfig
from .client_errors import SMBClientError, SMBConnectionError
from .errors import SMBProtocolError
from .multichannel import MAX_CHANNELS, Backoff, ChannelKey, plan_changes
from .selection import (
    DEFAULT_POLICY,
    ChannelPair,
    ChannelPlan,
    Constraint,
    Nic,
    Reachability,
    SelectionPolicy,
    from_network_interface_info,
    same_subnet,
    select_channels,
)

__all__ = ["ChannelInfo", "LocalInterfaces", "MultichannelClient", "MultichannelOptions"]

log = logging.getLogger(__name__)

#: The local interfaces, read when a plan is made (at the start, on a channel failure, and
#: every ``requery_interval``); run in a worker thread.
LocalInterfaces = Callable[[], Iterable[Nic]]


@dataclass(frozen=True, slots=True)
class MultichannelOptions:
    """Every Multichannel setting, with its default and why."""

    #: False: one connection, no FSCTL_QUERY_NETWORK_INTERFACE_INFO (``--no-multichannel``).
    enabled: bool = True
    #: Channels of the session at most (MS-SMB2 and Windows: 32).
    max_channels: int = MAX_CHANNELS
    #: The selection's rules and limits (connections per interface class, RoCE without PFC,
    #: loopback for one-host tests); ``max_channels`` above caps its own.
    policy: SelectionPolicy = DEFAULT_POLICY
    #: Multichannel constraints of this host (New-SmbMultichannelConstraint); those naming the
    #: server (as the caller named it) apply.
    constraints: tuple[Constraint, ...] = ()
    #: Seconds between queries of the server's interfaces (Windows: 10 minutes).
    requery_interval: float = 600.0
    #: Seconds before re-opening a lost channel, doubling up to ``rebind_max_delay`` (a try
    #: is one TCP connect: cheap enough to notice a link's return within seconds).
    rebind_delay: float = 0.5
    rebind_max_delay: float = 5.0
    #: Seconds for opening and binding the planned channels at the start; those not up by then
    #: keep being tried in the background.
    establish_timeout: float = 20.0
    #: Seconds for one channel's TCP connect and NEGOTIATE, and for its binding: a try that
    #: takes longer is abandoned and made again (with backoff).
    channel_timeout: float = 5.0
    #: READ/WRITE bytes in flight across all channels (None: the client config's
    #: ``window_bytes``); the request size shrinks so that every channel has two in flight.
    window_bytes: int | None = None
    #: Plan RDMA channels. This client opens TCP connections only (no SMB Direct yet), so by
    #: default an RDMA-capable local interface is planned as the RSS or plain one it also is.
    rdma: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_channels <= MAX_CHANNELS:
            raise ValueError(f"max_channels must be 1..{MAX_CHANNELS}")
        if min(self.requery_interval, self.rebind_delay, self.establish_timeout, self.channel_timeout) <= 0:
            raise ValueError("intervals and timeouts must be positive")
        if self.rebind_max_delay < self.rebind_delay:
            raise ValueError("rebind_max_delay must be at least rebind_delay")


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One channel as a report shows it: its two ends, the local interface, its speed."""

    local: str
    remote: str
    local_port: int
    remote_port: int
    interface: str | None = None
    speed_bps: int | None = None
    bytes: int = 0  # READ/WRITE bytes the session sent over it (replays included)

    def __str__(self) -> str:
        return str(ChannelKey(self.local, self.remote))

    def to_dict(self) -> dict[str, object]:
        return {
            "local": self.local,
            "remote": self.remote,
            "local_port": self.local_port,
            "remote_port": self.remote_port,
            "interface": self.interface,
            "speed_bps": self.speed_bps,
            "bytes": self.bytes,
        }


@dataclass(eq=False)
class _Pair:
    """A planned (source, server) address pair and its connections."""

    pair: ChannelPair
    wanted: int
    backoff: Backoff
    clients: list[SMBClient] = field(default_factory=list)
    opening: int = 0
    #: Connections lost and not re-opened yet: kept as a target whatever later plans say.
    lost: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def speed(self) -> int | None:
        """Each connection's share of the pair's speed."""
        speed = self.pair.speed_bps
        return None if speed is None else max(1, speed // max(1, self.pair.connections))

    @property
    def missing(self) -> int:
        return self.wanted - len(self.clients) - self.opening


class MultichannelClient:
    """One session to one server over as many channels as the plan says (see the module
    docstring). Make one with :meth:`connect`; ``async with`` closes every channel."""

    def __init__(
        self,
        session: SMBSession,
        *,
        host: str,
        port: int,
        config: ClientConfig,
        options: MultichannelOptions,
        local_interfaces: LocalInterfaces | None,
        reachable: Reachability | None,
        client_guid: bytes,
    ) -> None:
        self.session = session
        self.host, self.port = host, port
        self.config = config
        self.options = options
        self._local_interfaces = local_interfaces
        self._reachable = reachable
        self._client_guid = client_guid
        self._primary: SMBClient | None = session.client
        self._pairs: dict[ChannelKey, _Pair] = {}
        self._retired: set[SMBClient] = set()
        self._tree: SMBTree | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        #: One binding at a time: connections open in parallel, but a server may not cope with
        #: several bindings of one session at once (Samba 4.17 sometimes leaves one unanswered).
        self._binding = asyncio.Lock()
        self._closing = False
        self._seen: dict[SMBClient, ChannelInfo] = {}
        #: The last plan (None before the first tree connect, or without Multichannel).
        self.plan: ChannelPlan | None = None
        #: Counters: channels lost, and channels re-opened and bound after a loss.
        self.failures = 0
        self.rebinds = 0
        self._note(session.client, None, None)
        session.on_channel_lost(self._on_channel_lost)

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = 445,
        *,
        user: str,
        password: str,
        domain: str = "",
        config: ClientConfig | None = None,
        options: MultichannelOptions | None = None,
        local_interfaces: LocalInterfaces | None = None,
        reachable: Reachability | None = None,
        require_encryption: bool = False,
    ) -> MultichannelClient:
        """Connect to ``host`` and log in; the channels follow the first :meth:`connect_tree`.
        Raises what :meth:`SMBClient.connect` and :meth:`SMBClient.login` raise."""
        config = config or ClientConfig()
        options = options or MultichannelOptions()
        guid = os.urandom(16)
        client = await SMBClient.connect(host, port, config=config, server_name=host, client_guid=guid)
        try:
            session = await client.login(user, password, domain, require_encryption=require_encryption)
        except BaseException:
            await client.close()
            raise
        session.window = ByteWindow(options.window_bytes or config.window_bytes)
        return cls(
            session, host=host, port=port, config=config, options=options,
            local_interfaces=local_interfaces, reachable=reachable, client_guid=guid,
        )  # fmt: skip

    async def close(self) -> None:
        """Close every channel (what is in flight fails) and stop re-opening them."""
        self._closing = True
        tasks = [t for t in (*self._tasks, self._maintainer) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        clients = {c for p in self._pairs.values() for c in p.clients} | self._retired
        await self.session.close()
        await asyncio.gather(*(c.close() for c in clients))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- what callers use ------------------------------------------------------------------------

    async def connect_tree(self, share: str, *, require_encryption: bool = False) -> SMBTree:
        """TREE_CONNECT; the first one also plans the channels and opens them (waiting up to
        ``establish_timeout`` for them; the ones not up by then keep being tried)."""
        tree = await self.session.connect_tree(share, require_encryption=require_encryption)
        if self._tree is None:
            self._tree = tree
            if self.options.enabled:
                await self.refresh(wait=True)
                self._maintainer = asyncio.get_running_loop().create_task(
                    self._maintain(), name=f"smb-multichannel-{self.host}"
                )
        return tree

    @property
    def channels(self) -> list[ChannelInfo]:
        """The channels in use now."""
        return [self._info(c) for c in self.session.channels]

    def channels_used(self) -> list[ChannelInfo]:
        """The channels that carried READ/WRITE data so far, in the order they were opened; a
        connection that replaced a lost one of the same pair counts once per planned
        connection of that pair."""
        used = [self._info(c) for c in self._seen if self.session.bytes_sent(c) > 0]
        limit: dict[ChannelKey, int] = {}
        for info in used:
            key = ChannelKey(info.local, info.remote)
            pair = self._pairs.get(key)
            limit.setdefault(key, max(1, pair.wanted if pair is not None else 1))
        out: list[ChannelInfo] = []
        for info in used:
            key = ChannelKey(info.local, info.remote)
            if limit[key] > 0:
                limit[key] -= 1
                out.append(info)
        return out

    async def wait_for_channels(self, count: int, timeout: float) -> None:
        """Wait until the session has at least ``count`` channels (tests, benchmarks)."""
        async with asyncio.timeout(timeout):
            while len(self.session.channels) < count:
                self._changed.clear()
                await self._changed.wait()

    async def refresh(self, *, wait: bool = False) -> ChannelPlan | None:
        """Query the server's interfaces and the local ones again, make a new plan, open what it
        adds and retire what it drops. With ``wait``, wait for the new channels' first try."""
        tree = self._tree
        if tree is None or self._closing or not self.session.channels:
            return None
        plan = await self._make_plan(tree)
        self.plan = plan
        if plan is None:
            return None
        primary = self._primary
        if primary is not None and not primary.closed:
            pair = next((p for p in plan.channels if ChannelKey.of(p) == primary.key), None)
            if pair is not None:  # the first connection is one of the plan's: it counts
                self._pair(pair).clients.append(primary)
                self.session.set_speed(primary, self._pairs[primary.key].speed)
                self._note(primary, pair.local_name, self._pairs[primary.key].speed)
                self._primary = None
        # The plan's pairs, and the lost ones still being re-opened: a pair whose link is down
        # is not in a plan made meanwhile, but comes back with its link (MS-SMB2 leaves this to
        # the client; Windows re-establishes a lost channel when it can).
        wanted = list(plan.channels)
        planned = {ChannelKey.of(p) for p in wanted}
        for key, state in self._pairs.items():
            if state.lost and key not in planned:  # keep what lives, re-open what was lost
                wanted.append(dataclasses.replace(state.pair, connections=state.lost + len(state.clients)))
        current = {key: len(p.clients) + p.opening for key, p in self._pairs.items()}
        changes = plan_changes(wanted, current, limit=self.options.max_channels)
        counts = {ChannelKey.of(p): p.connections for p in wanted}
        for key, state in self._pairs.items():
            state.wanted = counts.get(key, 0)
        for key, count in changes.retire:
            for client in self._pairs[key].clients[:count]:
                self._retire(client)
        first_tries: list[asyncio.Task[None]] = []
        for pair, count in changes.open:
            state = self._pair(pair)
            state.pair = pair
            state.wanted = counts[ChannelKey.of(pair)]
            if state.task is not None and not state.task.done():
                continue  # its keeper is re-opening it already
            # All at once; as soon as one is up, a first connection that is not in the plan is
            # retired (the session may hold one channel more than the limit until then).
            first_tries += [self._spawn(self._open(state)) for _ in range(count)]
        if first_tries and wait:
            _, pending = await asyncio.wait(first_tries, timeout=self.options.establish_timeout)
            if pending:
                log.warning("not every planned channel came up in time; still trying")
        return plan

    # -- planning --------------------------------------------------------------------------------

    async def _make_plan(self, tree: SMBTree) -> ChannelPlan | None:
        try:
            entries = await tree.query_network_interfaces()
        except (SMBClientError, SMBProtocolError) as exc:
            log.warning("FSCTL_QUERY_NETWORK_INTERFACE_INFO failed: %s", exc)
            return None
        if not entries:
            log.info("%s offers no interfaces for Multichannel", self.host)
            return None
        remote = from_network_interface_info(entries)
        policy = dataclasses.replace(
            self.options.policy,
            max_channels=min(self.options.max_channels, self.options.policy.max_channels),
            allow_loopback=self.options.policy.allow_loopback or _is_loopback(self.session.client.remote[0]),
        )
        reachable = self._reachable or same_subnet
        read_local = self._local_interfaces

        rdma = self.options.rdma

        def plan_in_thread() -> ChannelPlan:
            # Reading the interfaces and asking the kernel for routes block: not on the loop.
            local = tuple(read_local()) if read_local is not None else ()
            if not rdma:
                local = tuple(dataclasses.replace(n, rdma_kind=None) for n in local)
            return select_channels(
                local, remote, server=self.host, reachable=reachable, constraints=self.options.constraints,
                policy=policy,
            )  # fmt: skip

        try:
            plan = await asyncio.to_thread(plan_in_thread)
        except Exception as exc:
            log.warning("cannot plan the channels: %s", exc)
            return None
        for warning in plan.warnings:
            log.warning("channel selection: %s", warning)
        log.info(
            "channel plan for %s: %d connection(s)%s",
            self.host, plan.connections,
            "".join(f"; {c.connections} x {ChannelKey.of(c)} ({c.local_name})" for c in plan.channels),
        )  # fmt: skip
        return plan

    def _pair(self, pair: ChannelPair) -> _Pair:
        key = ChannelKey.of(pair)
        state = self._pairs.get(key)
        if state is None:
            backoff = Backoff(self.options.rebind_delay, self.options.rebind_max_delay)
            state = self._pairs[key] = _Pair(pair, pair.connections, backoff)
        return state

    # -- opening and binding channels ------------------------------------------------------------

    async def _open(self, state: _Pair) -> None:
        """One try at opening a connection of ``state``'s pair and binding it; on failure the
        pair's keeper tries again with backoff."""
        state.opening += 1
        try:
            client = await self._connect_and_bind(state)
        except Exception as exc:
            state.opening -= 1
            log.warning("cannot open a channel %s: %s", ChannelKey.of(state.pair), exc)
            self._keep(state)
            return
        state.opening -= 1
        if self._closing or state.missing < 0:
            self._retire(client)
            return
        state.clients.append(client)
        state.backoff.reset()
        self._note(client, state.pair.local_name, state.speed)
        primary = self._primary
        if primary is not None and not primary.closed:  # not one of the plan's: retire it
            self._primary = None
            self._retire(primary)

    async def _connect_and_bind(self, state: _Pair) -> SMBClient:
        session = self.session.session
        timeout = self.options.channel_timeout
        config = dataclasses.replace(
            self.config,
            dialects=(session.dialect,),
            signing_algorithms=(session.signing_algorithm,),
            ciphers=(session.cipher,) if session.cipher is not None else self.config.ciphers,
            connect_timeout=min(self.config.connect_timeout, timeout),
        )
        pair = state.pair
        client = await SMBClient.connect(
            pair.remote_address, self.port, config=config, server_name=self.host,
            client_guid=self._client_guid, source_address=pair.source_address,
        )  # fmt: skip
        try:
            async with self._binding, asyncio.timeout(timeout):
                await self.session.bind(client, speed=state.speed)
        except BaseException:
            await client.close()
            raise
        log.info("channel %s bound (%d channels)", client.key, len(self.session.channels))
        return client

    def _keep(self, state: _Pair) -> None:
        """Make sure the pair's keeper runs: it re-opens what is missing, with backoff."""
        if self._closing or (state.task is not None and not state.task.done()):
            return
        state.task = self._spawn(self._keeper(state))

    async def _keeper(self, state: _Pair) -> None:
        while not self._closing and state.missing > 0 and self.session.channels:
            await asyncio.sleep(state.backoff.next_delay())
            if self._closing or state.missing <= 0 or not self.session.channels:
                return
            state.opening += 1
            try:
                client = await self._connect_and_bind(state)
            except Exception as exc:
                log.info("re-opening channel %s failed (%s); trying again", ChannelKey.of(state.pair), exc)
                continue
            finally:
                state.opening -= 1
            if self._closing or state.missing < 0:
                self._retire(client)
                return
            state.clients.append(client)
            state.backoff.reset()
            state.lost = max(0, state.lost - 1)
            self.rebinds += 1
            self._note(client, state.pair.local_name, state.speed)
            log.info("channel %s re-bound (%d channels)", client.key, len(self.session.channels))
            self._wake.set()  # plan again: the way back may have brought more

    def _retire(self, client: SMBClient) -> None:
        """Send nothing more on ``client``; close it once what it has in flight is done."""
        self._retired.add(client)
        self.session.retire(client)
        for state in self._pairs.values():
            if client in state.clients:
                state.clients.remove(client)
        self._spawn(self._close_when_idle(client))

    async def _close_when_idle(self, client: SMBClient) -> None:
        await self.session.wait_idle(client)
        await client.close()

    def _on_channel_lost(self, client: SMBClient, error: SMBConnectionError) -> None:
        if self._closing or client in self._retired:
            return
        self.failures += 1
        log.warning("channel %s lost: %s", client.key, error)
        if client is self._primary:
            self._primary = None
        for state in self._pairs.values():
            if client in state.clients:
                state.clients.remove(client)
                state.lost += 1
                self._keep(state)
        self._wake.set()  # query the server's interfaces again

    async def _maintain(self) -> None:
        """Re-plan every ``requery_interval`` and after a channel failure."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.requery_interval):
                    await self._wake.wait()
            self._wake.clear()
            if not self.session.channels:
                return  # the session is gone with its last channel
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("re-planning the channels failed: %s", exc)

    # -- helpers ---------------------------------------------------------------------------------

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _note(self, client: SMBClient, interface: str | None, speed: int | None) -> None:
        self._changed.set()
        self._seen[client] = ChannelInfo(
            client.local[0], client.remote[0], client.local[1], client.remote[1], interface, speed
        )

    def _info(self, client: SMBClient) -> ChannelInfo:
        info = self._seen.get(client) or ChannelInfo(
            client.local[0], client.remote[0], client.local[1], client.remote[1]
        )
        return dataclasses.replace(info, bytes=self.session.bytes_sent(client))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False
