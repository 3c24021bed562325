"""The web status page (issue 17 item 3) in a real headless Chromium, served by a real ds01d on a
simulated machine, with real Unix users and the private Docker engine:

- a tile per unit with its holder's name, as `ds01 gpu status` has them;
- a deploy shows up on the open page by itself (Server-Sent Events), without a reload;
- `privacy: hide_others` hides every other user's name from the page and its JSON;
- read-only: POST and friends are 405; a Host header that does not name the server is 403
  (DNS rebinding); live streams are capped at web.max_clients (then 503).

One Chromium for the module, driven over the DevTools protocol (cdp.py). A screenshot of the
page after the deploy is kept: under $DS01_ARTIFACTS when set (.ci/run sets it and prints where),
else in the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from cdp import Chromium, chromium_binary

from support import TEST_IMAGE, Daemon, Users, as_user, need, short_tmp, wait_for

MACHINE = Path(__file__).resolve().parents[2] / "examples" / "machines" / "8xH100-mig-mixed.yaml"
NOWHERE = "unix:///nonexistent/ds01-test-docker.sock"  # never the host's engine
CONFIG = """\
admin_group: ds01t-admins
privacy: {privacy}
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
gpu:
  sample_interval: 1s
docker:
  host: {docker}
web:
  listen: 127.0.0.1:{port}
  max_clients: {max_clients}
"""
STOPPABLE = ("sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1; done')
# What a tile shows, read from the page as the browser drew it.
TILES_JS = """JSON.stringify([...document.querySelectorAll('.tile')].map(t => ({
    unit: t.dataset.unit,
    holder: t.querySelector('.holder').textContent,
    state: t.querySelector('.state').textContent,
    spark: t.querySelector('svg') !== null})))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(
    privacy: str = "show_all", docker_host: str = NOWHERE, max_clients: int = 20
) -> tuple[Daemon, int]:
    port = free_port()
    config = CONFIG.format(privacy=privacy, docker=docker_host, port=port, max_clients=max_clients)
    d = Daemon(short_tmp(), config, MACHINE, None)
    d.start()
    wait_for(lambda: f"web status page on http://127.0.0.1:{port}/" in d.log(), "the web page")
    return d, port


def stop_daemon(d: Daemon) -> None:
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


def allocate_as(d: Daemon, user: str, mig: str, container: str) -> str:
    """An allocation through the API as a real user (their own SO_PEERCRED identity)."""
    code = (
        "import sys\n"
        "from ds01.client import Client\n"
        "from ds01.api.schemas import AllocateIn\n"
        f"with Client({str(d.socket)!r}) as c:\n"
        f"    print(c.allocate(AllocateIn(mig=[{mig!r}], container={container!r})).units[0].uuid)\n"
    )
    r = as_user(user, [sys.executable, "-c", code], env=d.env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def get(port: int, path: str, method: str = "GET", host: str | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": host} if host is not None else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (resp.headers, body)
    finally:
        conn.close()


def tiles(browser: Chromium) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(browser.evaluate(TILES_JS))
    return out


def artifact(tmp: Path, name: str) -> Path:
    base = os.environ.get("DS01_ARTIFACTS")
    return (Path(base) if base else tmp) / name


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    binary = chromium_binary()
    need(binary is not None, "chromium is not installed (bash .ci/setup-system.sh chromium)")
    assert binary is not None
    profile = short_tmp("ds01-chromium-")  # a new, empty profile
    b = Chromium(binary, profile)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def module_users() -> Iterator[Users]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    u = Users()
    try:
        yield u
    finally:
        u.cleanup()


@dataclass
class World:
    d: Daemon
    port: int
    alice: str
    bob: str


@pytest.fixture(scope="module")
def world(
    module_users: Users, docker_host: str, docker_client: docker.DockerClient
) -> Iterator[World]:
    alice, bob = module_users.add(), module_users.add()
    d, port = start_daemon(docker_host=docker_host)
    try:
        yield World(d, port, alice, bob)
    finally:
        for owner in (alice, bob):
            for c in docker_client.containers.list(
                all=True, filters={"label": f"ds01.owner={owner}"}
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
        stop_daemon(d)


def status_units(d: Daemon, user: str) -> dict[str, str | None]:
    r = d.cli("gpu", "status", "--json", user=user)
    assert r.returncode == 0, r.stderr
    return {u["uuid"]: u["user"] for u in json.loads(r.stdout)["units"]}


def test_a_tile_per_unit_with_holders_and_a_deploy_appears_live(
    world: World, browser: Chromium, tmp_path: Path
) -> None:
    d = world.d
    slice_uuid = allocate_as(d, world.bob, "3g.40gb", "notebook")
    browser.goto(f"http://127.0.0.1:{world.port}/")

    expected = status_units(d, world.alice)  # what a user other than bob is shown
    assert expected[slice_uuid] == world.bob
    assert len(expected) == 19

    def drawn() -> list[dict[str, Any]] | None:
        got = tiles(browser)
        return got if len(got) == len(expected) else None

    got = wait_for(drawn, "a tile per unit", 30)
    assert {t["unit"] for t in got} == set(expected)
    for t in got:
        assert t["holder"] == (expected[t["unit"]] or "free"), t
    (bobs,) = [t for t in got if t["unit"] == slice_uuid]
    assert bobs["state"] == "reserved"
    assert all(t["spark"] for t in got)
    assert browser.evaluate("document.getElementById('conn').textContent") == "live"

    # A deploy through the real engine, as alice, while the page stays open.
    browser.evaluate("window.ds01NotReloaded = true")
    r = d.cli(
        "container",
        "deploy",
        "train",
        "--image",
        TEST_IMAGE,
        "--gpus",
        "1",
        "--detach",
        "--json",
        "--",
        *STOPPABLE,
        user=world.alice,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (gpu,) = [u["uuid"] for u in json.loads(r.stdout)["gpus"]]

    def alices_tile() -> dict[str, Any] | None:
        (t,) = [t for t in tiles(browser) if t["unit"] == gpu]
        return t if t["holder"] == world.alice and t["state"] == "active" else None

    wait_for(alices_tile, "alice's GPU on the open page", 30)
    assert browser.evaluate("window.ds01NotReloaded") is True  # pushed, not reloaded
    events = browser.evaluate("document.getElementById('events').innerText")
    assert world.alice in events and "alloc activated" in events

    shot = browser.screenshot(artifact(tmp_path, "web-status-page.png"))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_the_queue_shows_who_waits_and_empties_live_when_they_start(
    world: World, browser: Chromium
) -> None:
    d = world.d
    r = d.cli(
        "container", "deploy", "holding", "--image", TEST_IMAGE, "--gpus", "1", "--detach",
        "--json", "--", *STOPPABLE, user=world.alice,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (held,) = json.loads(r.stdout)["gpus"]
    browser.goto(f"http://127.0.0.1:{world.port}/")
    wait_for(lambda: len(tiles(browser)) == 19, "the tiles", 30)
    queue_text = "document.getElementById('queue').innerText"
    assert browser.evaluate(queue_text) == "Nobody is waiting."
    # Every other whole GPU out of service: a deploy of one can only wait for alice's.
    whole = {u["gpu_index"] for u in json.loads(d.cli("gpu", "status", "--json").stdout)["units"]
             if u["kind"] == "gpu"}  # fmt: skip
    others = [str(i) for i in sorted(whole - {held["gpu_index"]})]
    for gpu in others:
        r = d.cli("admin", "drain", gpu, "--reason", "web page test")
        assert r.returncode == 0, r.stderr
    try:
        r = d.cli(
            "container", "deploy", "later", "--image", TEST_IMAGE, "--gpus", "1", "--queue",
            "--detach", "--json", "--", *STOPPABLE, user=world.bob,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert set(json.loads(r.stdout)) == {"queued"}

        def row() -> list[str] | None:
            text = browser.evaluate(queue_text)
            lines = [line.split("\t") for line in text.splitlines()]
            return lines[1] if len(lines) == 2 else None

        position, user, size = wait_for(row, "bob's entry on the page", 30)[:3]
        assert (position, user, size) == ("1", world.bob, "1")

        r = d.cli("container", "retire", "holding", user=world.alice)
        assert r.returncode == 0, r.stdout + r.stderr

        def started() -> bool:
            (t,) = [t for t in tiles(browser) if t["unit"] == held["uuid"]]
            return t["holder"] == world.bob and t["state"] == "active"

        wait_for(started, "bob's queued deploy to start on alice's GPU, on the open page", 60)
        wait_for(lambda: browser.evaluate(queue_text) == "Nobody is waiting.", "an empty queue", 30)
        events = browser.evaluate("document.getElementById('events').innerText")
        assert "queue admitted" in events and "queue queued" in events
    finally:
        for gpu in others:
            d.cli("admin", "undrain", gpu, "--reason", "web page test")


def test_through_an_ssh_tunnel_as_docs_web_md_says(world: World, browser: Chromium) -> None:
    """`ssh -N -L LOCAL:127.0.0.1:9102 user@server`, then http://localhost:LOCAL/ — with a real
    sshd (its own host key, port and config) and a real ssh client, as the user."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    need(Path(sshd_bin).exists(), "openssh-server is not installed (.ci/setup-system.sh)")
    need(shutil.which("ssh") is not None, "openssh-client is not installed")
    base = short_tmp("ds01-sshd-")
    procs: list[subprocess.Popen[bytes]] = []
    made_privsep = not Path("/run/sshd").exists()
    try:
        for name in ("hostkey", "clientkey"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)],
                check=True,
            )
        pw = pwd.getpwnam(world.alice)
        ssh_dir = Path(pw.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text((base / "clientkey.pub").read_text())
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        ssh_port, local = free_port(), free_port()
        (base / "sshd_config").write_text(
            f"Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {base / 'hostkey'}\n"
            f"PidFile {base / 'sshd.pid'}\nUsePAM yes\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "AuthorizedKeysFile .ssh/authorized_keys\nAllowTcpForwarding yes\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        procs.append(
            subprocess.Popen(
                [sshd_bin, "-D", "-f", str(base / "sshd_config"), "-E", str(base / "sshd.log")]
            )
        )
        wait_for(lambda: _accepts(ssh_port), "sshd to listen", 15)
        procs.append(
            subprocess.Popen(
                [
                    "ssh", "-N", "-L", f"{local}:127.0.0.1:{world.port}",
                    "-i", str(base / "clientkey"), "-p", str(ssh_port),
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                    "-o", "ExitOnForwardFailure=yes", f"{world.alice}@127.0.0.1",
                ],
                stderr=(base / "ssh.log").open("wb"),
            )
        )  # fmt: skip
        wait_for(lambda: _accepts(local), "the tunnel's local end", 30, detail=lambda: (
            (base / "ssh.log").read_text() + (base / "sshd.log").read_text()))  # fmt: skip

        browser.goto(f"http://localhost:{local}/")
        wait_for(lambda: len(tiles(browser)) == 19, "the tiles through the tunnel", 30)
        wait_for(
            lambda: browser.evaluate("document.getElementById('conn').textContent") == "live",
            "the live view through the tunnel",
            30,
        )
        browser.goto("about:blank")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=15)
        shutil.rmtree(base, ignore_errors=True)
        if made_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_hide_others_hides_every_other_users_name(browser: Chromium, module_users: Users) -> None:
    bob = module_users.add()
    d, port = start_daemon(privacy="hide_others")
    try:
        held = allocate_as(d, bob, "1g.10gb", "secret-project")
        browser.goto(f"http://127.0.0.1:{port}/")

        def held_tile() -> dict[str, Any] | None:
            found = [t for t in tiles(browser) if t["unit"] == held]
            return found[0] if found and found[0]["state"] == "reserved" else None

        assert wait_for(held_tile, "the held unit's tile", 30)["holder"] == "(hidden)"
        assert bob not in browser.evaluate("document.body.innerText")
        assert "secret-project" not in browser.evaluate("document.body.innerText")

        status, (_, body) = get(port, "/snapshot.json")
        assert status == 200
        assert bob.encode() not in body and b"secret-project" not in body
        snap = json.loads(body)
        assert snap["privacy"] == "hide_others"
        # Only these fields, for every unit: no processes, allocation ids or drain reasons.
        assert {frozenset(u) for u in snap["units"]} == {
            frozenset(
                {
                    "uuid", "name", "kind", "gpu_index", "model", "profile", "memory_total_mib",
                    "gpueq", "gpueq_exact", "drained", "user", "state", "container",
                    "hold_until", "utilization_pct", "memory_used_mib", "busy", "trend",
                }
            )
        }  # fmt: skip
        (event,) = [e for e in snap["events"] if e["action"] == "reserved"]
        assert event["user"] == "(hidden)"
    finally:
        stop_daemon(d)


def test_read_only_host_checked_and_live_views_capped(browser: Chromium) -> None:
    d, port = start_daemon(max_clients=2)
    try:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/snapshot.json", "/events"):
                status, (headers, body) = get(port, path, method)
                assert status == 405, (method, path, status)
                assert headers["Allow"] == "GET, HEAD"
                assert "read-only" in json.loads(body)["error"]["what"]

        status, (headers, _) = get(port, "/")
        assert status == 200
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
        assert "unsafe-inline" not in csp
        for host in ("localhost:8080", "127.0.0.1", "[::1]:9102"):  # through any tunnel port
            assert get(port, "/snapshot.json", host=host)[0] == 200, host
        for host in ("evil.example", "evil.example:9102", "127.0.0.1.evil.example", ""):
            status, (_, body) = get(port, "/snapshot.json", host=host)
            assert status == 403, host
            assert "web.hosts" in json.loads(body)["error"]["fix"]

        for path in ("/", "/snapshot.json", "/events"):  # HEAD answers, and holds no place
            assert get(port, path, "HEAD")[0] == 200, path
        # Two live views are open; the third is refused and told what to do.
        streams = [_open_stream(port) for _ in range(2)]
        try:
            status, (_, body) = get(port, "/events")
            assert status == 503
            assert "web.max_clients" in json.loads(body)["error"]["what"]
            # A tab refused its live view still shows the server, refreshed by polling.
            browser.goto(f"http://127.0.0.1:{port}/")
            wait_for(
                lambda: (
                    "live view unavailable"
                    in browser.evaluate("document.getElementById('conn').textContent")
                ),
                "the refused tab to fall back to polling",
                30,
            )
            assert len(tiles(browser)) == 19
            browser.goto("about:blank")
            streams.pop().close()  # a tab closed: its place is free once ds01d notices

            def admitted() -> bool:
                s = _open_stream(port, check=False)
                ok = s is not None
                if s is not None:
                    streams.append(s)
                return ok

            wait_for(admitted, "a live view's place to come free", 30)
        finally:
            for s in streams:
                s.close()
    finally:
        stop_daemon(d)


def _open_stream(port: int, check: bool = True) -> socket.socket | None:
    """An SSE stream that has received its first snapshot; None when refused (check=False)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"data: " not in data:
        chunk = s.recv(65536)
        if not chunk or (data + chunk).startswith(b"HTTP/1.1 503"):
            s.close()
            assert not check, (data + chunk)[:200]
            return None
        data += chunk
    return s


def test_ds01d_stops_cleanly_with_a_page_open(browser: Chromium) -> None:
    """An open live view ends with the daemon: ds01d exits 0 on SIGTERM, and the tab says so."""
    d, port = start_daemon()
    try:
        browser.goto(f"http://127.0.0.1:{port}/")
        wait_for(
            lambda: browser.evaluate("document.getElementById('conn').textContent") == "live",
            "the live view",
            30,
        )
        assert d.proc is not None
        d.proc.terminate()
        assert d.proc.wait(timeout=60) == 0
        d.proc = None
        wait_for(
            lambda: browser.evaluate("document.getElementById('conn').textContent") != "live",
            "the tab to notice",
            30,
        )
    finally:
        stop_daemon(d)
    browser.goto("about:blank")
