"""The running daemon: holds the current config, the latest machine sample, the database and
the API server, and runs the periodic loops (sampling, expiry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from ds01.api.server import ApiDeps, build_app, serve
from ds01.config import Config, load_config
from ds01.errors import Ds01Error, InventoryError
from ds01.inventory.backend import InventoryBackend
from ds01.model.inventory import MachineSample
from ds01.paths import Paths
from ds01.services.allocation import AllocationService
from ds01.store.db import Database

log = logging.getLogger("ds01d")

EXPIRY_TICK_S = 1.0


class Daemon:
    def __init__(self, paths: Paths, sim: str | None = None) -> None:
        self.paths = paths
        self.config: Config = load_config(paths.config)
        self.backend = self._open_backend(sim)
        self.db = Database(paths.db)
        self.allocations = AllocationService(self.db, lambda: self.config)
        self.sample: MachineSample | None = None
        self._unit_set: frozenset[str] = frozenset()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    def _open_backend(self, sim: str | None) -> InventoryBackend:
        from ds01.inventory.select import open_backend, resolve_sim

        if sim:
            return open_backend("sim", resolve_sim(sim))
        return open_backend(self.config.gpu.backend, self.config.gpu.sim_machine)

    def reload_config(self) -> None:
        """SIGHUP: load the config again; a bad file keeps the last good config running."""
        try:
            self.config = load_config(self.paths.config)
        except Ds01Error as err:
            log.error(
                "config reload failed, keeping the running config: %s", " | ".join(err.lines())
            )
            return
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

    async def _sampler(self) -> None:
        interval = max(0.2, float(self.config.gpu.sample_interval))
        while True:
            await asyncio.sleep(interval)
            try:
                self.apply_sample(await asyncio.to_thread(self.take_sample))
            except InventoryError as err:
                log.error("inventory sample failed: %s", " | ".join(err.lines()))

    async def _expiry(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK_S)
            try:
                done = self.allocations.expire_due()
                if done:
                    log.info("released %d expired allocation(s): %s", len(done), done)
            except Ds01Error as err:
                log.error("expiry pass failed: %s", " | ".join(err.lines()))

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.apply_sample(await asyncio.to_thread(self.take_sample))
        # Anything that expired while the daemon was down goes first.
        self.allocations.expire_due()
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.run_dir, 0o755)
        deps = ApiDeps(
            allocations=self.allocations,
            sample=lambda: self.sample,
            backend_name=self.backend.name,
        )
        self._runner = await serve(build_app(deps), str(self.paths.api_socket))
        self._tasks = [
            asyncio.create_task(self._sampler(), name="sampler"),
            asyncio.create_task(self._expiry(), name="expiry"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            Path(self.paths.api_socket).unlink()
        self.backend.close()
        self.db.close()
