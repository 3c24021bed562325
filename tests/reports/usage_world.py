"""A usage ledger on a real state database and a simulated machine whose power, energy and
activity the test sets before each sample, with a clock the test moves: the hand-computed
scenario of the report tests (test_usage_ledger.py, test_report_cli.py).

The machine: GPU 0 a whole A100; GPU 1 an H100 with MIG, a 3g.40gb (3/7) and a 2g.20gb
(2/7) configured and 2 of its 7 compute slices left unconfigured.
"""

from __future__ import annotations

from pathlib import Path

from ds01.config import parse_config_text
from ds01.identity import Caller
from ds01.inventory.sim import SimBackend
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.usage import UsageLedger
from ds01.store.db import Database

T0 = 1_800_000_000.0  # a whole UTC hour (500,000 × 3600)

CONFIG = """
defaults:
  max_gpueq: 8
  max_containers: 8
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
allocation:
  reservation_timeout: 10h
groups:
  nlp:
    members: [{alice}]
  vision:
    members: [{bob}, {carol}]
"""


def machine_yaml(
    *,
    util0: float,
    power0: float | None,
    energy0_mj: int | None,
    power1: float | None,
    energy1_mj: int | None = None,
    process_on_3g: bool = False,
    with_2g: bool = True,
) -> str:
    def opt(key: str, value: object) -> str:
        return "" if value is None else f", {key}: {value}"

    procs = "processes:\n  - {pid: 4242, unit: '1/0', used_memory_mib: 2048}\n"
    return (
        "machine: usage-test\n"
        "gpus:\n"
        f"  - {{name: NVIDIA A100-SXM4-40GB, memory_mib: 40960, utilization_pct: {util0}"
        f"{opt('power_w', power0)}{opt('energy_mj', energy0_mj)}}}\n"
        f"  - {{name: NVIDIA H100 80GB HBM3, memory_mib: 81559, mig_enabled: true"
        f"{opt('power_w', power1)}{opt('energy_mj', energy1_mj)},\n"
        "     mig_devices: [{profile: 3g.40gb, gpu_instance_id: 2, memory_mib: 40448}"
        + (
            ",\n                   {profile: 2g.20gb, gpu_instance_id: 3, memory_mib: 20096}"
            if with_2g
            else ""
        )
        + "]}\n"
        + (procs if process_on_3g else "")
    )


class UsageWorld:
    def __init__(self, tmp: Path, users: tuple[str, str, str] = ("alice", "bob", "carol")) -> None:
        self.now = T0
        self.alice, self.bob, self.carol = users
        self.machine = tmp / "machine.yaml"
        self.machine.write_text(machine_yaml(util0=0, power0=100, energy0_mj=0, power1=200))
        self.backend = SimBackend(self.machine)
        self.db = Database(tmp / "ds01.db")
        config = parse_config_text(
            CONFIG.format(alice=self.alice, bob=self.bob, carol=self.carol), "test.yaml"
        )
        self.svc = AllocationService(self.db, lambda: config, clock=lambda: self.now)
        self.svc.sync_units(self.backend.sample())
        self.ledger = self.new_ledger()

    def new_ledger(self) -> UsageLedger:
        """A ledger as ds01d starts one (after a restart: no baseline)."""
        return UsageLedger(self.svc, max_gap=lambda: 1000.0)

    def caller(self, name: str) -> Caller:
        return Caller(uid=-1, gid=-1, pid=0, name=name, groups=frozenset())

    def allocate(self, user: str, at: float, container: str, **req: object) -> int:
        self.now = at
        row = self.svc.allocate(
            self.caller(user),
            AllocationRequest(container=container, **req),  # type: ignore[arg-type]
        )
        return row.id

    def whole_gpu(self, user: str, at: float, container: str) -> int:
        return self.allocate(user, at, container, kind=RequestKind.GPUS, count=1)

    def mig(self, user: str, at: float, container: str, profile: str) -> int:
        return self.allocate(user, at, container, kind=RequestKind.MIG, profiles=(profile,))

    def release(self, user: str, alloc_id: int, at: float) -> None:
        self.now = at
        self.svc.release(self.caller(user), alloc_id, "test")

    def sample(self, at: float, **machine: object) -> int:
        """Set the machine as given, take a sample at `at` and hand it to the ledger."""
        self.machine.write_text(machine_yaml(**machine))  # type: ignore[arg-type]
        self.now = at
        return self.ledger.observe(self.backend.sample(), at)

    def scenario(self) -> None:
        """The hand-computed scenario (expected figures: test_usage_ledger.py)."""
        # S0: the baseline (nothing before it is counted).
        bob = self.mig(self.bob, T0 + 3000, "sweep", "3g.40gb")
        self.sample(T0 + 3000, util0=0, power0=100, energy0_mj=1_000_000, power1=200)
        alice = self.whole_gpu(self.alice, T0 + 3300, "train")
        # S1: alice's GPU at 90 % (active), bob's slice runs a process (active).
        self.sample(
            T0 + 3600,
            util0=90,
            power0=250,
            energy0_mj=121_000_000,
            power1=300,
            process_on_3g=True,
        )
        carol = self.mig(self.carol, T0 + 3700, "probe", "2g.20gb")
        self.release(self.carol, carol, T0 + 3900)
        self.release(self.alice, alice, T0 + 4000)
        # S2: the A100's energy counter restarted (driver reload): power fills in.
        self.sample(T0 + 4200, util0=0, power0=350, energy0_mj=30_000_000, power1=300)
        # ds01d is down from T0+4200 to T0+7200; the new ledger's first sample is a baseline.
        self.ledger = self.new_ledger()
        self.sample(T0 + 7200, util0=0, power0=90, energy0_mj=40_000_000, power1=300)
        self.sample(T0 + 7800, util0=0, power0=110, energy0_mj=100_000_000, power1=300)
        self.bob_allocation = bob
