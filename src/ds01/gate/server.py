"""The gate's listener and forwarder: <run-dir>/docker.sock speaking the Docker Engine API.

Per client connection: the caller comes from SO_PEERCRED (kernel), never from the request. Each
request head is read whole (bounded in size and time) and checked — endpoint allow-list, then
the endpoint's rule (policy/), which may read a body whole (capped) — before anything is sent to
the engine. Nothing from a connection reaches the engine until its first request has passed.

Forwarding streams: request bodies the rules do not read (build contexts, archives, image
loads) and every response body are copied as they arrive — Content-Length, chunked (chunk by
chunk, so `logs -f`, `events` and `stats` flow live) or until close. When the engine switches
protocols (101 for attach/exec/BuildKit sessions, or an unframed hijacked answer on those
endpoints), the gate becomes a byte pipe in both directions and carries half-closes across:
the client's end of input becomes a write-shutdown towards the engine (so `echo hi | docker run
-i IMG cat` ends), and the engine's end of output a write-shutdown towards the client.

Refusals are answered 403 {"message": …} (refusal.py) and recorded as `gate` audit events;
malformed HTTP is answered 4xx and the connection closed. One connection's trouble (garbage,
slow heads, disconnects) never touches another's: each is its own task with its own limits.
Connections are accepted by ds01.listener, as api.sock's are: counted per uid and in all
(settings.limits), the ones beyond answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ds01.config import Config
from ds01.errors import Ds01Error
from ds01.gate.engine import EngineClient, EngineConn
from ds01.gate.flights import Flights
from ds01.gate.httpio import (
    CRLF,
    READ_CHUNK,
    Headers,
    HttpError,
    PeerClosed,
    Reader,
    RequestHead,
    ResponseHead,
    body_pieces,
    copy_chunked,
    copy_length,
    copy_until_eof,
    open_unix,
    parse_request_head,
    parse_response_head,
    read_body,
    read_chunked,
)
from ds01.gate.policy import decide
from ds01.gate.policy.buildcontext import HOLD_BACK
from ds01.gate.policy.context import BodyCheck, Ctx, GateDeps, Plan
from ds01.gate.policy.endpoints import Body, GateRequest, classify, encode_target
from ds01.gate.policy.filters import ContainerList, fetch_container_list
from ds01.gate.queued import decide_or_wait
from ds01.gate.refusal import GateRefusal, LocalReply, engine_down, response_bytes
from ds01.identity import Caller, CallerCache, is_admin
from ds01.listener import Peer, UnixListener
from ds01.store import events

log = logging.getLogger("ds01d.gate")

HIJACK_GRACE_S = 2.0
AUDIT_RATE_PER_S = 20.0
AUDIT_BURST = 100.0
LINGER_MAX_BYTES = 64 * 1024 * 1024  # a refused request's body the gate reads away


@dataclass
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0


class GateServer:
    def __init__(self, deps: GateDeps, callers: CallerCache) -> None:
        """`callers`: the cache api.sock uses too (one NSS lookup per user for both)."""
        self.deps = deps
        self.callers = callers
        self.settings = deps.settings
        self._listener = UnixListener(
            "gate",
            self.settings.limits,
            self._serve_connection,
            response_bytes(503, "ds01: too many connections to the gate", close=True),
            log,
        )
        self._path: Path | None = None
        self._audit: dict[str, _Bucket] = {}
        self.known_heads = KnownHeads()
        # (engine address, canonical target) → a shared container-list flight.
        self.lists: Flights[tuple[str, str], ContainerList] = Flights(
            lambda key: fetch_container_list(self.deps, key[1])
        )

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self, path: Path, group: str | None) -> None:
        """Listen on `path`, mode 0660, group `group` when it exists (else root only)."""
        tmp = path.with_name(path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(tmp))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        await self._listener.start(sock)
        gid = 0
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                log.warning(
                    "gate: group %r does not exist; %s stays root:root 0660 (only root can use "
                    "it) until it does — create it and restart ds01d",
                    group,
                    path,
                )
        if os.geteuid() == 0:
            os.chown(tmp, 0, gid)
        os.chmod(tmp, 0o660)
        os.replace(tmp, path)  # in place only once its mode and group are right
        self._path = path
        log.info("gate listening on %s (group %s)", path, group if gid else "root")

    async def stop(self) -> None:
        await self._listener.stop(cancel=True)
        await self.lists.close()
        self.deps.engine.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    # ---- connections ------------------------------------------------------------------

    async def _serve_connection(self, conn: socket.socket, peer: Peer) -> None:
        """One admitted connection (the listener counted it against the peer's uid)."""
        try:
            reader, writer = await open_unix(sock=conn, limit=READ_CHUNK * 4)
        except OSError:
            conn.close()
            return
        try:
            try:
                caller = await self.callers.get(peer.pid, peer.uid, peer.gid)
            except Ds01Error as err:
                writer.write(response_bytes(403, "\n".join(err.lines()), close=True))
                with contextlib.suppress(Exception):
                    await writer.drain()
                return
            await _Connection(self, caller, reader, writer).serve()
        except (ConnectionError, PeerClosed, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    # ---- audit ------------------------------------------------------------------------

    async def record_refusal(self, caller: Caller, endpoint: str, ref: GateRefusal) -> None:
        log.info("gate refused %s for %s: %s (%s)", endpoint, caller.name, ref.what, ref.rule)
        now = time.monotonic()
        b = self._audit.setdefault(caller.name, _Bucket(AUDIT_BURST, now))
        b.tokens = min(AUDIT_BURST, b.tokens + (now - b.at) * AUDIT_RATE_PER_S)
        b.at = now
        if b.tokens < 1:
            b.suppressed += 1
            return
        b.tokens -= 1
        suppressed, b.suppressed = b.suppressed, 0
        details: dict[str, object] = {
            "endpoint": endpoint,
            "rule": ref.rule,
            "refusal_reason": ref.reason.value,
            "status": ref.status,
            "summary": ref.summary or ref.what,
            "pid": caller.pid,
        }
        if suppressed:
            details["suppressed_before"] = suppressed

        def write() -> None:
            with self.deps.allocations.db.transaction() as conn:
                events.record(
                    conn,
                    kind="gate",
                    action="refused",
                    reason=ref.rule,
                    actor=caller.name,
                    user=caller.name,
                    message=f"{endpoint}: {ref.what}",
                    details=details,
                )

        try:
            await asyncio.to_thread(write)
        except Exception:
            log.exception("gate: could not record a refusal event")


class _Connection:
    """One client connection: requests one after another, each checked, then forwarded."""

    def __init__(
        self,
        server: GateServer,
        caller: Caller,
        reader: Reader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.settings = server.settings
        self.deps = server.deps
        self.caller = caller
        self.client = reader
        self.cw = writer
        self.up: EngineConn | None = None
        self._admin: tuple[Config, bool] | None = None
        self._idle_since: float | None = None  # loop time the wait for a request began
        self._idle_timer: asyncio.TimerHandle | None = None

    def _watch_idle(self) -> None:
        """The idle timeout, as one timer per connection rather than one per request (arming
        and cancelling a timer for every request was a tenth of the gate's own work per list):
        when it fires, a connection that has waited idle_timeout_s for a request is closed
        (the wait then sees the end of the stream, as with an idle client that hung up);
        otherwise it is set again for when the current wait would reach the limit."""
        loop = asyncio.get_running_loop()
        limit = self.settings.limits.idle_timeout_s
        since = self._idle_since
        now = loop.time()
        if since is not None and now - since >= limit:
            self._idle_timer = None
            self.cw.close()
            return
        self._idle_timer = loop.call_at((now if since is None else since) + limit, self._watch_idle)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._watch_idle()
        try:
            while True:
                try:
                    if not self.client.buf:
                        self._idle_since = loop.time()
                        try:
                            waited = await self.client.wait_data()
                        finally:
                            self._idle_since = None
                        if not waited:
                            return
                    if self.client.head_buffered():
                        # The whole head came with the first bytes (the usual case): nothing
                        # left to wait for, so no head timer to arm (one less per request).
                        raw = await self.client.read_head(self.settings.max_head_bytes)
                    else:
                        async with asyncio.timeout(self.settings.limits.head_timeout_s):
                            raw = await self.client.read_head(self.settings.max_head_bytes)
                except TimeoutError:
                    if self.client.buf:
                        await self._reply(408, "ds01: the request head came too slowly", close=True)
                    return
                if raw is None:
                    return
                known = self.server.known_heads.get(raw)
                if known is not None:
                    head = known[0]
                else:
                    try:
                        head = parse_request_head(raw)
                    except HttpError as err:
                        await self._reply(err.status, f"ds01: {err.message}", close=True)
                        return
                if not await self._one(head, raw, known):
                    return
        except HttpError as err:
            await self._reply(err.status, f"ds01: {err.message}", close=True)
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            if self.up is not None:
                self.deps.engine.release(self.up)  # kept for the next client if still clean

    def _is_admin(self, config: Config) -> bool:
        """is_admin for this connection's caller, worked out once per config (a reload may
        change the admin group, so the answer is kept with the config it came from)."""
        if self._admin is None or self._admin[0] is not config:
            self._admin = (config, is_admin(self.caller, config))
        return self._admin[1]

    async def _reply(
        self, status: int, message: str, *, close: bool, head_only: bool = False
    ) -> None:
        """An answer of the gate's own. To a HEAD request, the head alone (a body there would be
        read as the start of the next response); the message is in the audit event."""
        data = response_bytes(status, message, close=close)
        if head_only:
            data = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        with contextlib.suppress(Exception):
            self.cw.write(data)
            await self.cw.drain()

    # ---- one request ------------------------------------------------------------------

    async def _one(
        self,
        head: RequestHead,
        raw: bytes,
        known: tuple[RequestHead, dict[bool, GateRequest]] | None,
    ) -> bool:
        """Check and forward one request; False when the connection must end. `known`: what
        the same head bytes were read as before (KnownHeads)."""
        body_unread = head.has_body
        config = self.deps.config()
        endpoint = f"{head.method} {head.target.split('?', 1)[0]}"
        try:
            admin = self._is_admin(config)
            req = known[1].get(admin) if known is not None else None
            if req is None:
                req = classify(head, admin)
                _early_checks(head, req)
                self.server.known_heads.learn(raw, head, admin, req)
            endpoint = req.endpoint
            body: bytes | None = None
            if req.route.body is Body.CHECKED or (req.route.body is Body.NONE and head.has_body):
                body = await self._read_checked_body(head)
                body_unread = False
            if req.route.body is Body.NONE and body is not None:
                _no_body(req, body)
            ctx = Ctx(self.deps, self.caller, req, config, admin)
            if req.name == "containers.create":
                # May wait in ds01's queue for GPUs, holding this request open (gate.queue).
                plan = await decide_or_wait(ctx, body, self._client_gone)
            else:
                plan = await decide(ctx, body)
            if req.route.body is Body.NONE and body is not None:
                plan.body = b""  # read (and found empty) here: forward none
        except GateRefusal as ref:
            await self.server.record_refusal(self.caller, endpoint, ref)
            status, message = ref.status, ref.message
        except LocalReply as lr:
            status, message = lr.status, lr.message
        except Ds01Error as err:  # the state database, a user lookup: not the caller's doing
            log.error("gate: %s failed: %s", endpoint, " | ".join(err.lines()))
            status, message = 503, "ds01: " + "\n".join(err.lines())
        else:
            if plan.shared_list_owner is not None:
                return await self._shared_list(head, req, plan, plan.shared_list_owner)
            return await self._forward(head, req, plan)
        # Refused before the body was read: read it away (bounded), so that the client, still
        # sending, gets to read the answer; then the connection can even go on.
        if body_unread:
            body_unread = not await self._discard_body(head)
        close = body_unread or not head.keep_alive
        await self._reply(status, message, close=close, head_only=head.method == "HEAD")
        return not close

    async def _discard_body(self, head: RequestHead) -> bool:
        """Read and drop an unread request body; False when it could not be done in bounds."""
        if _expects_continue(head):
            return False  # the client waits for 100 Continue: it has sent nothing
        try:
            async with asyncio.timeout(self.settings.limits.body_timeout_s):
                if head.chunked:
                    await read_chunked(self.client, LINGER_MAX_BYTES)
                    return True
                n = head.content_length or 0
                if n > LINGER_MAX_BYTES:
                    return False
                while n > 0:
                    data = await self.client.read_some(min(n, READ_CHUNK))
                    if not data:
                        return False
                    n -= len(data)
                return True
        except (TimeoutError, HttpError, PeerClosed):
            return False

    async def _read_checked_body(self, head: RequestHead) -> bytes:
        limit = self.settings.max_checked_body_bytes
        if head.content_length is not None and head.content_length > limit:
            raise GateRefusal(
                "body.too_large",
                f"a {head.content_length}-byte body was refused (the limit is {limit} bytes)",
            )
        if _expects_continue(head):
            self.cw.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self.cw.drain()
        try:
            async with asyncio.timeout(self.settings.limits.body_timeout_s):
                if head.chunked:
                    return await read_chunked(self.client, limit)
                return await self.client.read_exact(head.content_length or 0)
        except TimeoutError:
            raise HttpError(408, "the request body came too slowly") from None
        except HttpError as err:
            if err.status == 413:
                raise GateRefusal(
                    "body.too_large", f"a body over {limit} bytes was refused"
                ) from None
            raise

    async def _shared_list(
        self, head: RequestHead, req: GateRequest, plan: Plan, owner: str
    ) -> bool:
        """A container list answered from a flight that started after this request arrived
        (flights.py), narrowed to `owner`'s containers; the client's headers never reach the
        engine (the flight's request is the gate's own)."""
        same = plan.path == req.path and plan.query == req.query
        target = req.target if same else encode_target(req.version, plan.path, plan.query)
        key = (self.deps.config().docker.host, target)
        try:
            answer = await self.server.lists.get(key)
        except LocalReply as lr:
            await self._reply(lr.status, lr.message, close=True)
            return False
        except Ds01Error as err:  # the state database: not the caller's doing
            log.error("gate: %s failed: %s", req.endpoint, " | ".join(err.lines()))
            await self._reply(503, "ds01: " + "\n".join(err.lines()), close=True)
            return False
        self.cw.write(answer.for_owner(owner))
        await self.cw.drain()
        return head.keep_alive

    async def _upstream(self) -> EngineConn:
        if self.up is not None and self.up.reusable:
            return self.up
        if self.up is not None:
            self.up.close()
        self.up = await self.deps.engine.acquire()
        return self.up

    async def _forward(self, head: RequestHead, req: GateRequest, plan: Plan) -> bool:
        try:
            up = await self._upstream()
        except LocalReply as lr:
            if plan.on_abort is not None:
                await plan.on_abort()
            await self._reply(lr.status, lr.message, close=True)
            return False
        headers = Headers(list(head.headers.items))
        headers.remove("Content-Length", "Transfer-Encoding", "Expect")
        stream_body = plan.body is None and head.has_body
        if plan.body is not None:
            headers.put("Content-Length", str(len(plan.body)))
        elif head.chunked:
            headers.put("Transfer-Encoding", "chunked")
        elif head.content_length is not None:
            headers.put("Content-Length", str(head.content_length))
        target = encode_target(req.version, plan.path, plan.query)
        sender: asyncio.Task[None] | None = None
        answered = False
        up.usable = False  # in flight: reusable again only once the exchange is complete
        try:
            up.writer.write(head.encode(target, headers))
            if plan.body is not None:
                up.writer.write(plan.body)
            await up.writer.drain()
            if stream_body:
                if _expects_continue(head):
                    self.cw.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if plan.body_check is not None:
                    sender = asyncio.create_task(self._send_checked_body(head, up, plan.body_check))
                    refusal = await self._refused_while_sending(up, sender)
                    if refusal is not None:
                        up.close()
                        await self.server.record_refusal(self.caller, req.endpoint, refusal)
                        await self._reply(refusal.status, refusal.message, close=True)
                        return False
                else:
                    sender = asyncio.create_task(self._send_body(head, up))
            rhead = await self._response_head(up, head.method)
            answered = True
            return await self._respond(head, req, plan, up, rhead, sender)
        except (OSError, PeerClosed, HttpError, TimeoutError) as exc:
            up.close()
            if not answered:
                if plan.on_abort is not None:
                    await plan.on_abort()
                down = engine_down(f"{type(exc).__name__}: {exc}")
                await self._reply(down.status, down.message, close=True)
            return False
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                up.close()

    async def _refused_while_sending(
        self, up: EngineConn, sender: asyncio.Task[None]
    ) -> GateRefusal | None:
        """Wait until the engine starts answering or the checked body is refused, whichever
        comes first (the engine cannot answer before it has the whole body)."""
        answer = asyncio.create_task(up.reader.fill())
        try:
            await asyncio.wait({sender, answer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answer.done():
                answer.cancel()
                with contextlib.suppress(BaseException):
                    await answer
        if not sender.done():
            return None
        failure = sender.exception()
        if isinstance(failure, GateRefusal):
            return failure
        if failure is not None:
            raise PeerClosed(f"the request body could not be forwarded: {failure!r}")
        return None

    async def _send_checked_body(self, head: RequestHead, up: EngineConn, check: BodyCheck) -> None:
        """Forward the body as it comes, all but its last HOLD_BACK bytes, which go only once
        `check` has passed; refused, the engine never gets the rest (and never acts)."""
        pending = bytearray()

        def send(data: bytes) -> None:
            if data:
                up.writer.write(b"%x\r\n" % len(data) + data + CRLF if head.chunked else data)

        pieces = body_pieces(self.client, chunked=head.chunked, length=head.content_length)
        async for data in pieces:
            try:
                check.feed(data)
            except GateRefusal:
                # Read the rest away (bounded) before answering: a client still writing its
                # body would otherwise see a broken pipe instead of the refusal.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.settings.limits.body_timeout_s):
                        left = LINGER_MAX_BYTES
                        async for rest in pieces:
                            left -= len(rest)
                            if left < 0:
                                break
                raise
            pending += data
            if len(pending) > HOLD_BACK:
                send(bytes(pending[:-HOLD_BACK]))
                del pending[:-HOLD_BACK]
                await up.writer.drain()
        await check.finish()
        send(bytes(pending))
        if head.chunked:
            up.writer.write(b"0\r\n\r\n")
        await up.writer.drain()

    async def _send_body(self, head: RequestHead, up: EngineConn) -> None:
        if head.chunked:
            await copy_chunked(self.client, up.writer, canonical=True)
        else:
            await copy_length(self.client, up.writer, head.content_length or 0)

    async def _response_head(self, up: EngineConn, method: str) -> ResponseHead:
        while True:
            raw = await up.reader.read_head(256 * 1024)
            if raw is None:
                raise PeerClosed("the engine closed the connection without answering")
            rhead = parse_response_head(raw)
            if 100 <= rhead.status < 200 and rhead.status != 101:
                continue  # 100 Continue and friends: the gate answered those itself
            return rhead

    async def _respond(
        self,
        head: RequestHead,
        req: GateRequest,
        plan: Plan,
        up: EngineConn,
        rhead: ResponseHead,
        sender: asyncio.Task[None] | None,
    ) -> bool:
        if plan.response_headers:
            rhead = _with_headers(rhead, plan.response_headers)
        framing, length = rhead.framing(head.method)
        if rhead.status == 101 or (framing == "close" and req.route.hijack and rhead.status < 300):
            if not req.route.hijack:
                up.close()
                return False
            await _after(plan, rhead.status, None)
            self.cw.write(rhead.raw)
            await self.cw.drain()
            if sender is not None:
                await sender
            await self._pipe(up)
            return False
        if plan.capture_response:
            data = await read_body(
                up.reader, framing, length, self.deps.settings.max_engine_reply_bytes
            )
            try:
                replaced = await _after(plan, rhead.status, data)
            except GateRefusal as ref:
                # The hook judged what the engine stored and undid it (create, update).
                await self.server.record_refusal(self.caller, req.endpoint, ref)
                self.cw.write(response_bytes(ref.status, ref.message, close=not head.keep_alive))
                await self.cw.drain()
            else:
                out = replaced if replaced is not None else data
                h = Headers(list(rhead.headers.items))
                h.remove("Content-Length", "Transfer-Encoding")
                if framing != "none" or replaced is not None:
                    h.put("Content-Length", str(len(out)))
                if framing == "close":
                    h.put("Connection", "close")
                line = rhead.raw.split(b"\r\n", 1)[0] + b"\r\n"
                self.cw.write(line + h.encode() + b"\r\n" + (out if framing != "none" else b""))
                await self.cw.drain()
        else:
            await _after(plan, rhead.status, None)
            ended = False

            async def end() -> None:
                nonlocal ended
                ended = True
                await _finished(plan, rhead.status)

            try:
                await self._copy_response(head, up, rhead, sender, plan, end)
            finally:
                if not ended:
                    await end()
        if sender is not None:
            if not sender.done():
                return False  # the engine answered before reading the body: start afresh
            if sender.exception() is not None:
                return False
        if framing == "close" or not rhead.keep_alive:
            up.close()
            return False
        up.usable = True
        return head.keep_alive

    async def _copy_response(
        self,
        head: RequestHead,
        up: EngineConn,
        rhead: ResponseHead,
        sender: asyncio.Task[None] | None,
        plan: Plan,
        end: Callable[[], Awaitable[None]],
    ) -> None:
        """Forward the engine's answer as it comes; a plan's tap sees every byte on the way.
        `end` runs before a chunked answer's last chunk goes out, so that what it records (a
        build's image, a pull's tags) is in the books before the client learns it is done."""
        framing, length = rhead.framing(head.method)
        cw = self.cw if plan.tap is None else cast(asyncio.StreamWriter, _Tap(self.cw, plan.tap))
        if framing == "length" and len(up.reader.buf) >= length:
            # The whole (small) body is here already: one write, one system call.
            cw.write(rhead.raw + await up.reader.read_exact(length))
        elif framing == "length":
            cw.write(rhead.raw)
            await copy_length(up.reader, cw, length)
        else:
            cw.write(rhead.raw)
            if framing == "chunked" and plan.line_filter is not None:
                copy = self._filtered_lines(up, plan.line_filter)
            elif framing == "chunked":
                copy = copy_chunked(up.reader, cw, canonical=False, before_end=end)
            elif framing == "close":
                copy = copy_until_eof(up.reader, cw)
            else:
                copy = None
            if copy is not None:
                idle_client = head.method == "GET" and (sender is None or sender.done())
                await self._stream(copy, up, watch_client=idle_client)
        await cw.drain()

    async def _filtered_lines(
        self, up: EngineConn, keep: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        """Copy a chunked answer of JSON lines (events), each line only if `keep` says so."""
        pending = b""

        async def send(lines: list[bytes]) -> None:
            kept = [line + b"\n" for line in lines if line.strip() and await keep(line)]
            if kept:
                data = b"".join(kept)
                self.cw.write(b"%x\r\n" % len(data) + data + CRLF)
                await self.cw.drain()

        async for data in body_pieces(up.reader, chunked=True):
            *lines, pending = (pending + data).split(b"\n")
            await send(lines)
        await send([pending])
        self.cw.write(b"0\r\n\r\n")
        await self.cw.drain()

    async def _stream(
        self, copy: Coroutine[Any, Any, None], up: EngineConn, *, watch_client: bool
    ) -> None:
        """Run a response copy that may last (events, logs -f, stats). With watch_client, a
        client that goes away ends it at once rather than at the engine's next message."""
        task = asyncio.create_task(copy)
        if not watch_client:
            await task
            return
        watch = asyncio.create_task(self._client_gone())
        try:
            done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done and watch.result():
                up.close()
                raise ConnectionResetError("the client went away during a streamed response")
            await task
        finally:
            for t in (task, watch):
                if not t.done():
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await t

    async def _client_gone(self) -> bool:
        """True when the client closes its end; False (stop watching) when it sends more than
        a request head's worth meanwhile, or never."""
        while len(self.client.buf) <= self.settings.max_head_bytes:
            if not await self.client.fill():
                return True
        await asyncio.Event().wait()  # never: the copy decides
        return False

    # ---- hijacked streams -------------------------------------------------------------

    async def _pipe(self, up: EngineConn) -> None:
        """Bytes both ways until both sides are done, carrying half-closes across."""
        client, cw = self.client, self.cw

        async def to_engine() -> None:
            pending = client.take_buffered()
            if pending:
                up.writer.write(pending)
            while data := await client.read_some(READ_CHUNK):
                up.writer.write(data)
                await up.writer.drain()
            await up.writer.drain()
            if up.writer.can_write_eof():
                up.writer.write_eof()

        async def to_client() -> None:
            pending = up.reader.take_buffered()
            if pending:
                cw.write(pending)
            while data := await up.reader.read_some(READ_CHUNK):
                cw.write(data)
                await cw.drain()
            await cw.drain()
            if cw.can_write_eof():
                cw.write_eof()

        t_in = asyncio.create_task(to_engine())
        t_out = asyncio.create_task(to_client())
        try:
            done, _ = await asyncio.wait({t_in, t_out}, return_when=asyncio.FIRST_COMPLETED)
            if t_in in done and t_in.exception() is None and not t_out.done():
                await asyncio.wait({t_out})  # input ended: the output may go on (half-close)
            elif not t_out.done():
                await asyncio.wait({t_out}, timeout=0)
            if t_out.done() and not t_in.done():
                await asyncio.wait({t_in}, timeout=HIJACK_GRACE_S)
        finally:
            for t in (t_in, t_out):
                if not t.done():
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await t
            up.close()


class KnownHeads:
    """Container-list request heads already read and recognised, by their exact bytes: a
    client listing in a loop sends the same head again and again, and reading it (parse,
    allow-list, header rules) was a fifth of the gate's own work per list.

    Only what is a pure function of the bytes is kept — the parsed head and, per admin-ness of
    the caller, the recognised request; the rule (own_only), which depends on the caller, runs
    for every request. Only bodiless GET /containers/json heads of at most MAX_HEAD bytes that
    passed the header rules are kept, at most MAX_ENTRIES (then it starts afresh): a stranger
    head costs a lookup, never a wrong reading. The objects are shared between connections and
    only ever read."""

    MAX_HEAD = 2048
    MAX_ENTRIES = 256

    def __init__(self) -> None:
        self._heads: dict[bytes, tuple[RequestHead, dict[bool, GateRequest]]] = {}

    def get(self, raw: bytes) -> tuple[RequestHead, dict[bool, GateRequest]] | None:
        return self._heads.get(raw)

    def learn(self, raw: bytes, head: RequestHead, admin: bool, req: GateRequest) -> None:
        if req.name != "containers.list" or head.has_body or len(raw) > self.MAX_HEAD:
            return
        entry = self._heads.get(raw)
        if entry is None:
            if len(self._heads) >= self.MAX_ENTRIES:
                self._heads.clear()
            entry = self._heads[raw] = (head, {})
        entry[1][admin] = req


async def _after(plan: Plan, status: int, body: bytes | None) -> bytes | None:
    """Run the plan's hook on the engine's answer. A failing hook (the database) must not cost
    the client its answer: the engine has acted already, and reconcile repairs the books. A
    GateRefusal from a capturing hook is a verdict on what the engine stored (and undid)."""
    if plan.after is None:
        return None
    try:
        return await plan.after(status, body)
    except GateRefusal:
        raise  # a verdict on what the engine stored: the caller answers it
    except Exception:
        log.exception("gate: bookkeeping after the engine's answer (%d) failed", status)
        return None


async def _finished(plan: Plan, status: int) -> None:
    """Run the plan's end-of-stream hook (what a build or pull made, now that it is made)."""
    if plan.finished is None:
        return
    try:
        await plan.finished(status)
    except Exception:
        log.exception("gate: bookkeeping after the engine's streamed answer failed")


class _Tap:
    """The client's writer, showing every byte written to a plan's observer first (the image
    ID a build reports at its end)."""

    def __init__(self, writer: asyncio.StreamWriter, observe: Callable[[bytes], None]) -> None:
        self.writer = writer
        self.observe = observe

    def write(self, data: bytes) -> None:
        self.observe(data)
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()


def _with_headers(rhead: ResponseHead, replace: dict[str, str]) -> ResponseHead:
    """The engine's response head with some headers replaced (Builder-Version on _ping)."""
    h = Headers(list(rhead.headers.items))
    for name, value in replace.items():
        h.put(name, value)
    line = rhead.raw.split(b"\r\n", 1)[0] + b"\r\n"
    return ResponseHead(line + h.encode() + b"\r\n", rhead.status, rhead.minor, h)


_EMPTY_BODIES = (b"", b"{}", b"null")


def _no_body(req: GateRequest, body: bytes) -> None:
    """An endpoint that takes no body gets none: SDKs send nothing, `{}` or `null`."""
    if body.strip().replace(b" ", b"") not in _EMPTY_BODIES:
        raise GateRefusal(
            "body.not_allowed",
            f"{req.endpoint} with a request body was refused",
            summary=f"{req.endpoint} body={body[:120]!r}",
        )


def _expects_continue(head: RequestHead) -> bool:
    return (head.headers.get("Expect") or "").strip().lower() == "100-continue"


def _early_checks(head: RequestHead, req: GateRequest) -> None:
    """Header rules that hold for every endpoint."""
    ctype = (head.headers.get("Content-Type") or "").lower()
    if "x-www-form-urlencoded" in ctype or "multipart/form-data" in ctype:
        raise GateRefusal(
            "request.form_body", f"{req.endpoint} with a {ctype.split(';')[0]} body was refused"
        )
    if head.upgrade is not None and not req.route.hijack:
        raise GateRefusal("request.upgrade", f"{req.endpoint} with Connection: Upgrade was refused")
    expect = head.headers.get("Expect")
    if expect is not None and expect.strip().lower() != "100-continue":
        raise HttpError(417, f"Expect: {expect} is not supported")
    encoding = (head.headers.get("Content-Encoding") or "identity").strip().lower()
    if req.route.body is not Body.STREAM and encoding != "identity":
        raise GateRefusal(
            "body.unparsable", f"{req.endpoint} with Content-Encoding {encoding} was refused"
        )


__all__ = ["EngineClient", "GateDeps", "GateServer"]
