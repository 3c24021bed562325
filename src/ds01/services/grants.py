"""Bare-metal grants: who, besides the exempt users, may compute on GPUs on the bare host, and
until when (issue 2; BRIEF §2 layer 1).

Owns granting, revoking and expiring grants (one transaction and one event each), the warnings
before a grant ends (`host.grant_warnings`; each at most once, recorded in the database so a
restart neither repeats nor drops one), the host-access file `<run-dir>/host-access` that the
login-path files rendered by `ds01 host apply` read, and — with `host.compute_gate: uvm`, as
root — the membership of the Unix group `ds01-gpu-host`. The daemon calls `tick()` about once a
second: one indexed query while nothing is due.

Must not touch processes: what happens to a user's host GPU processes when their grant ends is
services/hostproc's business, told through `on_ended`. Must not talk to Docker or NVML.

The host-access file (contract with ds01.host): mode 0644, replaced atomically (temp + rename);
'#' lines are comments; every other line is `USER KIND UNTIL`, single spaces, KIND `exempt`
(config exempt_users) or `grant`, UNTIL a unix time in whole seconds, `0` for no expiry. An
exempt user is listed once, as exempt, even while they also hold a grant.
"""

from __future__ import annotations

import grp
import logging
import math
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from ds01.config import Config
from ds01.config.schema import GPU_HOST_GROUP
from ds01.errors import Ds01Error, NotFound, UsageError
from ds01.files import write_atomic
from ds01.host import hostaccess
from ds01.identity import Caller, caller_of_name
from ds01.notify import Notifier
from ds01.scheduler import options
from ds01.services.allocation import AllocationService
from ds01.store import events
from ds01.store import grants as store
from ds01.store.db import Database
from ds01.store.grants import GrantRow
from ds01.timetext import clock, span
from ds01.units import format_duration, parse_duration

log = logging.getLogger("ds01d.grants")

DAEMON = "ds01d"
HOST_GROUP = GPU_HOST_GROUP
HOST_ACCESS_FILE = "host-access"
GROUP_RECHECK_S = 60.0  # heal hand edits of the group this often, even when nothing changed
MAX_REASON = 500

HOST_ACCESS_HEADER = hostaccess.HEADER


def containers_how(request: str = "--gpus 1") -> str:
    """How to get GPU work done in a container; `request` is the GPU request suggested for the
    user's limits (scheduler/options.py suggested(), e.g. '--mig 1g.10gb')."""
    return (
        f"Run GPU work in a container: ds01 container deploy NAME --image IMAGE {request}"
        " (ds01 quota shows what you may use)."
    )


CONTAINERS_HOW = containers_how()


class AccessState(StrEnum):
    EXEMPT = "exempt"
    GRANTED = "granted"
    CONTAINERS_ONLY = "containers_only"


@dataclass(frozen=True)
class AccessEntry:
    """One line of who may compute on the host: an exempt user or a live grant."""

    user: str
    kind: str  # "exempt" | "grant"
    until: float | None  # None: no expiry
    grant: GrantRow | None = None


@dataclass(frozen=True)
class UserAccess:
    user: str
    state: AccessState
    until: float | None
    reason: str | None
    how: str
    grant: GrantRow | None = None


@dataclass
class SyncResult:
    file_changed: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    created_group: bool = False


class GroupCommandFailed(Exception):
    pass


class UnixGroup:
    """The host group through NSS (members) and shadow-utils (groupadd, gpasswd)."""

    def __init__(self, name: str = HOST_GROUP) -> None:
        self.name = name

    def members(self) -> set[str] | None:
        """Supplementary members, or None when the group does not exist."""
        try:
            return set(grp.getgrnam(self.name).gr_mem)
        except KeyError:
            return None

    def _run(self, *argv: str) -> None:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise GroupCommandFailed(f"{argv[0]}: {e}") from e
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip() or f"exit status {r.returncode}"
            raise GroupCommandFailed(f"{' '.join(argv)}: {msg}")

    def create(self) -> None:
        self._run("groupadd", "--system", self.name)

    def add(self, user: str) -> None:
        self._run("gpasswd", "-a", user, self.name)

    def remove(self, user: str) -> None:
        self._run("gpasswd", "-d", user, self.name)


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def render_host_access(entries: list[AccessEntry]) -> str:
    return hostaccess.render(
        hostaccess.Entry(e.user, e.kind, 0 if e.until is None else math.ceil(e.until))
        for e in entries
    )


class GrantService:
    def __init__(
        self,
        db: Database,
        allocations: AllocationService,
        run_dir: Path,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.time,
        group: UnixGroup | None = None,
        manage_group: bool | None = None,
        exists: Callable[[str], bool] = user_exists,
    ) -> None:
        self.db = db
        self.allocations = allocations
        self.run_dir = run_dir
        self.notifier = notifier
        self._clock = clock
        self.group = group or UnixGroup()
        # Group membership is changed only by root (the daemon in production); tests of the
        # service may force it either way.
        self._manage_group = os.geteuid() == 0 if manage_group is None else manage_group
        self._exists = exists
        self.on_ended: list[Callable[[GrantRow, str], None]] = []
        self._lock = threading.RLock()
        self._live: dict[str, GrantRow] = {}
        self._warned: set[tuple[int, int]] = set()
        self._last_text: str | None = None
        self._group_wish: frozenset[str] | None = None
        self._group_checked = 0.0
        self._group_failures: set[tuple[str, str]] = set()
        self._file_failure: str | None = None
        self._not_root_reported = False

    @property
    def config(self) -> Config:
        return self.allocations.config

    @property
    def host_access_path(self) -> Path:
        return self.run_dir / HOST_ACCESS_FILE

    # ---- decisions -------------------------------------------------------------------

    def grant(
        self,
        caller: Caller,
        user: str,
        *,
        duration: str | None,
        permanent: bool,
        reason: str,
    ) -> GrantRow:
        """Give `user` bare-metal GPU access for `duration` (e.g. '4h') or permanently; a live
        grant of theirs is replaced."""
        self.allocations.require_admin(caller, "granting bare-metal GPU access")
        if (duration is None) == (not permanent):
            raise UsageError(
                "give exactly one of --for DURATION or --permanent",
                fix="For example: ds01 admin grant alice --for 4h --reason 'profiling run'.",
            )
        seconds: int | None = None
        if duration is not None:
            try:
                seconds = parse_duration(duration)
            except ValueError as e:
                raise UsageError(f"--for: {e}", fix="Use a duration like 30m, 4h or 2d.") from None
            if seconds < 1:
                raise UsageError("--for: a grant must last at least 1s")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise UsageError(
                f"--reason must be 1 to {MAX_REASON} characters",
                fix="Say why, for the audit log: --reason 'profiling with nsys'.",
            )
        if not hostaccess.valid_user(user) or not self._exists(user):
            raise UsageError(
                f"no user '{user}' on this machine",
                why="The system's user database (getent passwd) does not know that name.",
                fix="Check the spelling with 'getent passwd NAME'.",
            )
        now = self._clock()
        until = None if seconds is None else float(math.ceil(now + seconds))
        with self._lock:
            with self.db.transaction() as conn:
                previous = store.live_for(conn, user)
                if previous is not None:
                    store.end(conn, previous.id, now=now, reason="replaced", by=caller.name)
                grant_id = store.insert(
                    conn, user=user, granted_by=caller.name, reason=reason, now=now, until=until
                )
                lasting = "permanently" if until is None else f"until {clock(until, now)}"
                events.record(
                    conn,
                    kind="grant",
                    action="granted",
                    reason=reason,
                    actor=caller.name,
                    user=user,
                    message=f"bare-metal GPU access {lasting}"
                    + (f" (replaces grant {previous.id})" if previous else ""),
                    details={
                        "grant_id": grant_id,
                        "until": until,
                        "seconds": seconds,
                        "replaces": previous.id if previous else None,
                        "exempt": self.config.is_exempt(user),
                    },
                    ts=now,
                )
                row = store.get(conn, grant_id)
                assert row is not None
            self._live[user] = row
            self.sync_host_access()
        self.notifier.notify(
            user,
            "grant",
            f"{caller.name} granted you bare-metal GPU access {lasting} (reason: {reason}).\n"
            "Start a new login shell for it to take effect; 'ds01 access' shows your state.",
        )
        return row

    def revoke(self, caller: Caller, user: str, reason: str) -> GrantRow:
        """End `user`'s live grant now; their host GPU processes go the way of an expiry."""
        self.allocations.require_admin(caller, "revoking bare-metal GPU access")
        reason = reason.strip() or "revoked"
        now = self._clock()
        with self._lock:
            with self.db.transaction() as conn:
                live = store.live_for(conn, user)
                if live is None:
                    raise NotFound(
                        f"{user} has no live bare-metal grant",
                        fix="See who has one with 'ds01 admin grants'.",
                    )
                store.end(conn, live.id, now=now, reason="revoked", by=caller.name)
                events.record(
                    conn,
                    kind="grant",
                    action="revoked",
                    reason=reason[:MAX_REASON],
                    actor=caller.name,
                    user=user,
                    message=f"grant {live.id} revoked",
                    details={"grant_id": live.id, "until": live.until},
                    ts=now,
                )
                row = store.get(conn, live.id)
                assert row is not None
            self._live.pop(user, None)
            self.sync_host_access()
        self.notifier.notify(
            user,
            "grant_ended",
            f"{caller.name} revoked your bare-metal GPU access (reason: {reason}). "
            + self._after_end_text()
            + "\n"
            + self.how_for(user),
        )
        self._ended(row, "revoked")
        return row

    def _ended(self, row: GrantRow, why: str) -> None:
        for callback in self.on_ended:
            try:
                callback(row, why)
            except Exception:
                log.exception("grant-ended handler failed for %s", row.user)

    def _after_end_text(self, when: str = "") -> str:
        """What becomes of the user's host GPU processes once the grant is over."""
        host = self.config.host
        fate = (
            "reported to the admins"
            if host.grant_expiry == "warn"
            else f"stopped (SIGTERM, then SIGKILL after {format_duration(host.grant_kill_grace)})"
        )
        lead = f"{when}, GPU processes" if when else "GPU processes"
        return f"{lead} you still run on the host will be {fate}."

    # ---- the daemon's pass -----------------------------------------------------------

    def tick(self, *, force_sync: bool = False) -> list[GrantRow]:
        """Expire due grants, send due warnings, keep the file and group in step (`force_sync`:
        rewrite the file and re-read the group, as at daemon start). Returns the grants that
        ended in this pass."""
        ended: list[GrantRow] = []
        with self._lock:
            with self.db.transaction(immediate=False) as conn:
                # The time and the ends in one frame: ClockWatch.check moves the ends inside
                # a transaction, so a time read before this one could be in the old frame.
                now = self._clock()
                live = store.live(conn)
            for g in live:
                if g.until is not None and g.until <= now:
                    row = self._expire(g, now)
                    if row is not None:
                        ended.append(row)
                elif g.until is not None:
                    self._warn_if_due(g, now)
            gone = {g.user for g in ended}
            self._live = {g.user: g for g in live if g.user not in gone}
            self.sync_host_access(force=force_sync)
        for row in ended:
            self.notifier.notify(
                row.user,
                "grant_ended",
                "Your bare-metal GPU access has ended. "
                + self._after_end_text()
                + "\n"
                + self.how_for(row.user),
            )
            self._ended(row, "expired")
        return ended

    def clock_stepped(self, step_s: float) -> None:
        """ClockWatch.on_step: the stored grants moved by step_s; move the cached copies and the
        last group check with them (called from the host-access pass, before tick())."""
        self._live = {
            user: replace(
                g,
                created_at=g.created_at + step_s if g.until is not None else g.created_at,
                until=g.until + step_s if g.until is not None else None,
            )
            for user, g in self._live.items()
        }
        self._group_checked += step_s

    def _expire(self, g: GrantRow, now: float) -> GrantRow | None:
        with self.db.transaction() as conn:
            if not store.end(conn, g.id, now=now, reason="expired", by=DAEMON):
                return None
            events.record(
                conn,
                kind="grant",
                action="expired",
                reason="grant_expired",
                actor=DAEMON,
                user=g.user,
                message=f"grant {g.id} ended (was until {clock(g.until or now, now)})",
                details={
                    "grant_id": g.id,
                    "until": g.until,
                    "late_s": round(now - (g.until or now), 3),
                },
                ts=now,
            )
            return store.get(conn, g.id)

    def _warn_if_due(self, g: GrantRow, now: float) -> None:
        assert g.until is not None
        # A warning applies when its time falls after the grant was made: a 30-minute grant
        # gets the 10-minute warning, not the 1-hour one.
        due = [
            b
            for b in set(self.config.host.grant_warnings)
            if g.until - b <= now and g.until - b > g.created_at and (g.id, b) not in self._warned
        ]
        if not due:
            return
        how = self.how_for(g.user)
        with self.db.transaction() as conn:
            done = store.warnings_done(conn, g.id)
            fresh = sorted(b for b in due if b not in done)
            self._warned.update((g.id, b) for b in done)
            if not fresh:
                return
            # Several due at once (the daemon was down across one): one message, the most
            # urgent, with the real time left; the others are recorded as superseded.
            send = fresh[0]
            remaining = g.until - now
            delivery = self.notifier.notify(
                g.user,
                "grant_warning",
                f"Your bare-metal GPU access ends at {clock(g.until, now)}"
                f" (in {span(remaining)}). " + self._after_end_text("When it ends") + "\n" + how,
            )
            for b in fresh:
                store.mark_warning(conn, g.id, b, now=now, sent=b == send)
            events.record(
                conn,
                kind="grant",
                action="warned",
                reason="grant_ending",
                actor=DAEMON,
                user=g.user,
                message=f"grant {g.id} ends in {span(remaining)}",
                details={
                    "grant_id": g.id,
                    "before_s": send,
                    "superseded": fresh[1:],
                    "remaining_s": round(remaining, 3),
                    "terminals": len(delivery.terminals),
                    "logged": delivery.logged,
                },
                ts=now,
            )
            self._warned.update((g.id, b) for b in fresh)

    # ---- who may compute on the host -------------------------------------------------

    def has_host_access(self, user: str) -> bool:
        """Exempt, or a live grant (from the last pass: no query)."""
        if self.config.is_exempt(user):
            return True
        g = self._live.get(user)
        return g is not None and (g.until is None or g.until > self._clock())

    def live_grant(self, user: str) -> GrantRow | None:
        g = self._live.get(user)
        if g is not None and (g.until is None or g.until > self._clock()):
            return g
        return None

    def access_entries(self) -> list[AccessEntry]:
        """Exempt users (config order), then live grants of users who are not exempt."""
        exempt = list(dict.fromkeys(self.config.exempt_users))
        out = [AccessEntry(u, "exempt", None) for u in exempt]
        now = self._clock()
        with self._lock:
            grants = sorted(self._live.values(), key=lambda g: g.user)
        out += [
            AccessEntry(g.user, "grant", g.until, g)
            for g in grants
            if g.user not in exempt and (g.until is None or g.until > now)
        ]
        return out

    def list_access(self, caller: Caller) -> list[AccessEntry]:
        """For admins: exempt users and every live grant (an exempt user's too)."""
        self.allocations.require_admin(caller, "listing bare-metal access")
        exempt = list(dict.fromkeys(self.config.exempt_users))
        with self.db.transaction(immediate=False) as conn:
            grants = store.live(conn)
        return [AccessEntry(u, "exempt", None) for u in exempt] + [
            AccessEntry(g.user, "grant", g.until, g) for g in grants
        ]

    def how_for(self, user: str) -> str:
        """containers_how with the GPU request suggested for the user's limits (a MIG slice to
        a MIG-only user); the generic text when they cannot be resolved (no account). Reads the
        database: call it outside a transaction."""
        try:
            _, request = self.allocations.offers(caller_of_name(user))
        except Ds01Error:
            return CONTAINERS_HOW
        return containers_how(options.flag(request))

    def access_of(self, user: str) -> UserAccess:
        how = self.how_for(user)
        if self.config.is_exempt(user) or user == "root":
            return UserAccess(
                user,
                AccessState.EXEMPT,
                None,
                None,
                "You may run GPU jobs directly on the host (you are in exempt_users); "
                "containers work too: ds01 container deploy NAME.",
            )
        with self.db.transaction(immediate=False) as conn:
            g = store.live_for(conn, user)
        if g is not None and (g.until is None or g.until > self._clock()):
            until = "with no end" if g.until is None else f"until {clock(g.until, self._clock())}"
            return UserAccess(
                user,
                AccessState.GRANTED,
                g.until,
                g.reason,
                f"You may run GPU jobs directly on the host {until}; start a new login shell "
                "if CUDA_VISIBLE_DEVICES is still empty. "
                + self._after_end_text("When it ends")
                + " "
                + how,
                g,
            )
        return UserAccess(
            user,
            AccessState.CONTAINERS_ONLY,
            None,
            None,
            how + " Host GPU use needs a bare-metal grant: ask a lab admin (ds01 admin grant).",
        )

    # ---- the host-access file and the group ------------------------------------------

    def sync_host_access(self, *, force: bool = False) -> SyncResult:
        """Bring the file (and, with compute_gate uvm, the group) in line with the exempt users
        and live grants. `force` rewrites the file and re-reads the group (daemon start)."""
        with self._lock:
            entries = [e for e in self.access_entries() if self._name_ok(e.user)]
            result = SyncResult()
            self._sync_file(render_host_access(entries), force, result)
            if self.config.host.compute_gate == "uvm":
                self._sync_group(frozenset(e.user for e in entries), force, result)
            if result.file_changed or result.added or result.removed or result.created_group:
                with self.db.transaction() as conn:
                    events.record(
                        conn,
                        kind="host",
                        action="access_updated",
                        reason="grants_or_exemptions_changed",
                        actor=DAEMON,
                        message=", ".join(f"{e.user}:{e.kind}" for e in entries) or "nobody",
                        details={
                            "file": str(self.host_access_path),
                            "file_changed": result.file_changed,
                            "group": HOST_GROUP if self.config.host.compute_gate == "uvm" else None,
                            "group_created": result.created_group,
                            "added": result.added,
                            "removed": result.removed,
                            "users": [e.user for e in entries],
                        },
                    )
            return result

    def _name_ok(self, user: str) -> bool:
        if hostaccess.valid_user(user):
            return True
        log.error("host-access: skipping %r: a user name cannot hold spaces or start with #", user)
        return False

    def _sync_file(self, text: str, force: bool, result: SyncResult) -> None:
        path = self.host_access_path
        if not force and text == self._last_text and path.exists():
            return
        try:
            try:
                on_disk: str | None = path.read_text(encoding="utf-8")
            except (FileNotFoundError, UnicodeDecodeError):
                on_disk = None
            write_atomic(path, text)
        except OSError as e:
            why = f"{e.strerror or e}"
            if why != self._file_failure:
                self._file_failure = why
                log.error("cannot write %s: %s", path, why)
                self._failure_event("access_file_failed", f"cannot write {path}: {why}", {})
            return
        self._file_failure = None
        self._last_text = text
        result.file_changed = on_disk != text

    def _sync_group(self, desired: frozenset[str], force: bool, result: SyncResult) -> None:
        now = self._clock()
        # Act when the wish changed; otherwise re-read the group (healing hand edits, retrying
        # failures) only every GROUP_RECHECK_S.
        if (
            not force
            and desired == self._group_wish
            and now - self._group_checked < GROUP_RECHECK_S
        ):
            return
        self._group_checked = now
        if not self._manage_group:
            if not self._not_root_reported:
                self._not_root_reported = True
                log.error(
                    "compute_gate is uvm but ds01d is not root: %s is not managed", HOST_GROUP
                )
                self._failure_event(
                    "group_sync_failed",
                    f"ds01d is not root and cannot manage the group {HOST_GROUP}",
                    {"op": "all", "user": None},
                )
            return
        if desired != self._group_wish:
            self._group_failures.clear()  # report a failure again once the wish changed
        self._group_wish = desired
        members = self.group.members()
        if members is None:
            try:
                self.group.create()
                result.created_group = True
                members = set()
            except GroupCommandFailed as e:
                self._group_failed("create", None, str(e))
                return
        for user in sorted(desired - members):
            self._group_op("add", user, self.group.add, result.added)
        for user in sorted(members - desired):
            self._group_op("remove", user, self.group.remove, result.removed)

    def _group_op(self, op: str, user: str, fn: Callable[[str], None], done: list[str]) -> None:
        try:
            fn(user)
        except GroupCommandFailed as e:
            self._group_failed(op, user, str(e))
            return
        self._group_failures.discard((op, user))
        done.append(user)

    def _group_failed(self, op: str, user: str | None, why: str) -> None:
        key = (op, user or "")
        if key in self._group_failures:
            return
        self._group_failures.add(key)
        log.error("group %s: %s %s failed: %s", HOST_GROUP, op, user or "", why)
        self._failure_event(
            "group_sync_failed",
            f"cannot {op} {user + ' in ' if user else ''}group {HOST_GROUP}: {why}",
            {"op": op, "user": user, "group": HOST_GROUP},
            user,
        )

    def _failure_event(
        self, action: str, message: str, details: dict[str, object], user: str | None = None
    ) -> None:
        with self.db.transaction() as conn:
            events.record(
                conn,
                kind="host",
                action=action,
                reason="host_sync_failed",
                actor=DAEMON,
                user=user,
                message=message,
                details=details,
            )
