"""A container create held open while it waits in ds01's queue (`gate.queue: wait`; issue 16).

When capacity (not quota) refuses a create's GPU count, policy/gpus.py raises WaitInLine
instead of the refusal. The request then becomes a queue entry (services/gatequeue.py) and its
connection stays open, like `srun` blocks: nothing is sent to the engine and nothing is answered
until the dispatcher hands over an allocation. Then the same request is judged again from its
bytes — every rule as for any create, now, with the admitted units in place of a new
allocation — and made; the engine's answer carries a warning saying it waited.

While it waits it holds its connection, the checked body (at most max_checked_body_bytes) and a
Waiter, nothing parsed; queue.max_per_user bounds how many a user has (docs/gate.md, threat
model). It ends, and nothing is left reserved, when the client goes away (its connection
closes: Ctrl-C), when the entry is cancelled or expires (queue.max_wait), or when ds01d stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from ds01.errors import Ds01Error
from ds01.gate.policy import decide
from ds01.gate.policy.context import Ctx, Plan
from ds01.gate.policy.create import CONFIG_FIELDS
from ds01.gate.policy.gpus import Wait, WaitInLine
from ds01.gate.policy.jsonbody import canonical, parse_object
from ds01.gate.refusal import GateRefusal, from_error
from ds01.services import gatequeue
from ds01.services.gatequeue import Waiter
from ds01.services.queue import QueueService
from ds01.store.allocations import AllocationRow
from ds01.store.queue import EntryState

log = logging.getLogger("ds01d.gate")

# How often a waiting create looks at its entry without being woken (a safety net: cancel,
# expiry and admission wake it at once).
RECHECK_S = 30.0


async def decide_or_wait(
    ctx: Ctx, body: bytes | None, client_gone: Callable[[], Awaitable[bool]]
) -> Plan:
    """decide(), and for a create that must wait for GPUs: wait, then decide again."""
    try:
        return await decide(ctx, body)
    except WaitInLine as w:
        wait = w.wait  # outside the handler, so that the first judgement's frames are freed
    queue = ctx.deps.queue
    assert queue is not None  # gpus.allocate raises WaitInLine only with a queue
    started = time.monotonic()
    row, entry_id = await _wait_in_line(ctx, queue, wait, body, client_gone)
    ctx.admitted = row
    try:
        plan = await decide(ctx, body)
    except BaseException:
        # Judged again and refused (an image removed meanwhile, a mount gone): the units go back.
        await _release(ctx, row, "create_refused")
        raise
    waited = time.monotonic() - started
    return _noting_wait(ctx, queue, plan, entry_id, row, waited)


async def _wait_in_line(
    ctx: Ctx,
    queue: QueueService,
    wait: Wait,
    body: bytes | None,
    client_gone: Callable[[], Awaitable[bool]],
) -> tuple[AllocationRow, int]:
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(woken.set)

    waiter = Waiter(wake)
    queue.waiters.add(waiter)  # before the entry exists: the dispatcher never sees it orphaned
    entry_id: int | None = None
    gone: asyncio.Task[bool] = asyncio.ensure_future(client_gone())
    try:
        name = ctx.req.query_first("name") or None
        try:
            placed = await ctx.run(
                gatequeue.enqueue,
                queue,
                ctx.caller,
                wait.request,
                name=name,
                image=_image(body),
                refusal=wait.refusal,
                waiter=waiter,
            )
        except Ds01Error as err:
            raise from_error("gpu.queue_limit", err) from None
        entry_id = placed.entry.id
        log.info(
            "gate: %s's %s waits in the queue as entry %d", ctx.caller.name, wait.what, entry_id
        )
        while True:
            woken.clear()
            if waiter.row is not None:
                return waiter.row, entry_id
            if waiter.error is not None:
                raise from_error("gpu.queue_ended", waiter.error)
            entry = await ctx.run(gatequeue.current, queue, entry_id)
            if entry is None or entry.state not in (EntryState.QUEUED, EntryState.ADMITTING):
                if waiter.row is not None:  # handed over as we looked
                    return waiter.row, entry_id
                state = entry.state.value if entry is not None else "gone"
                raise GateRefusal(
                    "gpu.queue_ended",
                    f"{wait.what} waited in the queue (entry {entry_id}) and was given up: "
                    f"it was {state}" + (f" ({entry.note})" if entry and entry.note else ""),
                    summary=f"{wait.what} entry={entry_id} {state}",
                )
            woke = asyncio.create_task(woken.wait())
            try:
                await asyncio.wait(
                    {woke, gone}, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woke.cancel()
            if gone.done() and gone.result():
                raise ConnectionResetError("the docker client went away while its create waited")
    except BaseException:
        handed = waiter.leave()
        if handed is not None:
            await _release(ctx, handed, "client_gone")
        elif entry_id is not None:
            with contextlib.suppress(Exception):
                await ctx.run(gatequeue.client_left, queue, entry_id)
        raise
    finally:
        queue.waiters.remove(waiter)
        gone.cancel()
        with contextlib.suppress(BaseException):
            await gone


def _image(body: bytes | None) -> str:
    """The image a create names, for `ds01 queue` (the body was read and judged already)."""
    try:
        top = canonical(parse_object(body or b"", "container create"), CONFIG_FIELDS, "")
        return str(top.get("Image") or "")
    except GateRefusal:
        return ""


async def _release(ctx: Ctx, row: AllocationRow, reason: str) -> None:
    try:
        await ctx.run(ctx.deps.allocations.release_by_daemon, row.id, reason)
    except Exception:
        # Its intent stays open: recovery releases it (services/recovery.py).
        log.exception("gate: releasing allocation %s after a queue wait failed", row.id)


def _noting_wait(
    ctx: Ctx, queue: QueueService, plan: Plan, entry_id: int, row: AllocationRow, waited: float
) -> Plan:
    """The create's plan, whose answer also records the container on the entry and tells the
    client that it waited (a create answer's Warnings, which the docker CLI prints)."""
    after = plan.after
    units = ", ".join(u.uuid for u in row.units)
    note = (
        f"ds01: this container waited {_duration(waited)} in the queue (entry {entry_id}) "
        f"for {units}"
    )

    async def noted(status: int, reply: bytes | None) -> bytes | None:
        replaced = await after(status, reply) if after is not None else None
        out = replaced if replaced is not None else reply
        if status != 201 or not out:
            return replaced
        try:
            data = json.loads(out)
            container_id = str(data.get("Id", ""))
            warnings = data.get("Warnings") or []
            if not isinstance(warnings, list):
                return replaced
        except (ValueError, AttributeError):
            return replaced
        if container_id:
            try:
                await ctx.run(gatequeue.record_container, queue, entry_id, container_id)
            except Exception:
                log.exception("gate: recording the container of queue entry %d failed", entry_id)
        data["Warnings"] = [*warnings, note]
        return json.dumps(data).encode() + b"\n"

    plan.after = noted
    return plan


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
