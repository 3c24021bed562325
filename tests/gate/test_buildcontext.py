"""Reading a legacy build's context as it streams past (gate/policy/buildcontext.py): the tar
forms the docker CLI and other tools write, fed in pieces of every size, and the Dockerfile
forms that name images. Expected images are literal."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from ds01.gate.policy.buildcontext import ContextReader, image_refs
from ds01.gate.refusal import GateRefusal


def context(
    files: dict[str, bytes], *, fmt: int = tarfile.USTAR_FORMAT, links: tuple[str, ...] = ()
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "elsewhere"
            tar.addfile(info)
    return buf.getvalue()


def read(raw: bytes, dockerfile: str = "", piece: int = 7) -> str:
    reader = ContextReader(dockerfile)
    for i in range(0, len(raw), piece):
        reader.feed(raw[i : i + piece])
    return reader.dockerfile()


DOCKERFILE = b"FROM alice/secret:v1\n"
LONG = "deep/" * 30 + "Dockerfile"  # past the 100-byte name field


@pytest.mark.parametrize("piece", [1, 7, 512, 100_000])
def test_the_dockerfile_is_found_whatever_the_piece_size(piece: int) -> None:
    raw = context({"a.txt": b"x" * 1000, "Dockerfile": DOCKERFILE, "z": b""})
    assert read(raw, piece=piece) == "FROM alice/secret:v1\n"


@pytest.mark.parametrize(
    "fmt",
    [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
    ids=["ustar", "gnu", "pax"],
)
def test_a_long_dockerfile_path_in_every_tar_format(fmt: int) -> None:
    raw = (
        context({"other": b"1", LONG: DOCKERFILE}, fmt=fmt)
        if fmt != tarfile.USTAR_FORMAT
        else context({"other": b"1", "sub/Dockerfile.gpu": DOCKERFILE})
    )
    path = LONG if fmt != tarfile.USTAR_FORMAT else "./sub/Dockerfile.gpu"
    assert read(raw, path) == "FROM alice/secret:v1\n"


def test_the_classic_builders_fallback_name_is_read_too() -> None:
    assert read(context({"dockerfile": DOCKERFILE})) == "FROM alice/secret:v1\n"


@pytest.mark.parametrize(
    ("raw", "dockerfile", "message"),
    [
        (gzip.compress(context({"Dockerfile": DOCKERFILE})), "", "a gzip-compressed build context"),
        (context({"Dockerfile": b""}, links=("Dockerfile",)), "", "is a link"),
        (context({"x": b""}, links=("sub",)), "sub/Dockerfile", "is a link"),
        (context({"README": b"hi"}), "", "a build context without Dockerfile"),
        (context({"Dockerfile": DOCKERFILE, "./Dockerfile": DOCKERFILE}), "", "Dockerfile twice"),
        (b"not a tar archive at all" * 40, "", "not a tar archive"),
    ],
    ids=["compressed", "a link", "a linked directory", "missing", "repeated", "not a tar"],
)
def test_a_context_the_gate_cannot_read_as_the_engine_would_is_refused(
    raw: bytes, dockerfile: str, message: str
) -> None:
    with pytest.raises(GateRefusal) as err:
        read(raw, dockerfile)
    assert err.value.rule == "build.context"
    assert message in err.value.what


CASES: list[tuple[str, str, dict[str, str | None], list[str]]] = [
    ("a plain FROM", "FROM alice/x:1\n", {}, ["alice/x:1"]),
    ("scratch is no image", "FROM scratch\nCOPY a /a\n", {}, []),
    (
        "--platform and AS",
        "FROM --platform=linux/amd64 alice/x AS build\nFROM build\n",
        {},
        ["alice/x"],
    ),
    ("ARG default", "ARG B=alice/x\nFROM $B\n", {}, ["alice/x"]),
    ("quoted ARG default", 'ARG B="alice/x"\nFROM ${B}\n', {}, ["alice/x"]),
    ("--build-arg wins", "ARG B=shared/y\nFROM ${B}\n", {"B": "alice/x"}, ["alice/x"]),
    ("an undeclared build arg is ignored", "FROM ${B:-shared/y}\n", {"B": "alice/x"}, ["shared/y"]),
    ("${B:+alt}", "ARG B=1\nFROM ${B:+alice/x}\n", {}, ["alice/x"]),
    (
        "COPY --from an image, a stage and an index",
        "FROM shared/y AS one\nFROM shared/z\nCOPY --from=one /a /a\nCOPY --from=0 /a /b\n"
        "COPY --from=alice/x /c /c\n",
        {},
        ["shared/y", "shared/z", "alice/x"],
    ),
    (
        "lower-case instructions",
        "from shared/y\nadd --from=alice/x /a /a\n",
        {},
        ["shared/y", "alice/x"],
    ),
    (
        "continuations and comments inside them",
        "FROM shared/y\nCOPY \\\n# a comment\n  --from=alice/x \\\n  /a /a\n",
        {},
        ["shared/y", "alice/x"],
    ),
    (
        "the backtick escape",
        "# escape=`\nFROM shared/y\nCOPY `\n --from=alice/x /a /a\n",
        {},
        ["shared/y", "alice/x"],
    ),
    ("ONBUILD", "FROM shared/y\nONBUILD COPY --from=alice/x /a /a\n", {}, ["shared/y", "alice/x"]),
]


@pytest.mark.parametrize(
    ("text", "args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_every_image_a_dockerfile_names_is_found(
    text: str, args: dict[str, str | None], expected: list[str]
) -> None:
    assert image_refs(text, args) == expected


@pytest.mark.parametrize(
    "text",
    [
        "FROM $(echo alice/x)\n",
        "FROM ${B/a/b}\n",
        "FROM shared/y\nCOPY --from=$IMG /a /a\n",
        "# escape=x\nFROM a\n",
    ],
    ids=[
        "command substitution",
        "pattern substitution",
        "--from with a variable",
        "an unknown escape",
    ],
)
def test_what_the_gate_cannot_expand_is_refused(text: str) -> None:
    with pytest.raises(GateRefusal) as err:
        image_refs(text, {})
    assert err.value.rule == "build.context"
