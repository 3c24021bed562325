"""A legacy build's context, read as it streams past: which images does its Dockerfile build on?

`FROM alice/private` (or `COPY --from=alice/private …`) in someone else's Dockerfile would run
their build steps on alice's files — and print or send them wherever they like. The Dockerfile
travels inside the build context, a tar stream the gate forwards without buffering. The engine's
classic builder unpacks the *whole* context before it reads the Dockerfile, so the gate can
parse the tar as it passes, keep the Dockerfile, and hold back only the stream's last bytes (the
tar's end) until it has judged every image the Dockerfile names: a refused build never starts.

What counts as an image reference: every `FROM` (after `ARG` substitution with the build's
`buildargs`), every `--from=` of `COPY`/`ADD` that names no earlier stage, `--from=` inside
`ONBUILD` lines, and the `ONBUILD` triggers stored in each base image (they run in this build).
Anything the gate cannot read as the engine would — a compressed context, a Dockerfile that is a
link, missing, repeated or huge, a variable it cannot expand — is refused (`build.context`).

Must not talk to the engine itself: the images found are judged by the caller (images.py).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from ds01.gate.refusal import GateRefusal

BLOCK = 512
MAX_DOCKERFILE = 1024 * 1024
MAX_META = 1024 * 1024  # PAX and GNU long-name records
HOLD_BACK = 64 * 1024  # bytes kept back until the check passed (the tar's end is in them)
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_LINKS = (b"1", b"2")  # hard link, symbolic link
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-+])(?P<word>.*))?\Z", re.S)


def refuse(what: str) -> GateRefusal:
    return GateRefusal("build.context", f"{what} was refused", summary=f"build: {what}")


@dataclass
class _Entry:
    name: str
    kind: bytes
    size: int
    left: int
    keep: bool
    data: bytearray = field(default_factory=bytearray)


class ContextReader:
    """Feed it the build context's bytes in order; then `dockerfile()` is its Dockerfile text."""

    def __init__(self, dockerfile_path: str) -> None:
        self.wanted = _clean(dockerfile_path or "Dockerfile")
        # The classic builder falls back to 'dockerfile' when the default name is missing.
        self.fallback = "dockerfile" if not dockerfile_path else None
        self._buf = bytearray()
        self._entry: _Entry | None = None
        self._pad = 0
        self._long_name: str | None = None
        self._pax_path: str | None = None
        self._meta: _Entry | None = None
        self._ended = False
        self._started = False
        self.found: dict[str, bytes] = {}
        self.links: set[str] = set()

    def feed(self, data: bytes) -> None:
        if not self._started and data:
            self._buf += data
            if len(self._buf) < 6 and not self._ended:
                return
            self._started = True
            for magic, name in _COMPRESSED.items():
                if bytes(self._buf[: len(magic)]) == magic:
                    raise refuse(f"a {name}-compressed build context (docker build --compress)")
            data, self._buf = bytes(self._buf), bytearray()
        if self._ended:
            return
        self._buf += data
        self._parse()

    def _parse(self) -> None:
        while not self._ended:
            if self._pad:
                n = min(self._pad, len(self._buf))
                del self._buf[:n]
                self._pad -= n
                if self._pad:
                    return
            entry = self._entry or self._meta
            if entry is not None:
                n = min(entry.left, len(self._buf))
                if entry.keep:
                    entry.data += self._buf[:n]
                del self._buf[:n]
                entry.left -= n
                if entry.left:
                    return
                self._pad = -entry.size % BLOCK
                self._done(entry)
                continue
            if len(self._buf) < BLOCK:
                return
            header = bytes(self._buf[:BLOCK])
            del self._buf[:BLOCK]
            if header == bytes(BLOCK):
                self._ended = True  # the end marker: the engine stops reading here
                return
            self._header(header)

    def _header(self, header: bytes) -> None:
        kind = header[156:157]
        size = _size(header[124:136])
        if kind in (b"x", b"L"):  # the next entry's PAX record or GNU long name
            if size > MAX_META:
                raise refuse("a build context with an oversized tar header")
            self._meta = _Entry("", kind, size, size, True)
            return
        if kind in (b"g", b"K"):
            self._meta = _Entry("", kind, size, size, False)
            return
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        text = (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")
        text = self._pax_path or self._long_name or text
        self._pax_path = self._long_name = None
        path = _clean(text)
        keep = path in (self.wanted, self.fallback) and kind in (b"0", b"\0", b"7")
        if keep and size > MAX_DOCKERFILE:
            raise refuse(f"a Dockerfile of {size} bytes (the gate reads at most {MAX_DOCKERFILE})")
        if kind in _LINKS:
            self.links.add(path)
        self._entry = _Entry(path, kind, size, size, keep)
        if not size:
            self._entry = None
            self._done(_Entry(path, kind, 0, 0, keep))

    def _done(self, entry: _Entry) -> None:
        if entry is self._meta:
            self._meta = None
            if entry.kind == b"L":
                self._long_name = bytes(entry.data).split(b"\0", 1)[0].decode("utf-8", "replace")
            elif entry.kind == b"x":
                self._pax_path = _pax_path(bytes(entry.data)) or self._pax_path
            return
        self._entry = None
        if entry.keep:
            if entry.name in self.found:
                raise refuse(f"a build context with {entry.name} twice")
            self.found[entry.name] = bytes(entry.data)

    def dockerfile(self) -> str:
        """The Dockerfile the engine will read; build.context when it cannot be told."""
        for name in (self.wanted, self.fallback):
            if name is None:
                continue
            parts = name.split("/")
            for i in range(1, len(parts) + 1):
                if "/".join(parts[:i]) in self.links:
                    raise refuse(f"a build context whose Dockerfile path {name} is a link")
            if name in self.found:
                try:
                    return self.found[name].decode("utf-8")
                except UnicodeDecodeError:
                    raise refuse(f"a Dockerfile ({name}) that is not UTF-8") from None
        raise refuse(f"a build context without {self.wanted} where the gate can read it")


def _clean(path: str) -> str:
    return posixpath.normpath("/" + path.strip()).lstrip("/")


def _size(field_: bytes) -> int:
    if field_[:1] in (b"\x80", b"\xff"):  # base-256 (GNU) for large files
        return int.from_bytes(field_[1:], "big")
    text = field_.split(b"\0", 1)[0].strip() or b"0"
    try:
        return int(text, 8)
    except ValueError:
        raise refuse("a build context that is not a tar archive") from None


def _pax_path(data: bytes) -> str | None:
    out = None
    while data:
        length = data.partition(b" ")[0]
        if not length.isdigit():
            break
        n = int(length)
        record, data = data[:n], data[n:]
        key, _, value = record[len(length) + 1 :].rstrip(b"\n").partition(b"=")
        if key == b"path":
            out = value.decode("utf-8", "replace")
    return out


# ---- the Dockerfile -----------------------------------------------------------------------


def image_refs(text: str, buildargs: dict[str, str | None]) -> list[str]:
    """Every image the Dockerfile builds on or copies from (not stages, not scratch)."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines:  # parser directives: only at the very top, before anything else
        m = _DIRECTIVE.fullmatch(line.strip())
        if m is None:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
            if escape not in ("\\", "`"):
                raise refuse(f"a Dockerfile with the escape character {escape!r}")
    meta: dict[str, str] = {}
    stages: list[str] = []
    refs: list[str] = []
    for instruction, args in _instructions(lines, escape):
        if instruction == "ARG" and not stages:
            for decl in args.split():
                name, eq, default = decl.partition("=")
                given = buildargs.get(name)
                value = given if given is not None else (_unquote(default) if eq else None)
                if value is not None:
                    meta[name] = value
        elif instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            if not words:
                raise refuse("a FROM without an image")
            image = _expand(words[0], meta)
            if image.lower() != "scratch" and image.lower() not in stages:
                refs.append(image)
            if len(words) >= 3 and words[1].lower() == "as":
                stages.append(words[2].lower())
            else:
                stages.append(f"#{len(stages)}")
        elif instruction in ("COPY", "ADD", "ONBUILD"):
            refs += from_flags(args, stages)
    return refs


def from_flags(args: str, stages: list[str]) -> list[str]:
    """Images named by --from= in a COPY/ADD (or an ONBUILD line holding one)."""
    out = []
    for word in args.split():
        if not word.lower().startswith("--from="):
            continue
        ref = word.split("=", 1)[1]
        if "$" in ref:
            raise refuse(f"a --from={ref} the gate cannot expand")
        if ref.lower() in stages or ref.isdigit():
            continue
        out.append(ref)
    return out


def _instructions(lines: list[str], escape: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    current = ""
    for raw in lines:
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped
        if stripped.endswith(escape):
            current += stripped[: -len(escape)] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _expand(word: str, meta: dict[str, str]) -> str:
    """$VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt} with the meta ARGs; anything else refused."""

    def one(m: re.Match[str]) -> str:
        if m.group("plain"):
            return meta.get(m.group("plain"), "")
        b = _BRACED.match(m.group("braced"))
        if b is None:
            raise refuse(f"a FROM with ${{{m.group('braced')}}} the gate cannot expand")
        value = meta.get(b.group("name"))
        if b.group("op") == ":-":
            return value if value else b.group("word")
        if b.group("op") == ":+":
            return b.group("word") if value else ""
        return value or ""

    out = _VAR.sub(one, word)
    if "$" in out or "\\" in out:
        raise refuse(f"a FROM {word} the gate cannot expand")
    return _unquote(out)
