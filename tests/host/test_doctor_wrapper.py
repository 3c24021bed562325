"""`nvidia-smi.not-shadowed` judges a wrapper by what it does (issue 12 item 4).

A wrapper in front of NVIDIA's binary is run as an ordinary ds01 user with the query arguments
the allocator uses, next to NVIDIA's binary with the same arguments as the same user: a wrapper
that passes them through and works is a WARN (with its path and first lines), one that blocks,
filters or fails for that user is a FAIL (the original incident). NVIDIA's binary is a stand-in
ELF built from fixtures/standin/nvidia-smi.c; the wrappers are real scripts in a PATH given to
the doctor (Context.user_path); aliases are real lines in a startup file, checked by the real
`ds01 doctor` in a private mount namespace where a temp directory is /etc/profile.d.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from host_support import DS01
from standin_support import Namespace, build_standins, public_dir

from ds01.config import parse_config_text
from ds01.host.doctor import Context, Status, run_doctor
from ds01.paths import Paths
from support import Users, need

pytestmark = [pytest.mark.root]

RID = "nvidia-smi.not-shadowed"
PASS_THROUGH = """#!/bin/sh
# Site wrapper, as /usr/bin/nvidia-smi on the H200 host: NVIDIA's binary, same arguments.
exec {elf} "$@"
"""
# The incident (BRIEF §2): refuses everyone outside 'video', then runs NVIDIA's binary.
BLOCKING = """#!/bin/bash
# DS01's wrapper: only members of 'video' may see the GPUs.
if ! id -nG | grep -qw video; then
    echo "nvidia-smi: access denied (ask an admin)" >&2
    exit 1
fi
exec {elf} "$@"
"""
FILTERING = """#!/bin/sh
# Hide the second GPU from users.
{elf} "$@" | grep -v 'GPU 1\\|^1,'
"""
DROPPING = """#!/bin/sh
# Forgets the arguments: users get the table, never what they asked for.
exec {elf}
"""


@dataclass
class Lab:
    base: Path
    elf: Path  # NVIDIA's binary (stand-in), not on the PATH
    user: str  # the ordinary ds01 user

    def wrapper(self, text: str) -> Path:
        d = self.base / f"bin{len(list(self.base.glob('bin*')))}"
        d.mkdir(mode=0o755)
        d.chmod(0o755)
        path = d / "nvidia-smi"
        path.write_text(text.format(elf=self.elf))
        path.chmod(0o755)
        return path

    def context(self, *path_dirs: Path) -> Context:
        """The doctor's view with `path_dirs` first on the ordinary user's PATH (the system's
        directories after them, for the tools a wrapper calls)."""
        config = parse_config_text(f"groups:\n  lab:\n    members: [{self.user}]\n", "t.yaml")
        paths = Paths.resolve(self.base / "ds01.yaml", "/var/lib/ds01", "/run/ds01")
        return Context(
            Path("/"), paths, config, user_path=(*map(str, path_dirs), "/usr/bin", "/bin")
        )


@pytest.fixture
def lab(users: Users) -> Iterator[Lab]:
    base = public_dir("ds01-wrapper-")
    try:
        standins = build_standins(base)
        yield Lab(base, standins.smi, users.add())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_pass_through_wrapper_is_a_warning_with_its_path_and_first_lines(lab: Lab) -> None:
    wrapper = lab.wrapper(PASS_THROUGH)
    report = run_doctor(lab.context(wrapper.parent), fix=True, only=(RID,))
    result = report.results[0]
    assert result.status is Status.WARN
    assert result.summary == (
        "nvidia-smi is wrapped, but the wrapper passes queries through to NVIDIA's binary and "
        f"works for the ordinary user {lab.user}: {wrapper}"
    )
    assert result.evidence == [
        f"{wrapper}: script (#!/bin/sh)",
        "  1: #!/bin/sh",
        "  2: # Site wrapper, as /usr/bin/nvidia-smi on the H200 host: NVIDIA's binary, same "
        "arguments.",
        f'  3: exec {lab.elf} "$@"',
        f"as {lab.user}: `-L` through {wrapper}: as through NVIDIA's {lab.elf}: the same output",
        f"as {lab.user}: `--query-gpu=index,uuid,name,memory.total,pci.bus_id "
        f"--format=csv,noheader` through {wrapper}: as through NVIDIA's {lab.elf}: the same "
        "output",
    ]
    assert "ds01 needs no wrapper" in str(result.fix)
    assert report.fixed == []  # a working wrapper is never moved aside
    assert wrapper.read_text() == PASS_THROUGH.format(elf=lab.elf)


def test_the_incidents_blocking_wrapper_fails_and_fix_moves_it_aside(lab: Lab) -> None:
    wrapper = lab.wrapper(BLOCKING)
    result = run_doctor(lab.context(wrapper.parent), only=(RID,)).results[0]
    assert result.status is Status.FAIL
    assert result.summary == (
        f"nvidia-smi is shadowed by a wrapper: {wrapper} ({wrapper} blocks or fails queries "
        f"for {lab.user})"
    )
    assert f"{wrapper}: script (#!/bin/bash)" in result.evidence
    assert "  5:     exit 1" in result.evidence
    assert (
        f"as {lab.user}: `-L` through {wrapper}: exit 1 (nvidia-smi: access denied (ask an "
        f"admin)); NVIDIA's {lab.elf}: exit 0" in result.evidence
    )
    report = run_doctor(lab.context(wrapper.parent), fix=True, only=(RID,))
    assert report.fixed[0].startswith(f"{RID}: moved {wrapper} aside to nvidia-smi.ds01-bak.")
    assert not wrapper.exists()


@pytest.mark.parametrize("text", [FILTERING, DROPPING], ids=["filters a GPU", "drops arguments"])
def test_a_wrapper_that_changes_what_users_see_fails(lab: Lab, text: str) -> None:
    wrapper = lab.wrapper(text)
    result = run_doctor(lab.context(wrapper.parent), only=(RID,)).results[0]
    assert result.status is Status.FAIL
    assert result.summary.endswith(f"({wrapper} filters or changes queries for {lab.user})")
    assert any(e.endswith("the output differs") for e in result.evidence), result.evidence


def test_a_wrapper_with_no_nvidia_binary_behind_it_fails(lab: Lab) -> None:
    wrapper = lab.wrapper('#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-x)"\n')
    result = run_doctor(lab.context(wrapper.parent), only=(RID,)).results[0]
    assert result.status is Status.FAIL
    assert (
        f"{wrapper}: no NVIDIA binary found behind it to compare with: cannot be verified"
        in result.evidence
    )


def test_a_wrapper_is_compared_with_the_binary_later_on_the_path(lab: Lab) -> None:
    """A wrapper that names no binary by path (`exec` through PATH) is compared with the first
    ELF nvidia-smi on the user's PATH."""
    later = lab.base / "later"
    later.mkdir(mode=0o755)
    later.chmod(0o755)
    shutil.copy(lab.elf, later / "nvidia-smi")
    wrapper = lab.wrapper(f'#!/bin/sh\nPATH={later}\nexec nvidia-smi "$@"\n')
    result = run_doctor(lab.context(wrapper.parent, later), only=(RID,)).results[0]
    assert result.status is Status.WARN, result.evidence
    assert f"{later}/nvidia-smi: ELF executable, owned by no package" in result.evidence


# ---- aliases and functions in the startup files --------------------------------------------------


def _doctor_with_profile_d(lab: Lab, line: str) -> dict[str, object]:
    need(Path("/etc/profile.d").is_dir(), "no /etc/profile.d to stand a temp directory in for")
    profile_d = lab.base / "profile.d"
    profile_d.mkdir(mode=0o755)
    profile_d.chmod(0o755)
    (profile_d / "gpu.sh").write_text(f"# site GPU helpers\n{line}\n")
    config = lab.base / "ds01.yaml"
    config.write_text(f"groups:\n  lab:\n    members: [{lab.user}]\n")
    argv = [DS01, "--config", str(config), "doctor", "--json", "--only", RID]
    done = Namespace([], {profile_d: Path("/etc/profile.d")}).run(
        argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    )
    assert done.stdout, done.stderr
    return dict(json.loads(done.stdout)["checks"][0])


def test_a_pass_through_alias_is_a_warning(lab: Lab) -> None:
    check = _doctor_with_profile_d(lab, f"alias nvidia-smi='{lab.elf}'")
    assert check["status"] == "warn", check
    evidence = check["evidence"]
    assert isinstance(evidence, list)
    assert f"/etc/profile.d/gpu.sh:2: alias nvidia-smi='{lab.elf}'" in evidence
    assert (
        f"as {lab.user}: `-L` through /etc/profile.d/gpu.sh:2: as through NVIDIA's {lab.elf}: "
        "the same output" in evidence
    )


def test_a_blocking_function_fails(lab: Lab) -> None:
    check = _doctor_with_profile_d(
        lab,
        f'nvidia-smi() {{ [ "$(id -u)" = 0 ] || {{ echo "GPU queries are for admins" >&2; '
        f'return 1; }}; {lab.elf} "$@"; }}',
    )
    assert check["status"] == "fail", check
    assert str(check["summary"]).endswith(
        f"(/etc/profile.d/gpu.sh:2 blocks or fails queries for {lab.user})"
    )
