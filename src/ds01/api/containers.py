"""Container endpoints. Docker calls are blocking, so each runs off the event loop; deploy
streams its progress as NDJSON lines ending in a result or an error line — always one of the
two, so a client never sees a deploy stream cut off. A log stream that fails midway (Docker
went away) ends cleanly; its cause goes to the daemon's log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from functools import partial
from typing import Any

from aiohttp import WSMsgType, web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, flag, off_loop, ok, parse_body
from ds01.api.queue import entry_out
from ds01.api.schemas import (
    ContainerAllocationOut,
    ContainerLimitsOut,
    ContainerOut,
    DeployIn,
    KeepAliveIn,
    MountOut,
)
from ds01.errors import Ds01Error, Refusal, RefusalReason, UsageError
from ds01.identity import Caller, require_admin
from ds01.lifecycle.countdown import Outlook
from ds01.listener import RateLimitedLog
from ds01.runtime.engine import ShellSession
from ds01.runtime.shell import Demux
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.containers import ContainerService, ContainerView, DeployRequest

CPU_ONLY_NOTE = "CPU-only container: no GPU is visible inside (NVIDIA_VISIBLE_DEVICES=void)."

log = logging.getLogger("ds01d.api")
_unexpected = RateLimitedLog(log)


# Environment variables whose values `inspect` hides (docs/containers.md, "List, shells and logs").
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
HIDDEN = "***"


def shown_env(env: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The environment with the value of every variable whose name looks secret (it contains
    one of SECRET_WORDS, in any case) replaced by ***."""
    return {k: HIDDEN if any(w in k.upper() for w in SECRET_WORDS) else v for k, v in env}


def container_out(view: ContainerView, outlook: Outlook | None = None) -> ContainerOut:
    i = view.info
    a = view.allocation
    units = [convert.unit_model(u) for u in a.units] if a else []
    return ContainerOut(
        name=i.short_name or i.name,
        docker_name=i.name,
        id=i.id,
        owner=i.owner,
        image=i.image,
        state=i.state,
        created=i.created.isoformat(timespec="seconds") if i.created else None,
        started_at=i.started_at.isoformat(timespec="seconds") if i.started_at else None,
        finished_at=i.finished_at.isoformat(timespec="seconds") if i.finished_at else None,
        exit_code=i.exit_code if i.state in ("exited", "dead") else None,
        gpus=units,
        gpu_device_ids=list(i.gpu_device_ids),
        allocation=ContainerAllocationOut(
            id=a.id,
            state=a.state.value,
            hold_until=convert.iso(a.hold_until),
            expires_at=convert.iso(a.expires_at),
            gpueq=round(float(a.gpueq), 4),
            gpueq_exact=a.gpueq.as_text(),
        )
        if a
        else None,
        note=CPU_ONLY_NOTE if not i.gpu_device_ids else None,
        warnings=list(view.warnings),
        mounts=[
            MountOut(type=m.type, source=m.source, target=m.target, read_only=m.read_only)
            for m in i.mounts
        ],
        limits=ContainerLimitsOut(
            cpus=i.cpus,
            memory_bytes=i.memory_bytes,
            memory_swap_bytes=i.memory_swap_bytes,
            shm_bytes=i.shm_bytes,
            pids=i.pids,
        ),
        env=shown_env(i.env),
        lifecycle=None if outlook is None else convert.lifecycle_out(outlook),
    )


def _allocation_request(
    allocations: AllocationService, caller: Caller, body: DeployIn
) -> AllocationRequest:
    """The body's GPU options; with none, the one request suggested for the caller's limits
    (scheduler/options.py: a whole GPU, or for a user without whole GPUs a MIG slice)."""
    if body.gpus is None and body.mig is None and body.gpueq is None and not body.cpu_only:
        _, suggested = allocations.offers(caller)
        return AllocationRequest.from_options(
            gpus=suggested.count if suggested.kind is RequestKind.GPUS else None,
            mig=suggested.profiles if suggested.kind is RequestKind.MIG else None,
        )
    return AllocationRequest.from_options(
        gpus=body.gpus, mig=body.mig, gpueq=body.gpueq, cpu_only=body.cpu_only, default_gpus=1
    )


def _error_line(err: Ds01Error) -> dict[str, Any]:
    return convert.error_body(err).model_dump()


async def relay_shell(ws: web.WebSocketResponse, session: ShellSession) -> None:
    """Bytes both ways between the WebSocket and the exec's raw socket, then the exit code.

    With a tty, output goes as it comes; without one, each binary message is one byte naming
    the stream (1 stdout, 2 stderr) and then that stream's bytes."""
    loop = asyncio.get_running_loop()
    sock = session.sock
    sock.setblocking(False)
    demux = None if session.tty else Demux()

    async def pump_out() -> None:
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError:
                break
            if not data:
                break
            if demux is None:
                await ws.send_bytes(data)
                continue
            for stream, piece in demux.feed(data):
                await ws.send_bytes(bytes([stream]) + piece)

    out = asyncio.create_task(pump_out())
    inbound = asyncio.create_task(_pump_in(ws, session, loop))
    await asyncio.wait({out, inbound}, return_when=asyncio.FIRST_COMPLETED)
    if not out.done():
        # The user closed their side: give the shell a moment to finish writing.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(out), timeout=2)
    for t in (out, inbound):
        t.cancel()
    code = await off_loop(session.exit_code)
    if not ws.closed:
        await ws.send_str(json.dumps({"exit": code}))
        await ws.close()
    session.close()


async def _pump_in(
    ws: web.WebSocketResponse, session: ShellSession, loop: asyncio.AbstractEventLoop
) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await loop.sock_sendall(session.sock, msg.data)
        elif msg.type == WSMsgType.TEXT:
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict) and "resize" in data:
                r, c = data["resize"]
                await off_loop(session.resize, int(r), int(c))
            elif isinstance(data, dict) and data.get("eof"):
                session.close_input()
        else:
            break


def _service(request: web.Request) -> ContainerService:
    svc = deps_of(request).containers
    assert svc is not None  # the routes are served only with it (api/routes.py: Needs)
    return svc


async def deploy(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, DeployIn)
    service = _service(request)
    caller = caller_of(request)
    req = DeployRequest(
        name=body.name,
        image=body.image,
        allocation=await off_loop(_allocation_request, deps_of(request).allocations, caller, body),
        workspace=body.workspace,
        data=tuple(body.data),
        env=dict(body.env),
        command=tuple(body.command) if body.command else None,
        interactive=body.interactive,
    )
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def progress(text: str) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, {"progress": text})

    queue = deps_of(request).queue if body.queue else None

    def work() -> dict[str, Any]:
        try:
            try:
                view = service.deploy(caller, req, progress)
            except Refusal as refusal:
                # --queue: quota allows, capacity does not → wait in line (issue 16).
                if queue is None or refusal.reason is not RefusalReason.NO_CAPACITY:
                    raise
                placed = queue.enqueue(caller, req, refusal)
                return {"queued": entry_out(queue, caller, placed, queue.now()).model_dump()}
        except Ds01Error as err:
            return _error_line(err)
        except Exception:
            # The stream is already open: an error line, never a cut-off stream.
            _unexpected.log(logging.ERROR, "deploy", "deploy failed", exc_info=True)
            return _error_line(
                Ds01Error(
                    f"deploying '{req.name}' failed inside ds01d (an internal error)",
                    fix="See 'ds01 container list'; tell an admin if it persists (the "
                    "ds01d log has the details).",
                )
            )
        return {"container": container_out(view).model_dump(mode="json")}

    task = asyncio.create_task(off_loop(work))
    task.add_done_callback(lambda _: loop.call_soon_threadsafe(lines.put_nowait, None))
    while (line := await lines.get()) is not None:
        await resp.write(json.dumps(line).encode() + b"\n")
    await resp.write(json.dumps(await task).encode() + b"\n")
    await resp.write_eof()
    return resp


async def _with_outlooks(request: web.Request, views: list[ContainerView]) -> list[ContainerOut]:
    rows = [v.allocation for v in views if v.allocation is not None]
    outlooks = await off_loop(deps_of(request).outlooks, rows) if rows else {}
    return [
        container_out(v, outlooks.get(v.allocation.id) if v.allocation else None) for v in views
    ]


async def list_containers(request: web.Request) -> web.Response:
    views = await off_loop(_service(request).list, caller_of(request), flag(request, "all"))
    return ok(await _with_outlooks(request, views))


async def inspect(request: web.Request) -> web.Response:
    view = await off_loop(_service(request).inspect, caller_of(request), request.match_info["name"])
    return ok((await _with_outlooks(request, [view]))[0])


async def keep_alive(request: web.Request) -> web.Response:
    body = await parse_body(request, KeepAliveIn)
    caller = caller_of(request)
    view = await off_loop(_service(request).inspect, caller, request.match_info["name"])
    await off_loop(deps_of(request).keep_alive, caller, view, body.duration)
    return ok((await _with_outlooks(request, [view]))[0])


async def operate(request: web.Request) -> web.Response:
    service = _service(request)
    op = request.match_info["op"]
    name = request.match_info["name"]
    caller = caller_of(request)
    if op == "retire":
        cid = await off_loop(service.retire, caller, name)
        return ok({"name": name, "id": cid, "retired": True})
    fn = {"start": service.start, "stop": service.stop, "restart": service.restart}[op]
    view = await off_loop(fn, caller, name)
    return ok(container_out(view))


async def logs(request: web.Request) -> web.StreamResponse:
    follow = flag(request, "follow")
    tail_q = request.query.get("tail")
    try:
        tail = int(tail_q) if tail_q else None
    except ValueError:
        raise UsageError("tail must be a number") from None
    chunks = await off_loop(
        _service(request).logs, caller_of(request), request.match_info["name"], follow, tail
    )
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    sentinel = object()
    it = iter(chunks)
    try:
        while True:
            chunk = await off_loop(next, it, sentinel)
            if chunk is sentinel:
                break
            assert isinstance(chunk, bytes)
            await resp.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        close = getattr(chunks, "close", None)
        if close is not None:
            await off_loop(close)
        raise
    except Ds01Error as err:
        # The head is sent: an error answer is no longer possible. End the stream cleanly.
        log.info("a log stream ended early: %s", " | ".join(err.lines()))
    await resp.write_eof()
    return resp


async def shell(request: web.Request) -> web.StreamResponse:
    caller = caller_of(request)
    try:
        rows = int(request.query.get("rows", "24"))
        cols = int(request.query.get("cols", "80"))
    except ValueError:
        raise UsageError("rows and cols must be numbers") from None
    tty = request.query.get("tty", "1") != "0"
    # Refusals (not yours, not running) happen before the upgrade, as plain JSON errors.
    session = await off_loop(
        partial(_service(request).open_shell, tty=tty), caller, request.match_info["name"]
    )
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    if tty:
        await off_loop(session.resize, rows, cols)
    await relay_shell(ws, session)
    return ws


async def exec_command(request: web.Request) -> web.StreamResponse:
    """One command (?cmd=ARG, repeated, in order) without a tty, over a WebSocket: the client's
    input goes to its stdin, its stdout and stderr come back apart (relay_shell), then its
    exit status."""
    cmd = tuple(request.query.getall("cmd", []))
    session = await off_loop(
        _service(request).exec, caller_of(request), request.match_info["name"], cmd
    )
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    await relay_shell(ws, session)
    return ws


async def list_orphans(request: web.Request) -> web.Response:
    deps = deps_of(request)
    require_admin(caller_of(request), deps.allocations.config, "listing orphan containers")
    return ok(deps.orphans())
