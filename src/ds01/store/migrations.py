"""Versioned schema migrations, each applied in the same transaction as the record that it ran.

Append new migrations to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from ds01.errors import StateError


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: executescript() would COMMIT the caller's transaction."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise StateError(f"incomplete statement in migration: {buf.strip()[:80]}")


def _v1_initial(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE units (
            uuid TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('gpu', 'mig')),
            gpu_uuid TEXT NOT NULL,
            gpu_index INTEGER NOT NULL,
            model TEXT NOT NULL,
            memory_total_mib INTEGER,
            gpueq TEXT NOT NULL,              -- exact fraction, e.g. '3/7'
            profile TEXT,
            gpu_instance_id INTEGER,
            compute_instance_id INTEGER,
            numa_node INTEGER,
            nvlink_group TEXT,
            gone INTEGER NOT NULL DEFAULT 0 CHECK (gone IN (0, 1)),
            drained INTEGER NOT NULL DEFAULT 0 CHECK (drained IN (0, 1)),
            drain_reason TEXT,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            last_released_at REAL
        );

        CREATE TABLE allocations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            uid INTEGER,
            grp TEXT,
            container TEXT,
            container_id TEXT,
            state TEXT NOT NULL
                CHECK (state IN ('reserved', 'active', 'held', 'released')),
            request TEXT NOT NULL,            -- the request as JSON, for re-allocation
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL,                  -- reservation expiry (reserved only)
            hold_until REAL,                  -- held only
            released_at REAL,
            release_reason TEXT
        );
        CREATE INDEX allocations_live ON allocations (state) WHERE state != 'released';
        CREATE INDEX allocations_user ON allocations (user, state);

        CREATE TABLE allocation_units (
            allocation_id INTEGER NOT NULL REFERENCES allocations (id),
            unit_uuid TEXT NOT NULL REFERENCES units (uuid),
            live INTEGER NOT NULL DEFAULT 1 CHECK (live IN (0, 1)),
            PRIMARY KEY (allocation_id, unit_uuid)
        );
        -- The rule that makes double allocation impossible by construction (BRIEF §3):
        -- a unit appears in at most one live allocation.
        CREATE UNIQUE INDEX one_live_allocation_per_unit
            ON allocation_units (unit_uuid) WHERE live = 1;

        -- Releasing an allocation frees its units in the same statement's transaction.
        CREATE TRIGGER release_frees_units AFTER UPDATE OF state ON allocations
        WHEN NEW.state = 'released' AND OLD.state != 'released'
        BEGIN
            UPDATE allocation_units SET live = 0 WHERE allocation_id = NEW.id;
            UPDATE units SET last_released_at = NEW.released_at
                WHERE uuid IN (SELECT unit_uuid FROM allocation_units
                               WHERE allocation_id = NEW.id);
        END;

        -- A released allocation stays released.
        CREATE TRIGGER released_is_final BEFORE UPDATE OF state ON allocations
        WHEN OLD.state = 'released' AND NEW.state != 'released'
        BEGIN
            SELECT RAISE(ABORT, 'released allocations cannot change state');
        END;

        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,               -- alloc, container, unit, admin, daemon, gate
            action TEXT NOT NULL,             -- e.g. reserved, activated, released, refused
            actor TEXT,                       -- who caused it ('ds01d' for the daemon)
            user TEXT,                        -- whose resource it concerns
            allocation_id INTEGER,
            reason TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            details TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_ts ON events (ts);
        CREATE INDEX events_user_ts ON events (user, ts);
        """,
    )


def _v2_grants(conn: sqlite3.Connection) -> None:
    """Bare-metal grants, the warnings sent for them, and host GPU processes already reported."""
    _run_script(
        conn,
        """
        CREATE TABLE grants (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            granted_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at REAL NOT NULL,
            until REAL,                       -- NULL: permanent
            ended_at REAL,                    -- NULL while the grant is live
            end_reason TEXT CHECK (end_reason IN ('expired', 'revoked', 'replaced')),
            ended_by TEXT,
            CHECK ((ended_at IS NULL) = (end_reason IS NULL))
        );
        -- At most one live grant per user; the expiry pass reads live grants through it.
        CREATE UNIQUE INDEX one_live_grant_per_user ON grants (user) WHERE ended_at IS NULL;

        -- A grant's warning (N seconds before its end) is delivered at most once, across
        -- restarts. sent = 0: it fell due together with a later one, which was sent instead.
        CREATE TABLE grant_warnings (
            grant_id INTEGER NOT NULL REFERENCES grants (id),
            before_s INTEGER NOT NULL,
            done_at REAL NOT NULL,
            sent INTEGER NOT NULL CHECK (sent IN (0, 1)),
            PRIMARY KEY (grant_id, before_s)
        );

        -- Host GPU processes already reported, so a restart does not report them again.
        -- (boot_id, pid, started) names one process: pids are reused, start times are not.
        CREATE TABLE host_process_reports (
            boot_id TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started INTEGER NOT NULL,         -- /proc/PID/stat starttime (ticks since boot)
            uid INTEGER,
            user TEXT,
            cause TEXT NOT NULL,              -- no_grant | grant_ended
            reported_at REAL NOT NULL,
            PRIMARY KEY (boot_id, pid, started)
        );
        """,
    )


def _v3_objects(conn: sqlite3.Connection) -> None:
    """Owner records of engine objects (store/objects.py). Containers already bound to an
    allocation are adopted from the allocation's user: the database, not a label, says whose
    they are."""
    _run_script(
        conn,
        """
        CREATE TABLE objects (
            kind TEXT NOT NULL CHECK (kind IN ('container', 'volume', 'network', 'tag', 'image')),
            key TEXT NOT NULL,
            owner TEXT NOT NULL,
            origin TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (kind, key)
        );
        CREATE INDEX objects_owner ON objects (kind, owner);
        INSERT OR IGNORE INTO objects (kind, key, owner, origin, created_at)
            SELECT 'container', container_id, user, 'adopted', created_at FROM allocations
            WHERE container_id IS NOT NULL;
        """,
    )


def _v4_intents(conn: sqlite3.Connection) -> None:
    """Intent records of multi-step container operations (store/intents.py): written in the
    transaction that reserves the units, deleted in the one that activates or releases them."""
    _run_script(
        conn,
        """
        CREATE TABLE intents (
            allocation_id INTEGER PRIMARY KEY REFERENCES allocations (id),
            op TEXT NOT NULL CHECK (op IN ('deploy', 'start', 'recreate', 'create')),
            user TEXT NOT NULL,
            docker_name TEXT,                 -- deploy: its container; recreate: the old one
            container_id TEXT,                -- start, recreate: the container acted on
            new_name TEXT,                    -- recreate: the new container's name until renamed
            process TEXT NOT NULL,            -- the ds01d process working on it (intents.PROCESS)
            created_at REAL NOT NULL
        );
        """,
    )


def _v5_events_by_allocation(conn: sqlite3.Connection) -> None:
    """The state invariant check (store/consistency.py) reads each live allocation's newest
    event."""
    _run_script(conn, "CREATE INDEX events_allocation ON events (allocation_id, id);")


def _v6_lifecycle(conn: sqlite3.Connection) -> None:
    """Idle and runtime countdowns (issue 15; store/activity.py): one activity record per
    active allocation, and the warnings each countdown has dealt with, so a restart of ds01d
    resumes every countdown where it was."""
    _run_script(
        conn,
        """
        CREATE TABLE lifecycle_activity (
            allocation_id INTEGER PRIMARY KEY REFERENCES allocations (id),
            active_since REAL NOT NULL,       -- the activation followed (allocations.updated_at)
            runtime_from REAL NOT NULL,       -- max_runtime counts from here
            idle_run INTEGER NOT NULL DEFAULT 0,
            idle_since REAL,                  -- the first sample of the idle run; NULL: not idle
            last_sample REAL,                 -- taken_at of the sample judged last
            recent TEXT NOT NULL DEFAULT '[]' -- newest verdicts, bounded: [[ts, active, signal]]
        );
        CREATE TABLE lifecycle_warnings (
            allocation_id INTEGER NOT NULL REFERENCES allocations (id),
            countdown TEXT NOT NULL CHECK (countdown IN ('idle', 'runtime')),
            stage TEXT NOT NULL,              -- '50%', '80%', 'warn_before'
            deadline REAL NOT NULL,           -- the stop time it announced
            done_at REAL NOT NULL,
            sent INTEGER NOT NULL CHECK (sent IN (0, 1)),
            PRIMARY KEY (allocation_id, countdown, stage)
        );
        """,
    )


def _v8_keepalive(conn: sqlite3.Connection) -> None:
    """`ds01 container keep-alive` (issue 15 item 4; store/activity.py): until when an
    allocation's idle countdown is held off, who asked and why."""
    _run_script(
        conn,
        """
        CREATE TABLE lifecycle_keepalive (
            allocation_id INTEGER PRIMARY KEY REFERENCES allocations (id),
            until REAL NOT NULL,
            set_by TEXT NOT NULL,
            set_at REAL NOT NULL
        );
        """,
    )


def _v9_exemptions(conn: sqlite3.Connection) -> None:
    """`ds01 admin exempt` (issue 15 item 4; store/activity.py): a user's allocations kept from
    the idle or the runtime countdown until a time, with who decided and why."""
    _run_script(
        conn,
        """
        CREATE TABLE lifecycle_exemptions (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            countdown TEXT NOT NULL CHECK (countdown IN ('idle', 'runtime')),
            until REAL NOT NULL,
            reason TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            ended_at REAL,                    -- ended before `until` by an admin; NULL: not
            ended_by TEXT
        );
        CREATE INDEX lifecycle_exemptions_live ON lifecycle_exemptions (ended_at, until);
        """,
    )


def _v10_capacity_refusals(conn: sqlite3.Connection) -> None:
    """The lifecycle asks at every pass when a GPU request was last refused for lack of
    capacity (demand-aware idle timeouts): a partial index answers without a scan."""
    _run_script(
        conn,
        "CREATE INDEX events_no_capacity ON events (ts) WHERE kind = 'alloc'"
        " AND action = 'refused' AND reason = 'no_capacity';",
    )


def _v11_banners(conn: sqlite3.Connection) -> None:
    """Banner notices waiting for each user's next `ds01` command (issue 15 item 6;
    store/banners.py)."""
    _run_script(
        conn,
        """
        CREATE TABLE banners (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            topic TEXT NOT NULL,
            message TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX banners_user ON banners (user, id);
        CREATE INDEX banners_age ON banners (created_at);
        """,
    )


def _v12_queue(conn: sqlite3.Connection) -> None:
    """Deploy requests waiting for capacity (issue 16; store/queue.py). One waiting entry per
    user and container name, by a partial unique index: a request cannot be queued twice."""
    _run_script(
        conn,
        """
        CREATE TABLE queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            grp TEXT,
            name TEXT NOT NULL,               -- the container's short name
            request TEXT NOT NULL,            -- the deploy request, JSON
            size REAL NOT NULL,               -- units asked for (priority's size factor)
            state TEXT NOT NULL
                CHECK (state IN ('queued', 'admitting', 'admitted', 'cancelled', 'expired',
                                 'failed')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            note TEXT,                        -- why it waits, or how it ended
            allocation_id INTEGER,
            container_id TEXT
        );
        CREATE UNIQUE INDEX queue_waiting_name ON queue (user, name)
            WHERE state IN ('queued', 'admitting');
        CREATE INDEX queue_open ON queue (state, id) WHERE state IN ('queued', 'admitting');
        """,
    )


def _v13_reservations(conn: sqlite3.Connection) -> None:
    """Admins' reservations of units for a user or a group over a window (issue 16 item 5;
    store/reservations.py). `state` open → cancelled | expired (unused after its grace period)
    | ended (its window is over); `used_at`: when its party first held one of its units in
    the window."""
    _run_script(
        conn,
        """
        CREATE TABLE reservations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            units TEXT NOT NULL,              -- JSON list of unit UUIDs
            for_user TEXT,
            for_group TEXT,
            reason TEXT NOT NULL,
            start REAL NOT NULL,
            "end" REAL NOT NULL,
            grace_s REAL NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'cancelled', 'expired', 'ended')),
            used_at REAL,
            ended_at REAL,
            ended_by TEXT,
            CHECK ((for_user IS NULL) != (for_group IS NULL)),
            CHECK ("end" > start)
        );
        CREATE INDEX reservations_open ON reservations (state, "end") WHERE state = 'open';
        """,
    )


def _v14_usage(conn: sqlite3.Connection) -> None:
    """The usage ledger (issue 17 item 4; store/usage.py): GPU time and energy attributed to
    allocations per hour, per-user totals since the ledger began, and the machine per hour."""
    _run_script(
        conn,
        """
        CREATE TABLE usage (
            allocation_id INTEGER NOT NULL,
            bucket INTEGER NOT NULL,          -- the UTC hour's first second (unix time)
            user TEXT NOT NULL,
            grp TEXT,
            container TEXT,
            gpueq_seconds REAL NOT NULL,      -- held
            active_gpueq_seconds REAL NOT NULL,
            idle_gpueq_seconds REAL NOT NULL, -- held and judged idle; the rest is unknown
            energy_j REAL NOT NULL,
            unmetered_gpueq_seconds REAL NOT NULL, -- held on GPUs reporting no energy/power
            PRIMARY KEY (allocation_id, bucket)
        );
        CREATE INDEX usage_bucket ON usage (bucket);
        CREATE TABLE usage_totals (
            user TEXT PRIMARY KEY,
            gpueq_seconds REAL NOT NULL,
            active_gpueq_seconds REAL NOT NULL,
            energy_j REAL NOT NULL
        );
        CREATE TABLE usage_machine (
            bucket INTEGER PRIMARY KEY,
            sampled_seconds REAL NOT NULL,    -- covered by consecutive samples
            capacity_gpueq_seconds REAL NOT NULL,
            energy_j REAL NOT NULL,
            unallocated_energy_j REAL NOT NULL
        );
        """,
    )


MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "bare-metal grants and host process reports", _v2_grants),
    (3, "owner records of containers, volumes, networks and image tags", _v3_objects),
    (4, "intent records of container operations", _v4_intents),
    (5, "index of events by allocation", _v5_events_by_allocation),
    (6, "idle and runtime countdowns", _v6_lifecycle),
    (8, "keep-alives of idle countdowns", _v8_keepalive),
    (9, "exemptions from idle and runtime limits", _v9_exemptions),
    (10, "index of refusals for lack of capacity", _v10_capacity_refusals),
    (11, "banner notices for users' next command", _v11_banners),
    (12, "queue of deploy requests waiting for capacity", _v12_queue),
    (13, "admins' reservations of units", _v13_reservations),
    (14, "usage ledger: GPU time and energy per allocation and hour", _v14_usage),
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply missing migrations; the caller holds a transaction. Returns the schema version."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    done = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    latest = max((v for v, _, _ in MIGRATIONS), default=0)
    newer = [v for v in done if v > latest]
    if newer:
        raise StateError(
            f"state database has schema version {max(newer)}, newer than this ds01 ({latest})",
            fix="Run the ds01 version that created it, or restore a backup.",
        )
    for version, name, apply in MIGRATIONS:
        if version in done:
            continue
        apply(conn)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, time.time()),
        )
    return latest


def schema_version(conn: sqlite3.Connection) -> int:
    """The newest migration applied (0 for a database ds01 never set up); reads only."""
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    except sqlite3.OperationalError:
        return 0  # no such table
    return int(row[0] or 0)
