"""A supervised loop with a wake event (ds01d's device watch: inotify) runs its next pass as soon
as the event is set, not only after its interval."""

from __future__ import annotations

import asyncio
import contextlib

from ds01.daemon.loops import LoopHealth, supervised

HOUR = 3600.0


def test_a_set_wake_event_starts_the_next_pass_at_once() -> None:
    async def scenario() -> tuple[int, LoopHealth]:
        health = LoopHealth()
        wake = asyncio.Event()
        passes = 0
        ran = asyncio.Event()

        async def step() -> None:
            nonlocal passes
            passes += 1
            ran.set()

        task = asyncio.create_task(supervised("devices", step, lambda: HOUR, health, wake))
        try:
            for _ in range(3):
                ran.clear()
                wake.set()
                await asyncio.wait_for(ran.wait(), 30)  # an hour's interval: only wake can do it
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return passes, health

    passes, health = asyncio.run(scenario())
    assert passes == 3
    assert "devices" in health.last_ok and health.failing == {}
