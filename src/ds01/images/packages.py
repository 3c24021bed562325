"""What may be installed by name: pip requirement specifiers and Debian package names.

A package name ends up in a Dockerfile's RUN line, so anything that could end the line, quote
itself out or reach the shell (newline, quote, `;`, `$`, backtick, `&`, `|`, a space, a
leading '-') is refused here, before any file is written — not escaped. What passes is also
single-quoted in the Dockerfile, so `>=` and `<` are never read as redirections.
"""

from __future__ import annotations

import re

from ds01.errors import UsageError

# PEP 508 names with extras and version clauses (numpy, torch==2.5.1, transformers[torch]>=4.40,
# "scipy>=1.10,<2"); no URLs, markers or options.
_PIP = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?"
    r"(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?"
    r"(?:(?:===|==|~=|!=|>=|<=|>|<)[A-Za-z0-9.*+!_-]{1,64}"
    r"(?:,(?:===|==|~=|!=|>=|<=|>|<)[A-Za-z0-9.*+!_-]{1,64})*)?"
)
# Debian policy: lower case, digits, + - . ; at least two characters; an optional =version.
_APT = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}(?:=[A-Za-z0-9.+~:-]{1,64})?")


def pip_packages(names: list[str]) -> list[str]:
    return [
        _check(n, _PIP, "pip", "numpy, torch==2.5.1, 'transformers[torch]>=4.40'") for n in names
    ]


def apt_packages(names: list[str]) -> list[str]:
    return [_check(n, _APT, "apt", "git, htop, libgl1") for n in names]


def _check(name: str, pattern: re.Pattern[str], kind: str, examples: str) -> str:
    if pattern.fullmatch(name):
        return name
    raise UsageError(
        f"{name!r} is not a {kind} package name ds01 can install",
        why=f"{kind} packages are names with an optional version (e.g. {examples}); spaces, "
        "quotes, options and shell characters such as ; $ ` & | are not allowed.",
        fix="Give the package name alone; for anything more, edit the image's Dockerfile "
        "(ds01 image build --dockerfile FILE).",
    )
