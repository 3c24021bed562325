"""Checks of ds01d and its files: it runs, its sockets have the intended modes, the host-access
file it writes is sound, its unit is current.

    daemon.running        api.sock answers /v1/health (live; the probe is injected by the CLI,
                          so this package never imports the client)
    daemon.loops          every background loop of ds01d passes: none failing (FAIL), none
                          without a success for much longer than its interval (WARN)
    daemon.config-current a reload changed no key that ds01d reads only at start (WARN)
    daemon.invariants     ds01d's own check of its state finds no broken invariant (FAIL)
    daemon.sockets        api.sock 0666 (identity is SO_PEERCRED); docker.sock 0660 root:gate_group
    daemon.host-access    <run-dir>/host-access exists, root-owned, not writable by others,
                          parseable, and lists every exempt user of the config
    systemd.current       the ds01d unit and tmpfiles.d entry are what apply writes

Read-only; the only repair is re-rendering the systemd files.
"""

from __future__ import annotations

import grp
import stat
from pathlib import Path

from ds01.host import hostaccess
from ds01.host.doctor.base import Context, DaemonHealth, Result, Status, octal
from ds01.host.doctor.files import files_current
from ds01.timetext import ago

_LIVE_ONLY = "needs the live host (--root is set)"


def check_running(ctx: Context) -> Result:
    rid = "daemon.running"
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    socket = ctx.paths.api_socket
    if ctx.health is None:
        return Result(rid, Status.SKIP, "no health probe available")
    try:
        status = ctx.health(socket)
    except Exception as err:
        lines = err.lines() if hasattr(err, "lines") else [str(err)]
        return Result(
            rid,
            Status.FAIL,
            f"ds01d does not answer on {socket}",
            [str(line) for line in lines],
            "Start it: systemctl enable --now ds01d (logs: journalctl -u ds01d).",
        )
    return Result(rid, Status.PASS, f"ds01d answers on {socket}", [status.summary])


def stale_after(interval_s: float) -> float:
    """A loop that has not passed for this long has stopped passing: three of its intervals
    and a minute's grace (a slow pass, a busy host)."""
    return 3 * interval_s + 60


def _health(ctx: Context, rid: str) -> DaemonHealth | Result:
    """ds01d's health for a check that reads it, or the check's SKIP when there is none."""
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    if ctx.health is None:
        return Result(rid, Status.SKIP, "no health probe available")
    try:
        return ctx.health(ctx.paths.api_socket)
    except Exception:
        return Result(rid, Status.SKIP, "ds01d does not answer (see daemon.running)")


def check_loops(ctx: Context) -> Result:
    rid = "daemon.loops"
    health = _health(ctx, rid)
    if isinstance(health, Result):
        return health
    if not health.loops:
        return Result(
            rid,
            Status.WARN,
            "ds01d reports no background loops (an older ds01d, or it is still starting)",
            fix="Run the doctor again in a minute; upgrade ds01d if it persists.",
        )
    failing: list[str] = []
    stale: list[str] = []
    evidence: list[str] = []
    for name, loop in sorted(health.loops.items()):
        every = f"every {loop.interval_s:g} s" if loop.interval_s else "on events"
        last = "never" if loop.last_ok is None else ago(ctx.now - loop.last_ok)
        if loop.failing:
            failing.append(name)
            evidence.append(f"{name}: FAILING: {loop.failing} (last success {last})")
            continue
        evidence.append(f"{name}: last success {last} ({every})")
        if loop.interval_s:
            start = loop.last_ok if loop.last_ok is not None else loop.running_since
            if start is not None and ctx.now - start > stale_after(loop.interval_s):
                stale.append(name)
    fix = (
        "Read the cause in the ds01d log (journalctl -u ds01d): a locked or full state disk, "
        "Docker, the GPU driver. Loops retry by themselves; restart ds01d if one stays stuck."
    )
    if failing:
        return Result(
            rid,
            Status.FAIL,
            f"failing: {', '.join(failing)}" + (f"; stale: {', '.join(stale)}" if stale else ""),
            evidence,
            fix,
        )
    if stale:
        return Result(rid, Status.WARN, f"no recent success: {', '.join(stale)}", evidence, fix)
    return Result(rid, Status.PASS, f"{len(health.loops)} background loops pass", evidence)


def check_invariants(ctx: Context) -> Result:
    rid = "daemon.invariants"
    health = _health(ctx, rid)
    if isinstance(health, Result):
        return health
    if health.invariants:
        return Result(
            rid,
            Status.FAIL,
            f"{len(health.invariants)} broken state invariant(s)",
            list(health.invariants),
            "See docs/allocation.md (Invariants) and 'ds01 events --kind daemon'; "
            "'ds01d --check' lists them from the database too. Report it as a ds01 bug.",
        )
    return Result(
        rid,
        Status.PASS,
        "state invariants hold (one live allocation per unit, no reservation left over, "
        "the audit log matches every live allocation)",
    )


def check_config_current(ctx: Context) -> Result:
    rid = "daemon.config-current"
    health = _health(ctx, rid)
    if isinstance(health, Result):
        return health
    if health.restart_needed:
        keys = ", ".join(health.restart_needed)
        return Result(
            rid,
            Status.WARN,
            f"the config changed {keys}, which ds01d reads only when it starts",
            [
                f"{k}: ds01d still runs with the value it started with"
                for k in health.restart_needed
            ],
            "Restart ds01d to apply it (systemctl restart ds01d); allocations and containers "
            "survive a restart.",
        )
    return Result(rid, Status.PASS, "ds01d runs the config file as it is (or as last reloaded)")


def _socket_state(path: Path) -> tuple[int, str, int]:
    st = path.stat()
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return st.st_uid, group, stat.S_IMODE(st.st_mode)


def check_sockets(ctx: Context) -> Result:
    rid = "daemon.sockets"
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    api = ctx.paths.api_socket
    if not api.exists():
        return Result(rid, Status.SKIP, f"ds01d is not running ({api} is absent)")
    evidence: list[str] = []
    bad: list[str] = []
    _, _, mode = _socket_state(api)
    evidence.append(f"{api}: {octal(mode)}")
    if mode != 0o666:
        bad.append(f"{api} is {octal(mode)}, expected 0666 (every user may ask ds01d)")
    gate = ctx.paths.gate_socket
    gate_group = ctx.config.host.gate_group if ctx.config else None
    if not gate.exists():
        evidence.append(f"{gate}: absent")
        return Result(
            rid,
            Status.WARN if not bad else Status.FAIL,
            f"the Docker gate socket {gate} is absent" + (f"; {bad[0]}" if bad else ""),
            evidence,
            "Check that ds01d runs the gate (journalctl -u ds01d).",
        )
    uid, group, gmode = _socket_state(gate)
    evidence.append(f"{gate}: uid {uid}, group {group}, {octal(gmode)}")
    if gmode != 0o660 or uid != 0 or (gate_group is not None and group != gate_group):
        bad.append(f"{gate} is {group} {octal(gmode)}, expected root:{gate_group} 0660")
    if bad:
        return Result(
            rid,
            Status.FAIL,
            "; ".join(bad),
            evidence,
            "Restart ds01d (it creates its sockets with these modes).",
        )
    return Result(rid, Status.PASS, "api.sock 0666, docker.sock 0660 for the gate group", evidence)


def check_host_access(ctx: Context) -> Result:
    rid = "daemon.host-access"
    live_path = ctx.paths.run_dir / hostaccess.FILE_NAME
    path = ctx.at(live_path)
    try:
        st = path.stat()
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return Result(
            rid,
            Status.FAIL,
            f"{live_path} is missing: nobody may compute on the host (fail closed), "
            "exempt users included",
            fix="Start ds01d (it writes the file), or `ds01 host apply --only profile` to seed "
            "it with the exempt users.",
        )
    except OSError as err:
        return Result(rid, Status.FAIL, f"{live_path} is unreadable: {err}")
    mode = stat.S_IMODE(st.st_mode)
    evidence = [f"{live_path}: uid {st.st_uid}, mode {octal(mode)}"]
    if st.st_uid != 0 or mode & 0o022:
        return Result(
            rid,
            Status.FAIL,
            f"{live_path} can be changed by someone other than root: anyone could grant "
            "themselves host compute",
            evidence,
            f"chown root {live_path} && chmod 0644 {live_path}, and find out who changed it.",
        )
    parsed = hostaccess.parse(text)
    evidence += [f"line {n} ignored: {line[:60]}" for n, line in parsed.bad_lines]
    allowed = hostaccess.allowed_users(parsed, ctx.now)
    evidence.append(f"allowed now: {', '.join(sorted(allowed)) or 'nobody'}")
    missing = [u for u in (ctx.config.exempt_users if ctx.config else ()) if u not in allowed]
    if missing or parsed.bad_lines or mode != hostaccess.MODE:
        problems = []
        if missing:
            problems.append("exempt users missing: " + ", ".join(missing))
        if parsed.bad_lines:
            problems.append(f"{len(parsed.bad_lines)} malformed lines")
        if mode != hostaccess.MODE:
            problems.append(f"mode {octal(mode)} (0644 expected, so every shell can read it)")
        return Result(
            rid,
            Status.WARN,
            f"{live_path}: " + "; ".join(problems),
            evidence,
            "ds01d rewrites it from the config on start and reload (systemctl reload ds01d).",
        )
    return Result(rid, Status.PASS, f"{live_path} is sound ({len(allowed)} allowed)", evidence)


def check_systemd_current(ctx: Context) -> Result:
    return files_current(
        ctx, "systemd.current", "systemd", "the ds01d unit and the tmpfiles.d entry"
    )
