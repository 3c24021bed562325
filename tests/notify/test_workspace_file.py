"""The workspace channel against a user who controls the directory (notify/workspace.py): ds01d
is root, the workspace is the user's, and whatever the user put under the file's name —
a symlink, a hard link, a FIFO, a device node, a directory — is refused without being followed,
opened for writing, waited on or truncated. The test runs as root, as ds01d does; the "user"
is a uid that owns the directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from ds01.notify.workspace import append, entry

pytestmark = [pytest.mark.root]

UID, GID = 4242, 4242
NAME = "ds01-notices.txt"
NOTE = entry("Your container 'thesis' will be stopped at 15:05.", datetime(2026, 12, 5, 14, 50))


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("acts as root, as ds01d does, for a directory of another uid")
    d = tmp_path / "workspace"
    d.mkdir()
    os.chown(d, UID, GID)
    yield d


@pytest.fixture
def roots_file(tmp_path: Path) -> Path:
    """A file of root's outside the workspace, as /etc/shadow would be."""
    f = tmp_path / "secret"
    f.write_text("root only\n")
    f.chmod(0o600)
    return f


def _refused(ws: Path, why: str) -> None:
    with pytest.raises(OSError, match=why):
        append(ws, NAME, NOTE, UID, GID, max_size=4096)


def test_a_new_file_is_made_for_the_user_and_later_notices_are_appended(ws: Path) -> None:
    assert append(ws, NAME, NOTE, UID, GID, max_size=4096) == "created"
    assert append(ws, NAME, NOTE, UID, GID, max_size=4096) == "appended"
    st = (ws / NAME).stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UID, GID, 0o644)
    text = (ws / NAME).read_text()
    assert (
        text
        == ("--- ds01, 2026-12-05 14:50 ---\nYour container 'thesis' will be stopped at 15:05.\n\n")
        * 2
    )


def test_a_symlink_to_a_file_of_roots_is_not_followed(ws: Path, roots_file: Path) -> None:
    (ws / NAME).symlink_to(roots_file)
    _refused(ws, "symbolic link")
    assert roots_file.read_text() == "root only\n"


def test_a_dangling_symlink_does_not_make_its_target(ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "made-by-root"
    (ws / NAME).symlink_to(target)
    _refused(ws, "symbolic link")
    assert not target.exists()


def test_a_hard_link_to_a_file_of_roots_is_refused(ws: Path, roots_file: Path) -> None:
    os.link(roots_file, ws / NAME)
    _refused(ws, "belongs to uid 0")
    assert roots_file.read_text() == "root only\n"


def test_a_hard_link_to_another_file_of_the_users_is_refused(ws: Path) -> None:
    other = ws / "thesis.tex"
    other.write_text("chapter 1\n")
    os.chown(other, UID, GID)
    os.link(other, ws / NAME)
    _refused(ws, "2 links")
    assert other.read_text() == "chapter 1\n"


def test_a_fifo_is_refused_without_waiting_for_a_reader(ws: Path) -> None:
    os.mkfifo(ws / NAME)
    os.chown(ws / NAME, UID, GID)
    _refused(ws, "not a regular file")  # pytest-timeout fails the test if it blocks


def test_a_device_node_is_refused(ws: Path) -> None:
    # What root inside the user's own container could make (Docker grants CAP_MKNOD).
    os.mknod(ws / NAME, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(ws / NAME, UID, GID)
    _refused(ws, "not a regular file")


def test_a_directory_under_the_name_is_refused(ws: Path) -> None:
    (ws / NAME).mkdir()
    _refused(ws, "not a regular file")


def test_a_file_of_another_owner_is_refused(ws: Path) -> None:
    (ws / NAME).write_text("root made this\n")
    _refused(ws, "belongs to uid 0")
    assert (ws / NAME).read_text() == "root made this\n"


def test_a_workspace_that_is_a_symlink_is_not_followed(tmp_path: Path, ws: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    link = tmp_path / "link"
    link.symlink_to(etc)
    with pytest.raises(OSError):
        append(link, NAME, NOTE, UID, GID, max_size=4096)
    assert list(etc.iterdir()) == []


def test_a_directory_of_someone_else_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("acts as root")
    roots = tmp_path / "roots"
    roots.mkdir()
    with pytest.raises(PermissionError, match="not to the user"):
        append(roots, NAME, NOTE, UID, GID, max_size=4096)
    assert list(roots.iterdir()) == []


def test_a_name_with_a_directory_part_is_refused(ws: Path) -> None:
    with pytest.raises(OSError, match="not a plain file name"):
        append(ws, "../escape", NOTE, UID, GID, max_size=4096)


def test_a_full_file_is_started_afresh_without_writing_to_the_old_one(ws: Path) -> None:
    append(ws, NAME, NOTE, UID, GID, max_size=len(NOTE) * 2)
    append(ws, NAME, NOTE, UID, GID, max_size=len(NOTE) * 2)
    with open(ws / NAME, "rb") as old:  # the old file, as a reader holding it sees it
        assert append(ws, NAME, b"newest\n", UID, GID, max_size=len(NOTE) * 2) == "started afresh"
        assert old.read() == NOTE * 2
    assert (ws / NAME).read_bytes() == b"newest\n"
    st = (ws / NAME).stat()
    assert (st.st_uid, st.st_nlink) == (UID, 1)
    assert sorted(p.name for p in ws.iterdir()) == [NAME]  # no temporary file left


def test_the_entry_strips_terminal_escapes() -> None:
    text = entry("stop \x1b[2Jnow\x07", datetime(2026, 1, 2, 3, 4)).decode()
    assert text == "--- ds01, 2026-01-02 03:04 ---\nstop [2Jnow\n\n"
