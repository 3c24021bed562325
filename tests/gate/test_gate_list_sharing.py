"""Shared container-list flights through a real gate and engine, attacked by gate users: while
alice and mallory each flood the gate with `GET /containers/json?all=1` (so that flights are
always in the air and every list request shares one with the other user's), alice creates and
removes containers and lists right after each step. Her list must show the container she just
made and not the one she just removed (no answer older than the request), and neither user may
ever see a container of the other's in any of the thousands of shared answers.

test_gate_flights.py pins the rule with exact interleavings; this checks the wiring.
"""

from __future__ import annotations

import json
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from gate_support import BIN, TEST_IMAGE, GateWorld, gate_world

pytestmark = [pytest.mark.docker, pytest.mark.root]

ROUNDS = 6
LIST = "/v1.41/containers/json?all=1"

# Lists as its user with `n` keep-alive connections until its stdin closes; prints the set of
# container IDs it saw in any answer and how many answers were 200 or not.
FLOOD = r"""
import http.client, json, socket, sys, threading
path, n = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
seen, ok, bad = set(), [0], [0]
lock = threading.Lock()

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

def worker():
    c = Conn("docker")
    while not stop.is_set():
        c.request("GET", "/v1.41/containers/json?all=1")
        r = c.getresponse()
        body = r.read()
        with lock:
            if r.status == 200:
                ok[0] += 1
                seen.update(item["Id"] for item in json.loads(body))
            else:
                bad[0] += 1

threads = [threading.Thread(target=worker) for _ in range(n)]
for t in threads: t.start()
print("started", flush=True)
sys.stdin.read()
stop.set()
for t in threads: t.join()
print(json.dumps({"seen": sorted(seen), "ok": ok[0], "bad": bad[0]}), flush=True)
"""


@dataclass
class Flood:
    proc: subprocess.Popen[str]

    def finish(self) -> dict[str, object]:
        out, _ = self.proc.communicate(timeout=60)
        result: dict[str, object] = json.loads(out.splitlines()[-1])
        return result


def flood(w: GateWorld, user: str, connections: int = 8) -> Flood:
    pw = pwd.getpwnam(user)
    proc = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--init-groups",
            str(BIN / "python"),
            "-c",
            FLOOD,
            w.gate,
            str(connections),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    return Flood(proc)


@pytest.fixture(scope="module")
def world(docker_host: str) -> Iterator[GateWorld]:
    with gate_world(docker_host) as w:
        yield w


def ids_in(reply_body: bytes) -> set[str]:
    return {item["Id"] for item in json.loads(reply_body)}


def test_shared_lists_are_never_stale_and_never_another_users(world: GateWorld) -> None:
    w = world
    alice, mallory = w.user("alice"), w.user("mallory")
    theirs: set[str] = set()
    with w.agent(mallory) as agent:
        r = agent.request(
            "POST", "/v1.41/containers/create", {"Image": TEST_IMAGE, "Cmd": ["true"]}
        )
        assert r.status == 201, r.body
        theirs.add(r.json()["Id"])
    floods = [flood(w, alice), flood(w, mallory)]
    made: set[str] = set()
    try:
        with w.agent(alice) as agent:
            for _ in range(ROUNDS):
                r = agent.request(
                    "POST", "/v1.41/containers/create", {"Image": TEST_IMAGE, "Cmd": ["true"]}
                )
                assert r.status == 201, r.body
                new = r.json()["Id"]
                made.add(new)
                listed = agent.request("GET", LIST)
                assert listed.status == 200, listed.body
                # Made before the list was asked for: in the list, whatever flight was flying.
                assert new in ids_in(listed.body)
                assert not ids_in(listed.body) & theirs
                r = agent.request("DELETE", f"/v1.41/containers/{new}")
                assert r.status == 204, r.body
                listed = agent.request("GET", LIST)
                assert listed.status == 200, listed.body
                # Removed before the list was asked for: gone from it.
                assert new not in ids_in(listed.body)
    finally:
        results = [f.finish() for f in floods]
    alice_saw, mallory_saw = (set(map(str, r["seen"])) for r in results)  # type: ignore[call-overload]
    assert all(r["ok"] and not r["bad"] for r in results), results
    assert not alice_saw & theirs
    assert not mallory_saw & made
    assert mallory_saw <= theirs
