"""named_user's reading of an image's /etc/passwd and /etc/group, as runc reads them: table
cases with literal answers (the gate's attacks through the real engine are in
test_gate_named_user.py)."""

from __future__ import annotations

import pytest

from ds01.gate.policy.named_user import (
    Accounts,
    Resolved,
    Unresolvable,
    is_named,
    parse_group,
    parse_passwd,
    resolve,
)

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
vscode:x:1234:1234::/home/vscode:/bin/sh
vscode:x:0:0:a second entry never counts:/root:/bin/sh
broken:x:12a:1234::/:/bin/sh
short:x:5
tail:x:77:88
"""
GROUP = """\
root:x:0:vscode
vscode:x:1234:
lab:x:4321:vscode
lab:x:0:
odd:x:-1:
"""
ACCOUNTS = Accounts(parse_passwd(PASSWD), parse_group(GROUP))


def test_the_first_entry_of_a_name_wins_and_bad_numbers_are_unreadable() -> None:
    assert ACCOUNTS.users == {
        "root": (0, 0),
        "vscode": (1234, 1234),
        "broken": None,
        "tail": (77, 88),
    }
    assert ACCOUNTS.groups == {"root": 0, "vscode": 1234, "lab": 4321, "odd": None}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param("vscode", Resolved(1234, 1234), id="a name takes its primary group"),
        pytest.param("vscode:lab", Resolved(1234, 4321), id="a named group"),
        pytest.param("vscode:99", Resolved(1234, 99), id="a numeric group"),
        pytest.param("1234:vscode", Resolved(1234, 1234), id="a numeric uid with a named group"),
        pytest.param("root", Resolved(0, 0), id="root is uid 0"),
        pytest.param("tail", Resolved(77, 88), id="a passwd line with only four fields"),
    ],
)
def test_resolve(user: str, expected: Resolved) -> None:
    assert resolve(ACCOUNTS, user, caller_gid=555) == expected


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("nobody", "there is no user 'nobody' in the image's /etc/passwd"),
        ("broken", "the image's /etc/passwd entry for 'broken' is not readable"),
        ("short", "there is no user 'short' in the image's /etc/passwd"),
        ("vscode:staff", "there is no group 'staff' in the image's /etc/group"),
        ("vscode:odd", "the image's /etc/group entry for 'odd' is not readable"),
    ],
)
def test_unresolvable(user: str, message: str) -> None:
    with pytest.raises(Unresolvable) as err:
        resolve(ACCOUNTS, user, caller_gid=555)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("user", "named"),
    [("vscode", True), ("1000", False), ("1000:1000", False), ("1000:staff", True), ("", True)],
)
def test_is_named(user: str, named: bool) -> None:
    assert is_named(user) is named
