"""ds01.yaml → SLURM policy without a cluster: GRES types, billing weights, QOS, accounts, and
the clear errors for what SLURM cannot express. Expected values are written out as literals."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ds01.config import parse_config_text
from ds01.inventory.sim import load_machine, shipped_machines
from ds01.slurm.inputs import node_machines, nss_members
from ds01.slurm.policy import build_policy
from ds01.slurm.render import render_all
from support import Users

DS01 = str(Path(sys.executable).parent / "ds01")

MIXED = """
defaults: {max_gpueq: "3/7", max_units_per_container: 1, max_containers: 2}
groups:
  student: {members: [alice, bob], max_gpueq_total: 2}
  phd: {members: [carol], max_gpueq: 2, allow_full_gpu: true, max_runtime: 2d}
users:
  bob: {max_gpueq: 1}
  dave: {}
queue: {group_priority: {phd: 0.25}}
cluster:
  backend: slurm
  nodes:
    gpu01: {machine: 8xH100-mig-mixed, gres: nvml}
  fairshare: {phd: 3}
"""


def _policy(text: str, machine: str = "8xH100-mig-mixed"):  # type: ignore[no-untyped-def]
    config = parse_config_text(text, "/etc/ds01/ds01.yaml")
    sample = load_machine(shipped_machines()[machine])
    return build_policy(config, {"gpu01": sample}, {})


def test_mig_types_bill_their_share_of_a_whole_gpu() -> None:
    policy = _policy(MIXED)
    assert policy.scale == 7
    assert policy.weights == {"1g.10gb": 1, "2g.20gb": 2, "3g.40gb": 3, "4g.40gb": 4, "h100": 7}
    assert policy.nodes[0].counts == {
        "h100": 4,
        "1g.10gb": 9,
        "2g.20gb": 1,
        "3g.40gb": 4,
        "4g.40gb": 1,
    }  # the machine file's own description: 7x1g, 3g+2g+1g+1g, 4g+3g, 2x3g
    conf = render_all(policy)["slurm-ds01.conf"]
    assert (
        'TRESBillingWeights="GRES/gpu=1,GRES/gpu:2g.20gb=1,GRES/gpu:3g.40gb=2,'
        'GRES/gpu:4g.40gb=3,GRES/gpu:h100=6"' in conf
    )
    assert (
        "NodeName=gpu01 Gres=gpu:1g.10gb:9,gpu:2g.20gb:1,gpu:3g.40gb:4,gpu:4g.40gb:1,"
        "gpu:h100:4 State=UNKNOWN" in conf
    )
    assert render_all(policy)["gres.conf"].splitlines()[-1] == "NodeName=gpu01 AutoDetect=nvml"


def test_limits_become_qos_and_accounts() -> None:
    policy = _policy(MIXED)
    qos = {q.name: q for q in policy.qos}
    assert sorted(qos) == ["ds01-default", "ds01-phd", "ds01-student", "ds01-student-bob"]
    assert qos["ds01-student"].max_tres_per_user == {"billing": 3, "gres/gpu:h100": 0}
    assert qos["ds01-student-bob"].max_tres_per_user == {"billing": 7, "gres/gpu:h100": 0}
    assert qos["ds01-phd"].max_tres_per_user == {"billing": 14}
    assert qos["ds01-phd"].max_wall_min == 2880
    assert qos["ds01-phd"].priority == 250
    assert qos["ds01-student"].max_tres_per_job == {"gres/gpu": 1}
    accounts = {a.name: (a.fairshare, a.grp_tres, a.qos) for a in policy.accounts}
    assert accounts == {
        "ds01-default": (1, {}, "ds01-default"),
        "student": (1, {"billing": 14}, "ds01-student"),
        "phd": (3, {}, "ds01-phd"),
    }
    members = {(m.user, m.account, m.qos) for m in policy.members}
    assert members == {
        ("alice", "student", "ds01-student"),
        ("bob", "student", "ds01-student-bob"),
        ("carol", "phd", "ds01-phd"),
        ("dave", "ds01-default", "ds01-default"),
    }


def test_a_limit_finer_than_a_slice_scales_the_billing() -> None:
    policy = _policy(MIXED.replace('max_gpueq: "3/7"', "max_gpueq: 0.5"))
    assert policy.scale == 14
    assert policy.weights["3g.40gb"] == 6
    assert {q.name: q.max_tres_per_user["billing"] for q in policy.qos}["ds01-student"] == 7


def _export(
    tmp_path: Path, config: str, machine: str | None = None
) -> subprocess.CompletedProcess[str]:
    if machine is not None:
        (tmp_path / "node.yaml").write_text(machine)
    (tmp_path / "ds01.yaml").write_text(config)
    return subprocess.run(
        [
            DS01,
            "--config",
            str(tmp_path / "ds01.yaml"),
            "slurm",
            "export",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


ME_MACHINE = """
machine: me
gpus:
  - name: NVIDIA H100 80GB HBM3
    memory_mib: 81559
    mig_enabled: true
    mig_devices:
      - {profile: 1g.10gb+me, gpu_instance_id: 7}
      - {profile: 3g.40gb, gpu_instance_id: 2}
"""


@pytest.mark.parametrize(
    ("config", "machine", "expected"),
    [
        pytest.param(
            "cluster: {nodes: {n1: {machine: node.yaml, gres: nvml}}}",
            ME_MACHINE,
            [
                "error: MIG profile '1g.10gb+me' has no SLURM GRES type name",
                "SLURM GRES types take letters, digits, '.', '_' and '-' only.",
                "Name one in cluster.gres_types, e.g. gres_types: {'1g.10gb+me': 1g.10gb_me}.",
            ],
            id="a MIG profile with no SLURM type name is refused with the key that names one",
        ),
        pytest.param(
            "cluster: {nodes: {n1: {machine: node.yaml}}}",
            ME_MACHINE.replace("+me", ""),
            [
                "error: node n1 has MIG devices, and gres is 'files'",
                "A MIG device's files are its GPU's and two /dev/nvidia-caps nodes that only the"
                " driver knows; SLURM reads them through NVML.",
                "Set cluster.nodes.n1.gres: nvml (AutoDetect=nvml; it needs a SLURM built with"
                " NVML, which Debian 12's packages are not).",
            ],
            id="MIG devices need AutoDetect=nvml",
        ),
        pytest.param(
            "groups: {phd: {}}\n"
            "cluster: {fairshare: {phdd: 2}, nodes: {n1: {machine: 4xA100-40GB}}}",
            None,
            [],
            id="an unknown group in cluster.fairshare is a config error",
        ),
    ],
)
def test_bad_input_is_a_clear_usage_error(
    tmp_path: Path, config: str, machine: str | None, expected: list[str]
) -> None:
    done = _export(tmp_path, config, machine)
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "out").exists()
    if "fairshare" in config:
        assert "cluster.fairshare.phdd: unknown group 'phdd'; did you mean 'phd'?" in done.stderr
    else:
        assert [line.strip() for line in done.stderr.splitlines()] == expected


def test_a_node_port_becomes_its_port_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    """cluster.nodes.<n>.port: several slurmd on one host (docs/slurm.md "Two nodes")."""
    done = _export(tmp_path, "cluster: {nodes: {n1: {machine: 4xA100-40GB, port: 6900}}}")
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "out" / "slurm-ds01.conf").read_text()
    assert "NodeName=n1 Port=6900 Gres=gpu:a100:4 State=UNKNOWN" in conf
    bad = _export(tmp_path, "cluster: {nodes: {n1: {machine: 4xA100-40GB, port: 70000}}}")
    assert bad.returncode == 2
    assert "cluster.nodes.n1.port: must be a port number (1-65535), got 70000" in bad.stderr
    assert (tmp_path / "out" / "slurm-ds01.conf").read_text() == conf


def test_gres_types_names_what_has_no_type(tmp_path: Path) -> None:
    config = (
        "cluster: {nodes: {n1: {machine: node.yaml, gres: nvml}},"
        " gres_types: {'1g.10gb+me': 1g.10gb_me}}"
    )
    done = _export(tmp_path, config, ME_MACHINE)
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "out" / "slurm-ds01.conf").read_text()
    assert "NodeName=n1 Gres=gpu:1g.10gb_me:1,gpu:3g.40gb:1 State=UNKNOWN" in conf
    assert 'TRESBillingWeights="GRES/gpu=1,GRES/gpu:3g.40gb=2"' in conf


def test_users_of_a_unix_group_are_placed_in_the_first_group_naming_it(users: Users) -> None:
    """NSS membership (a supplementary group) places users as ds01 does at login; a user the
    file names keeps the file's group."""
    lab = users.group(f"ds01l{uuid.uuid4().hex[:6]}")
    member = users.add(groups=(lab,))
    named = users.add(groups=(lab,))
    config = parse_config_text(
        f"groups:\n  phd: {{members: [{named}]}}\n"
        f"  lab: {{unix_group: {lab}}}\n  also: {{unix_group: {lab}}}\n"
        "cluster: {nodes: {gpu01: {machine: 4xA100-40GB}}}\n",
        "/etc/ds01/ds01.yaml",
    )
    assert nss_members(config) == {"lab": [member]}
    policy = build_policy(config, node_machines(config), nss_members(config))
    assert {(m.user, m.account) for m in policy.members} == {(named, "phd"), (member, "lab")}


def test_a_user_named_only_for_an_override_is_still_placed_by_unix_group(users: Users) -> None:
    """users.<n> without a group does not place the user: their unix_group does, as at login."""
    lab = users.group(f"ds01l{uuid.uuid4().hex[:6]}")
    member = users.add(groups=(lab,))
    config = parse_config_text(
        f"groups:\n  lab: {{unix_group: {lab}, max_gpueq: 2}}\n"
        f"users:\n  {member}: {{max_runtime: 1h}}\n"
        "cluster: {nodes: {gpu01: {machine: 4xA100-40GB}}}\n",
        "/etc/ds01/ds01.yaml",
    )
    policy = build_policy(config, node_machines(config), nss_members(config))
    assert [(m.user, m.account, m.qos) for m in policy.members] == [
        (member, "lab", f"ds01-lab-{member}")
    ]
    qos = {q.name: q for q in policy.qos}[f"ds01-lab-{member}"]
    # allow_full_gpu is false by default: no whole A100 for this user.
    assert (qos.max_tres_per_user, qos.max_wall_min) == ({"billing": 2, "gres/gpu:a100": 0}, 60)
