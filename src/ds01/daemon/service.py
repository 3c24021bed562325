"""The running daemon: holds the current config, the latest machine sample, the database and
the API server, and runs the periodic loops (sampling, expiry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ds01.api import notices as notices_api
from ds01.api.schemas import LoopOut, OrphanOut
from ds01.api.server import ApiDeps, build_app, serve
from ds01.config import Config, load_config, reload_config, restart_only_changes
from ds01.daemon.loops import LoopHealth, supervised
from ds01.daemon.metrics import start_metrics
from ds01.daemon.statuspage import start_web
from ds01.errors import Ds01Error, RuntimeUnavailable
from ds01.gate import EngineClient, GateDeps, GateServer, GateSettings
from ds01.identity import CallerCache
from ds01.inventory.backend import InventoryBackend
from ds01.lifecycle.containerstats import ContainerStats
from ds01.lifecycle.reclaim import Reclaimer
from ds01.model.allocation import AllocState
from ds01.model.inventory import MachineSample
from ds01.paths import Paths
from ds01.runtime.engine import Engine, EventStream
from ds01.services.allocation import AllocationService
from ds01.services.clock import ClockWatch
from ds01.services.containers import ContainerService
from ds01.services.devicewatch import TICK_S as DEVICE_TICK_S
from ds01.services.devicewatch import DeviceWatch
from ds01.services.grants import GrantService
from ds01.services.hostproc import HostProcessWatch
from ds01.services.invariants import describe
from ds01.services.queue import QueueService
from ds01.services.reconcile import EVENT_ACTIONS, Reconciler
from ds01.services.sweep import InvariantSweep
from ds01.services.unithistory import UnitHistory
from ds01.services.unituse import UnitUseMemo
from ds01.services.usage import UsageLedger
from ds01.store.backup import backup_if_due, default_backup_dir
from ds01.store.db import Checkpointer, Database
from ds01.web.server import WebServer

if TYPE_CHECKING:
    from ds01.metrics.server import MetricsServer  # prometheus_client: only when metrics are on

log = logging.getLogger("ds01d")

EXPIRY_TICK_S = 1.0
QUEUE_TICK_S = 1.0  # the dispatcher's pass (services/queue.py); a release wakes it sooner
CHECKPOINT_TICK_S = 1.0  # WAL checkpoints off the committing connection (store/db.py)
HOST_ACCESS_TICK_S = 1.0  # grant expiry, warnings, host-access file, host GPU process watch
RECONCILE_EVERY_S = 30.0
# Tests race reconcile against deploys with a much shorter pass (tests/containers/
# test_reconcile_race.py); only root sets ds01d's environment.
RECONCILE_ENV = "DS01_RECONCILE_EVERY_S"


def _reconcile_every() -> float:
    try:
        return max(0.05, float(os.environ.get(RECONCILE_ENV, RECONCILE_EVERY_S)))
    except ValueError:
        return RECONCILE_EVERY_S


EVENTS_RETRY_S = 2.0
BACKUP_TICK_S = 60.0  # how often the backup loop looks whether a backup is due
STOP_THREADS_S = 30.0  # how long a stop waits for worker threads (a Docker call, a pass)


class Daemon:
    def __init__(self, paths: Paths, sim: str | None = None, host_root: Path = Path("/")) -> None:
        self.paths = paths
        self.config: Config = load_config(paths.config)
        self.started_config = self.config  # what the restart-only keys still run with
        self.restart_needed: list[str] = []
        self.backend = self._open_backend(sim)
        self.db = Database(paths.db)
        self.checkpointer = Checkpointer(paths.db)
        self._threads = ThreadPoolExecutor(thread_name_prefix="ds01d")
        # Every service reads the time through the clock watch (services/clock.py).
        self.clock = ClockWatch(self.db)
        self.callers = CallerCache()  # api.sock's, the gate's, and the owners of allocations
        self.allocations = AllocationService(
            self.db,
            lambda: self.config,
            clock=self.clock.now,
            owner_groups=lambda name: self.callers.of_name(name).groups,
        )
        self.engine = Engine(self.config.docker.host)
        self.containers = ContainerService(self.allocations, self.engine, lambda: self.config)
        self.reconciler = Reconciler(self.containers)
        self.sweep = InvariantSweep(self.containers)
        self._wire_host_access()
        # Idle reclaim and max runtime (lifecycle/reclaim.py): a pass after every new sample.
        self.reclaimer = Reclaimer(
            self.allocations,
            self.containers,
            self.notifier,
            lambda: self.sample,
            self.clock.now,
            max_age=lambda: 3 * self._sample_interval() + 10,
            held=self.clock.held,
        )
        self._sampled = asyncio.Event()
        # The usage ledger (services/usage.py): a pass after every new sample, in its own loop
        # so that a slow or failing ledger never delays sampling or the lifecycle.
        self.usage = UsageLedger(
            self.allocations,
            max_gap=lambda: 3 * self._sample_interval() + 10,
            callers=self.reclaimer.callers,
        )
        self.clock.on_step.append(self.usage.clock_stepped)
        self._usage_due = asyncio.Event()
        # The running containers' CPU and memory from their cgroups, a pass after every sample
        # (lifecycle/containerstats.py): `ds01 container stats` reads it, never Docker's stats.
        self.container_stats = ContainerStats(self.engine.inspect, wall=self.clock.now)
        self._stats_due = asyncio.Event()
        self._units_freed = asyncio.Event()  # wakes the queue's dispatcher (start())
        # The queue's dispatcher (issue 16): deploys waiting for capacity, admitted as units
        # free up (every pass; a pass that finds nothing changed since the head was refused
        # costs two reads).
        self.queue = QueueService(self.containers, self.notifier, clock=self.clock.now)
        self.queue.outlooks = self.reclaimer.outlooks  # for estimated start times
        self.queue.exemption_ends = self.reclaimer.exemptions.ends  # no backfill past them
        # Placement reads what runs on each unit from the latest sample (services/unituse.py).
        self.allocations.unit_use = UnitUseMemo(lambda: self.sample, self.hostproc.current)
        # /dev/nvidia* owner and mode (services/devicewatch.py); host_root: ds01d --host-root.
        self.devices = DeviceWatch(self.db, lambda: self.config, host_root, clock=self.clock.now)
        self.docker_state = "unknown"
        self._stopping = False
        # Set at stop: wakes the Docker event watch out of its retry pause (an Event, not
        # time.sleep, also keeps ds01d runnable under libfaketime, tests/daemon/test_clock_step.py).
        self._stopped = threading.Event()
        self._event_stream: EventStream | None = None
        self.sample: MachineSample | None = None
        self.unit_history = UnitHistory()  # the web page's sparklines (services/unithistory.py)
        self._unit_set: frozenset[str] = frozenset()
        self._tasks: list[asyncio.Task[None]] = []
        self.health = LoopHealth()
        self._reconcile_every = _reconcile_every()
        self.state_problems: list[str] = []  # the last state invariant check's findings
        self._runner: web.AppRunner | None = None
        self.gate: GateServer | None = None
        self.web: WebServer | None = None
        self.metrics: MetricsServer | None = None

    def _open_backend(self, sim: str | None) -> InventoryBackend:
        from ds01.inventory.select import open_backend, resolve_sim

        if sim:
            return open_backend("sim", resolve_sim(sim))
        return open_backend(self.config.gpu.backend, self.config.gpu.sim_machine)

    def _wire_host_access(self) -> None:
        from ds01.notify import NOTIFICATIONS_LOG, Notifier
        from ds01.services.banners import BannerBox
        from ds01.services.noticebook import NoticeBook
        from ds01.services.workspaces import workspace_dir

        # Notices to users on the channels notify.channels chooses; every outcome audited.
        self.banners = BannerBox(
            self.db, lambda: self.config.notify.banner.max_age, clock=self.clock.now
        )
        self.notifier = Notifier(
            self.paths.state_dir / NOTIFICATIONS_LOG,
            settings=lambda: self.config.notify,
            banners=self.banners,
            workspace_of=lambda container_id: workspace_dir(self.engine, container_id),
            on_outcome=NoticeBook(self.db, self.clock.now).record,
        )
        self.grants = GrantService(
            self.db, self.allocations, self.paths.run_dir, self.notifier, clock=self.clock.now
        )
        self.hostproc = HostProcessWatch(
            self.db, self.allocations, self.grants, self.notifier, clock=self.clock.now
        )
        self.clock.on_step += [self.grants.clock_stepped, self.hostproc.clock_stepped]
        self.grants.on_ended.append(self.hostproc.grant_ended)

    def _host_access_once(self, startup: bool = False) -> None:
        """A wall-clock step first (every stored and cached deadline moves with it, in this
        thread, before the grants and the process watch compare any), then grants (expiry,
        warnings, file, group), then the host GPU process watch. Until a step is applied here,
        the clock watch answers every other reader in the deadlines' old frame."""
        self.clock.check()
        self.grants.tick(force_sync=startup)  # at start: rewrite the file, re-read the group
        self.hostproc.scan(self.sample)

    async def _devices_step(self) -> None:
        await asyncio.to_thread(self.devices.enforce)

    async def _host_access_step(self) -> None:
        await asyncio.to_thread(self._host_access_once)

    def reload_config(self) -> None:
        """SIGHUP: load the config again; a bad file keeps the last good config running. Keys
        read only at start (config.RESTART_ONLY) keep their running value; which ones changed
        is logged, in /v1/health (restart_needed) and in `ds01 doctor`."""
        new, err = reload_config(self.paths.config, self.config)
        if err is not None:
            log.error(
                "config reload failed, keeping the running config: %s", " | ".join(err.lines())
            )
            return
        self.restart_needed = restart_only_changes(self.started_config, new)
        if self.restart_needed:
            log.warning(
                "config reloaded; %s changed and take effect only when ds01d restarts",
                ", ".join(self.restart_needed),
            )
        if new.docker.host != self.config.docker.host:
            self.engine.retarget(new.docker.host)
        self.config = new
        log.info("config reloaded from %s", self.paths.config)

    # ---- sampling --------------------------------------------------------------------

    def take_sample(self) -> MachineSample:
        sample = self.backend.sample()
        if sample.taken_at is None:
            sample = MachineSample(
                gpus=sample.gpus,
                processes=sample.processes,
                source=sample.source,
                taken_at=datetime.now(UTC),
                driver_version=sample.driver_version,
                warnings=sample.warnings,
            )
        return sample

    def apply_sample(self, sample: MachineSample) -> None:
        self.sample = sample
        self.unit_history.record(sample)
        units = frozenset(u.uuid for u in sample.units())
        # Unit rows change only when the set of units does: no write per sample.
        if units != self._unit_set:
            result = self.allocations.sync_units(sample)
            self._unit_set = units
            if result.added or result.gone or result.returned:
                log.info(
                    "inventory: %d units (%d new, %d gone, %d back)",
                    len(units),
                    len(result.added),
                    len(result.gone),
                    len(result.returned),
                )

    def _sample_interval(self) -> float:
        return max(0.2, float(self.config.gpu.sample_interval))

    async def _sample_step(self) -> None:
        # apply_sample writes the unit table when the set of units changed: in a thread too.
        await asyncio.to_thread(self.apply_sample, await asyncio.to_thread(self.take_sample))
        self._sampled.set()
        self._usage_due.set()
        self._stats_due.set()

    async def _usage_step(self) -> None:
        sample = self.sample
        if sample is not None:
            await asyncio.to_thread(lambda: self.usage.observe(sample, self.clock.now()))

    async def _container_stats_step(self) -> None:
        def running() -> list[str]:
            return [
                r.container_id
                for r in self.allocations.all_live()
                if r.state is AllocState.ACTIVE and r.container_id is not None
            ]

        await asyncio.to_thread(lambda: self.container_stats.observe(running()))

    async def _lifecycle_step(self) -> None:
        await asyncio.to_thread(self.reclaimer.tick)

    async def _expiry_step(self) -> None:
        # In a thread: a database held locked by someone else blocks up to its busy timeout.
        done = await asyncio.to_thread(self.allocations.expire_due)
        if done:
            log.info("released %d expired allocation(s): %s", len(done), done)

    async def _queue_step(self) -> None:
        # In a thread: an admission deploys a container (Docker calls, seconds).
        done = await asyncio.to_thread(self.queue.dispatch)
        if done:
            log.info("started %d queued deploy(s): entries %s", len(done), done)

    async def _checkpoint_step(self) -> None:
        await asyncio.to_thread(self.checkpointer.run)

    # ---- backups ---------------------------------------------------------------------

    def _backup_tick(self) -> float:
        every = self.config.state.backup_interval
        return float(min(every, BACKUP_TICK_S)) if every else BACKUP_TICK_S

    async def _backup_step(self) -> None:
        """An online backup when the newest is state.backup_interval old (store/backup.py). A
        failure (a full disk) is the supervised loop's: logged once, tried again next tick."""
        state = self.config.state
        if state.backup_interval is None:  # automatic backups are off
            return
        backup_dir = state.backup_dir or default_backup_dir(self.paths.state_dir)
        done = await asyncio.to_thread(
            backup_if_due, self.paths.db, backup_dir, state.backup_interval, state.backup_keep
        )
        if done is not None:
            log.info(
                "state backup written: %s%s",
                done.path,
                f" ({len(done.deleted)} older deleted)" if done.deleted else "",
            )

    # ---- Docker ----------------------------------------------------------------------

    def _reconcile_once(self, startup: bool = False) -> None:
        try:
            try:
                self.reconciler.run(startup=startup)
                self.sweep.run()
            finally:
                self._check_state()  # the database's own invariants, Docker or not
        except RuntimeUnavailable as err:
            if self.docker_state != "down":
                log.error(
                    "Docker unavailable, deploys are refused until it returns: %s",
                    " | ".join(err.lines()),
                )
            self.docker_state = "down"
            return
        if self.docker_state != "up":
            log.info("Docker engine reachable at %s", self.config.docker.host)
        self.docker_state = "up"

    def _check_state(self) -> None:
        """I1, I3, I5 (store/consistency.py): a new violation is logged and audited once; the
        current ones are in /v1/health and the doctor."""
        found = self.allocations.check_state(set(self.state_problems))
        for p in found:
            if str(p) not in self.state_problems:
                log.error("state invariant broken: %s", p)
        self.state_problems = [str(p) for p in found]

    async def _reconcile_step(self) -> None:
        await asyncio.to_thread(self._reconcile_once)

    def _watch_events(self) -> None:
        """Blocking: follow Docker's event stream, reconnecting (with a full pass) after drops."""
        while not self._stopping:
            try:
                stream = self.engine.events(
                    since=int(time.time()), filters={"event": list(EVENT_ACTIONS)}
                )
                self._event_stream = stream
                self._reconcile_once()
                for event in stream:
                    if self._stopping:
                        break
                    try:
                        self.reconciler.on_event(event)
                    except Ds01Error as err:
                        log.error("handling Docker event failed: %s", " | ".join(err.lines()))
                    except Exception:
                        # The database (locked, disk full): this event is lost, the next
                        # reconcile pass repairs what it would have done.
                        log.exception("handling Docker event failed")
                self.health.last_ok["docker-events"] = time.time()
            except Ds01Error:
                self.docker_state = "down"
            except Exception:
                log.exception("the Docker event watch failed; reconnecting")
            if not self._stopping:
                self._stopped.wait(EVENTS_RETRY_S)

    # ---- lifecycle -------------------------------------------------------------------

    def _loop(
        self,
        name: str,
        step: Callable[[], Awaitable[None]],
        interval: Callable[[], float],
        wake: asyncio.Event | None = None,
    ) -> asyncio.Task[None]:
        return asyncio.create_task(supervised(name, step, interval, self.health, wake), name=name)

    async def start(self) -> None:
        # The daemon's own executor for every to_thread(), so stop() can wait for its threads.
        asyncio.get_running_loop().set_default_executor(self._threads)
        await asyncio.to_thread(self.apply_sample, await asyncio.to_thread(self.take_sample))
        # Anything that expired while the daemon was down goes first.
        await asyncio.to_thread(self.allocations.expire_due)
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.run_dir, 0o755)
        await asyncio.to_thread(self._reconcile_once, True)
        await asyncio.to_thread(self._host_access_once, True)
        # After host-access: with compute_gate uvm that pass creates ds01-gpu-host.
        await asyncio.to_thread(self.devices.enforce, "start")
        devices_wake = self.devices.watch(asyncio.get_running_loop())
        deps = ApiDeps(
            allocations=self.allocations,
            sample=lambda: self.sample,
            backend_name=self.backend.name,
            docker_state=lambda: self.docker_state,
            containers=self.containers,
            orphans=self._orphans,
            loops=self._loops,
            invariants=lambda: list(self.state_problems),
            restart_needed=lambda: list(self.restart_needed),
            grants=self.grants,
            host_processes=self.hostproc,
            callers=self.callers,
            outlooks=self.reclaimer.outlooks,
            keep_alive=self.reclaimer.keep_alive,
            exemptions=self.reclaimer.exemptions,
            queue=self.queue,
            container_stats=self.container_stats.latest,
        )
        app = build_app(deps)
        notices_api.install(app, self.banners)  # banners for the caller's next command
        self._runner = await serve(app, str(self.paths.api_socket))
        await self._start_gate()
        self.web = await start_web(self)  # http://<web.listen>/ (docs/web.md)
        self.metrics = await start_metrics(self)  # http://<metrics.listen>/metrics
        self.checkpointer.take_over(self.db)
        loop = asyncio.get_running_loop()

        def units_freed() -> None:
            if not self.queue.line_empty():
                loop.call_soon_threadsafe(self._units_freed.set)

        self.allocations.on_freed.append(units_freed)
        self._tasks = [
            self._loop("sampler", self._sample_step, self._sample_interval),
            self._loop("lifecycle", self._lifecycle_step, self._sample_interval, self._sampled),
            self._loop("usage", self._usage_step, self._sample_interval, self._usage_due),
            self._loop(
                "container-stats",
                self._container_stats_step,
                self._sample_interval,
                self._stats_due,
            ),
            self._loop("expiry", self._expiry_step, lambda: EXPIRY_TICK_S),
            self._loop("queue", self._queue_step, lambda: QUEUE_TICK_S, self._units_freed),
            self._loop("reconcile", self._reconcile_step, lambda: self._reconcile_every),
            self._loop("host-access", self._host_access_step, lambda: HOST_ACCESS_TICK_S),
            self._loop("backup", self._backup_step, self._backup_tick),
            self._loop("checkpoint", self._checkpoint_step, lambda: CHECKPOINT_TICK_S),
            self._loop("devices", self._devices_step, lambda: DEVICE_TICK_S, devices_wake),
        ]
        self._watcher = threading.Thread(
            target=self._watch_events, name="docker-events", daemon=True
        )
        self._watcher.start()

    async def _start_gate(self) -> None:
        """The Docker gate on <run-dir>/docker.sock (gate/): 0660, group host.gate_group."""
        settings = GateSettings()
        engine = EngineClient(
            lambda: self.config.docker.host,
            timeout_s=settings.engine_timeout_s,
            max_reply_bytes=settings.max_engine_reply_bytes,
        )
        deps = GateDeps(
            allocations=self.allocations,
            containers=self.containers,
            config=lambda: self.config,
            engine=engine,
            settings=settings,
            queue=self.queue,
        )
        self.gate = GateServer(deps, self.callers)
        await self.gate.start(self.paths.gate_socket, self.config.host.gate_group)

    def _loops(self) -> dict[str, LoopOut]:
        h = self.health
        names = sorted({*h.last_ok, *h.failing, *h.since})
        return {
            n: LoopOut(
                last_ok=h.last_ok.get(n),
                failing=h.failing.get(n),
                interval_s=h.interval_s.get(n),
                running_since=h.since.get(n),
            )
            for n in names
        }

    def _orphans(self) -> list[OrphanOut]:
        return [
            OrphanOut(
                container_id=o.info.id,
                docker_name=o.info.name,
                owner=o.info.owner,
                gpu_device_ids=list(o.info.gpu_device_ids),
                problem=o.problem,
            )
            for o in self.reconciler.orphans
        ] + [
            OrphanOut(
                container_id=s.container_id,
                docker_name=s.name,
                owner=s.owner,
                gpu_device_ids=[],
                problem="stopped by ds01: " + describe(list(s.found)),
            )
            for s in self.sweep.stopped
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        if self._event_stream is not None:
            self._event_stream.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.gate is not None:
            await self.gate.stop()
        if self.web is not None:
            await self.web.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            Path(self.paths.api_socket).unlink()
        # A cancelled to_thread() does not stop its thread: a checkpoint, a dispatch pass or a
        # request's decision may still be inside SQLite. Closing a connection under it can
        # crash the interpreter (ds01d once died of SIGSEGV on SIGTERM), so wait for them.
        if not await self._threads_done(STOP_THREADS_S):
            log.warning(
                "threads still busy %.0f s after stop; leaving the database to process exit",
                STOP_THREADS_S,
            )
            return
        self.devices.close()
        self.notifier.close()
        self.callers.close()
        self.backend.close()
        self.checkpointer.close()
        self.db.close()

    async def _threads_done(self, timeout: float) -> bool:
        """Shut the worker threads down; True once none runs. Polled rather than joined, so a
        thread stuck in a Docker call cannot hold the stop past `timeout`."""
        waiter = threading.Thread(
            target=self._threads.shutdown, kwargs={"wait": True}, name="stop", daemon=True
        )
        waiter.start()
        deadline = time.monotonic() + timeout
        while waiter.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not waiter.is_alive()
