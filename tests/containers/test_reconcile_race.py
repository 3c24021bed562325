"""Reconcile against concurrent deploys and retires (issue 10 D2): 8 loops deploy and retire
containers for 60 s while ds01d reconciles every 0.1 s (and on every Docker event). A pass that
reads a deploy half-way must never take it for a removal: no allocation is released as
`container_removed`, none is stopped or flagged as running without an allocation, and every
deployed container's allocation ends `retired`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import docker
import pytest
from containers_support import STOPPABLE, TEST_IMAGE, db_rows, remove_owned

from ds01.api.schemas import DeployIn
from ds01.errors import Ds01Error
from support import loop_passes

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

LOOPS = 8
SECONDS = 60.0

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 8
  max_units_per_container: 2
  max_containers: 16
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
"""


def test_reconcile_never_mistakes_a_deploy_for_a_removal(
    daemon_factory: Any, docker_host: str, docker_client: docker.DockerClient
) -> None:
    d = daemon_factory(config=CONFIG, docker_host=docker_host, start=False)
    d.extra_env = {"DS01_RECONCILE_EVERY_S": "0.1"}
    d.start()
    prefix = f"race{uuid.uuid4().hex[:6]}"
    done = Counter[str]()
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def loop(n: int) -> None:
        k = 0
        with d.client() as c:
            while time.monotonic() < deadline:
                name = f"{prefix}-{n}-{k}"
                k += 1
                body = DeployIn(
                    name=name,
                    image=TEST_IMAGE,
                    gpueq="1/7" if n % 2 else None,
                    cpu_only=n % 2 == 0,
                    command=list(STOPPABLE),
                )
                try:
                    c.deploy(body)
                    c.container_op(name, "retire")
                except Ds01Error as err:
                    with lock:
                        failures.append(f"{name}: {err.what}")
                    return
                with lock:
                    done["cycles"] += 1

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(LOOPS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=SECONDS + 120)
        ended = time.time()
        loop_passes(d, "reconcile", 1)  # a whole pass that began after the loops ended
        assert failures == []
        assert done["cycles"] >= LOOPS  # every loop got through at least once
        reasons = Counter(
            r
            for (r,) in db_rows(
                d, "SELECT reason FROM events WHERE kind = 'alloc' AND action = 'released'"
            )
        )
        assert reasons == Counter({"retired": done["cycles"]}), reasons
        container_events = db_rows(
            d,
            "SELECT action, reason, message FROM events WHERE kind = 'container'"
            " AND action IN ('orphan', 'stopped') AND instr(message, ?) > 0",
            f"root.{prefix}-",  # the engine is shared: other tests' containers are not ours
        )
        assert container_events == []
        assert db_rows(d, "SELECT id FROM allocations WHERE state != 'released'") == []
        with d.client() as c:
            reconcile = c.health().loops["reconcile"]
        # It kept passing through the load (its last pass is from after the loops ended).
        assert reconcile.failing is None
        assert reconcile.last_ok is not None and reconcile.last_ok >= ended
    finally:
        remove_owned(docker_client, ["root"])
