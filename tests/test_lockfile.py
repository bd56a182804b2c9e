"""Lock files and folders of corrections that other local users cannot use against the service.

A lock file readable by every local user let any of them ``flock`` it and hang every TELL (and
every retrain) for as long as they liked: it is created 0660 at most, an old one readable by
others loses those bits, and a symbolic link in its place is refused."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from spamfilter.corrections import CORRECTIONS_DIR, LOCK_FILE, Corrections
from spamfilter.errors import SpamfilterError
from spamfilter.learn import LOCK_FILE as LEARN_LOCK
from spamfilter.learn import _exclusive
from spamfilter.lockfile import locked

MESSAGE = b"Subject: hi\n\nWin a prize now\n"


def other_bits(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode) & 0o007


@pytest.fixture(autouse=True)
def usual_umask() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_corrections_lock_and_folders_are_closed_to_other_users(tmp_path: Path) -> None:
    Corrections(tmp_path).add(MESSAGE, 1, teacher="peer", quota=None)
    root = tmp_path / CORRECTIONS_DIR
    for path in (root / LOCK_FILE, root, root / "spam"):
        assert other_bits(path) == 0, f"{path} is {oct(path.lstat().st_mode)}"
    with _exclusive(tmp_path):
        pass
    assert other_bits(tmp_path / LEARN_LOCK) == 0


def test_a_lock_file_left_open_to_others_is_closed(tmp_path: Path) -> None:
    root = tmp_path / CORRECTIONS_DIR
    root.mkdir()
    (root / LOCK_FILE).touch(mode=0o644)
    os.chmod(root / LOCK_FILE, 0o644)  # as the release before this one left it
    Corrections(tmp_path).add(MESSAGE, 0)
    assert stat.S_IMODE((root / LOCK_FILE).stat().st_mode) == 0o640


def test_a_descriptor_of_the_old_lock_holds_nothing(tmp_path: Path) -> None:
    """Whoever opened the old 0644 lock before the upgrade keeps that descriptor: closing the mode
    left their flock on it blocking every TELL. The lock file is replaced instead."""
    lock = tmp_path / "lock"
    lock.touch()
    os.chmod(lock, 0o644)
    held = os.open(lock, os.O_RDONLY)  # another user's, opened while it was readable
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with locked(lock, wait=False):
            assert other_bits(lock) == 0
            with pytest.raises(BlockingIOError), locked(lock, wait=False):
                pass  # the new file is the lock: still one holder at a time
    finally:
        os.close(held)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lock"]  # no scratch file left


def test_a_symbolic_link_in_place_of_the_lock_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "lock").symlink_to(target)
    with pytest.raises(SpamfilterError, match="cannot open the lock file"), locked(tmp_path / "lock"):
        pass
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_hold_the_lock() -> None:
    """The attack itself: user nobody opens the lock file to flock it (it could before). The model
    directory lies in a folder every user may pass through, as a service's usually does."""
    folder = Path(tempfile.mkdtemp(prefix="spamfilter-lock-"))
    try:
        folder.chmod(0o755)
        Corrections(folder).add(MESSAGE, 1)
        (folder / CORRECTIONS_DIR).chmod(0o755)  # as an older release left it: the file's own mode
        lock = folder / CORRECTIONS_DIR / LOCK_FILE
        probe = "import sys\ntry:\n    open(sys.argv[1])\nexcept PermissionError:\n    sys.exit(3)\n"
        python = shutil.which("python3", path="/usr/bin:/bin")  # root's own Python may be private
        assert python is not None
        done = subprocess.run(
            [python, "-c", probe, str(lock)], user=65534, group=65534, extra_groups=[], timeout=60
        )
        assert done.returncode == 3
    finally:
        shutil.rmtree(folder)
