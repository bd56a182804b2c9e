"""A user's head survives kill -9 of its writer: killed at any instant, the head file holds the
old head or the new one, whole, never a torn one, and the store still reads. Killed writers'
scratch files are removed by the next write. Two writers: a process saving two large heads in
turn as fast as it can (so that the kills land inside writes), and the real ``spamfilter learn
--user``."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from support import SHARED_DATA

from spamfilter.head import Head
from spamfilter.mail import iter_mail_source
from spamfilter.replacefile import SCRATCH_PREFIX
from spamfilter.user_heads import HEAD_FILE, UserHead, UserHeads, _read_head

ALICE = "alice@example.org"
WIDTH = 1_000_000  # 2 x 1M float32: 8 MB a head, a write long enough to be killed inside

SAVER = f"""
import sys
import numpy as np
from pathlib import Path
from spamfilter.head import Head
from spamfilter.user_heads import UserHead, UserHeads
heads = UserHeads(Path(sys.argv[1]))
versions = [
    UserHead(Head(np.full((2, {WIDTH}), v, np.float32), np.full(2, v, np.float32)), 0.5, f"trunk{{v}}")
    for v in (1, 2)
]
heads.save({ALICE!r}, versions[0])
print("saved", flush=True)
turn = 1
while True:
    heads.save({ALICE!r}, versions[turn % 2])
    turn += 1
"""


def whole_version(path: Path) -> int:
    """Which of the saver's two heads ``path`` holds; fails on anything else."""
    head = _read_head(path)
    assert head is not None, f"{path} does not read as a head (torn?)"
    version = int(head.head.bias[0])
    assert version in (1, 2) and head.trunk == f"trunk{version}"
    assert np.all(head.head.weight == version) and np.all(head.head.bias == version)
    assert head.head.weight.shape == (2, WIDTH)
    return version


def test_a_head_written_over_and_over_and_killed_is_always_whole(tmp_path: Path) -> None:
    model = tmp_path / "model"  # only users/ is written: no model is needed for the store itself
    model.mkdir()
    heads = UserHeads(model)
    found, scratch_left = set(), 0
    for delay in np.linspace(0.0, 0.4, 12):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(model)], stdout=subprocess.PIPE)
        assert saver.stdout is not None and saver.stdout.readline() == b"saved\n"
        time.sleep(float(delay))
        saver.send_signal(signal.SIGKILL)
        assert saver.wait(30) == -signal.SIGKILL
        saver.stdout.close()
        found.add(whole_version(heads.folder(ALICE) / HEAD_FILE))
        assert heads.users() == [ALICE]  # user.json reads too
        scratch_left += len(list(heads.folder(ALICE).glob(f"{SCRATCH_PREFIX}*")))
    print(f"versions found after the kills: {sorted(found)}; scratch files left by them: {scratch_left}")
    # The next write (this process) removes what the killed writers left, and nothing else.
    stranger = heads.folder(ALICE) / "notes.txt"
    stranger.write_text("not ours")
    heads.save(ALICE, UserHead(Head(np.zeros((2, 4)), np.zeros(2)), 0.5, "trunk"))
    assert not list(heads.folder(ALICE).glob(f"{SCRATCH_PREFIX}*"))
    assert stranger.read_text() == "not ours"


def test_a_torn_or_empty_head_file_reads_as_no_head(tmp_path: Path) -> None:
    heads = UserHeads(tmp_path)
    heads.save(ALICE, UserHead(Head(np.ones((2, 8)), np.ones(2)), 0.5, "trunk"))
    path = heads.folder(ALICE) / HEAD_FILE
    whole = path.read_bytes()
    for damaged in (b"", whole[: len(whole) // 2], b"PK\x03\x04" + b"\0" * 40):
        path.write_bytes(damaged)
        heads.invalidate()
        assert heads.head(ALICE) is None  # the shared verdict, not an exception in the scoring worker


def mbox(path: Path, messages: list[bytes]) -> Path:
    path.write_bytes(b"".join(b"From someone Mon Jan  1 00:00:00 2024\n" + raw + b"\n" for raw in messages))
    return path


def head_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, float, str] | None:
    if not path.exists():
        return None
    head = _read_head(path)
    assert head is not None, f"{path} does not read as a head (torn?)"
    return head.head.weight, head.head.bias, head.threshold, head.trunk


def same_head(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.allclose(a[0], b[0], atol=1e-6) and np.allclose(a[1], b[1], atol=1e-6) and a[2:] == b[2:])


def test_learn_user_killed_at_any_point_leaves_the_old_head_or_the_new_one(
    model_copy: Path, tmp_path: Path
) -> None:
    ham = list(iter_mail_source(SHARED_DATA / "spamassassin" / "easy_ham.mbox"))[:12]
    first, more = mbox(tmp_path / "first.mbox", ham[:4]), mbox(tmp_path / "more.mbox", ham[4:])
    learn = [sys.executable, "-m", "spamfilter", "learn", "-m", str(model_copy), "--user", ALICE]
    done = subprocess.run([*learn, "--ham", str(first)], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    heads = UserHeads(model_copy)
    path = heads.folder(ALICE) / HEAD_FILE
    old = head_arrays(path)
    assert old is not None
    # The same run to the end, in a copy: the new head (the training is deterministic).
    reference = Path(shutil.copytree(model_copy, tmp_path / "reference"))
    learn_more = [*learn, "--ham", str(more), "--retrain"]  # --retrain: even when a killed run kept them
    started = time.monotonic()
    done = subprocess.run(
        [arg if arg != str(model_copy) else str(reference) for arg in learn_more],
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    seconds = time.monotonic() - started
    new = head_arrays(UserHeads(reference).folder(ALICE) / HEAD_FILE)
    assert new is not None and not same_head(old, new)
    found = []
    # Killed after a share of the reference run's time (loading, filing, training, saving), and
    # once the moment its scratch file for the head appears (inside the write).
    for share in (0.5, 0.9, 1.0, 1.2, None):
        run = subprocess.Popen(learn_more, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if share is None:
            while run.poll() is None and not list(path.parent.glob(f"{SCRATCH_PREFIX}{run.pid}-*")):
                time.sleep(0.0005)
            run.send_signal(signal.SIGKILL)
        else:
            try:
                run.wait(seconds * share)
            except subprocess.TimeoutExpired:
                run.send_signal(signal.SIGKILL)
        run.wait(60)
        now = head_arrays(path)
        assert same_head(now, old) or same_head(now, new), f"killed at {share}: neither head"
        found.append(f"{share}: {'old' if same_head(now, old) else 'new'}, exit {run.returncode}")
        assert heads.users() == [ALICE]
        assert all(correction.read_bytes() for _, _, correction in heads.corrections(ALICE))
        if same_head(now, new):  # back to the old head for the next kill
            heads.save(ALICE, UserHead(Head(old[0], old[1]), old[2], old[3]))
    print(f"after each kill: {found}")
    done = subprocess.run(learn_more, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert same_head(head_arrays(path), new)
    assert not list(heads.folder(ALICE).glob(f"{SCRATCH_PREFIX}*"))
