"""A model directory changes as a whole: a retrain killed (SIGKILL) at any of its steps leaves a
directory that loads and filters as the old model or as the new one, and the next update removes
what the killed one left (staging folders, files of the model it replaced).

The retrain runs in a process of its own that kills itself at its Nth change to the model directory
(a rename, a removal, a folder made or removed there), for every N until one finishes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spamfilter.corrections import Corrections
from spamfilter.export import GENERATED, STAGING_PREFIX, readable_manifest, referenced_files
from spamfilter.learn import retrain
from spamfilter.mail import iter_mail_source
from spamfilter.modeldir import open_model_directory
from spamfilter.pipeline import message_text
from spamfilter.runtime import Classifier

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spamassassin"
MAX_STEPS = 200  # a retrain changes the directory far fewer times than this

# Runs retrain(DIR), killing itself with SIGKILL at its STEP-th change to DIR's own entries.
KILLED_AT = """
import os, signal, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
folder, step = os.path.realpath(sys.argv[1]), int(sys.argv[2])
count = 0


def counted(function):
    def changed(*args, **kwargs):
        global count
        paths = [os.path.realpath(os.fspath(a)) for a in args if isinstance(a, (str, os.PathLike))]
        if any(os.path.dirname(path) == folder for path in paths):
            count += 1
            if count == step:
                os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return changed


from spamfilter.learn import retrain

for name in ("replace", "rename", "unlink", "rmdir", "mkdir"):
    setattr(os, name, counted(getattr(os, name)))
retrain(Path(folder))
print("finished at", count)
"""


def _retrain_killed_at(model: Path, step: int) -> subprocess.CompletedProcess[str]:
    """retrain(model) in a process that kills itself at its ``step``-th change (0: never)."""
    return subprocess.run(
        [sys.executable, "-c", KILLED_AT, str(model), str(step)], capture_output=True, text=True
    )


def _scores(model: Path, texts: list[str]) -> np.ndarray:
    open_model_directory(model)
    return Classifier.load(model).spam_probability(texts)


def _one_of(scores: np.ndarray, choices: list[np.ndarray]) -> bool:
    return any(np.allclose(scores, choice, rtol=0, atol=1e-5) for choice in choices)


@pytest.fixture()
def with_corrections(trained_model: Path, tmp_path: Path) -> Path:
    """A copy of the session's model with corrections waiting: real ham mail the SMS model calls
    spam, the three it calls spam least surely (a retrain that learns them is accepted: this file
    tests how the directory changes, not whether a correction is learnable)."""
    model = Path(shutil.copytree(trained_model, tmp_path / "pristine"))
    classifier = Classifier.load(model)
    raws = list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:200]
    scores = classifier.spam_probability([message_text(raw) for raw in raws])
    flagged = [i for i in np.argsort(scores) if scores[i] >= classifier.threshold]
    if len(flagged) < 3:
        pytest.fail("the SMS model marked too few easy_ham messages as spam")
    corrections = Corrections(model)
    for i in flagged[:3]:
        corrections.add(raws[i], 0)
    return model


def test_a_killed_retrain_leaves_the_old_model_or_the_new_one(with_corrections: Path, tmp_path: Path) -> None:
    texts = [message_text(raw) for raw in list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:20]]
    old = _scores(with_corrections, texts)
    # The new model as the killed processes would write it (one torch thread: the sums of more
    # threads may round differently).
    finished = Path(shutil.copytree(with_corrections, tmp_path / "finished"))
    _retrain_killed_at(finished, step=0)
    new = _scores(finished, texts)
    assert not _one_of(old, [new]), "the retrain changed nothing: the test could not tell them apart"

    leftovers = None
    for step in range(1, MAX_STEPS):
        model = tmp_path / f"killed-{step}"
        shutil.copytree(with_corrections, model)
        run = _retrain_killed_at(model, step)
        if run.returncode == 0:
            assert "finished at" in run.stdout
            break
        assert run.returncode == -9, run.stderr
        assert _one_of(_scores(model, texts), [old, new]), f"killed at step {step}: neither model"
        if leftovers is None and any(entry.name.startswith(STAGING_PREFIX) for entry in model.iterdir()):
            leftovers = model  # the first: killed before the switch, its next retrain starts from old
        else:
            shutil.rmtree(model)
    else:
        pytest.fail(f"the retrain did not finish within {MAX_STEPS} steps")
    assert step > 5, f"only {step - 1} kill points: the hook did not see the directory's changes"

    # The next update removes what a killed one left: its staging folder and unused model files.
    assert leftovers is not None, "no kill left a staging folder behind"
    assert _retrain_killed_at(leftovers, step=0).returncode == 0
    assert _one_of(_scores(leftovers, texts), [new])
    names = {entry.name for entry in leftovers.iterdir()}
    manifest = readable_manifest(leftovers)
    assert manifest is not None
    assert not [name for name in names if name.startswith(STAGING_PREFIX)]
    assert {name for name in names if GENERATED.fullmatch(name)} == referenced_files(manifest)


def test_an_update_never_removes_what_is_not_its_own(with_corrections: Path) -> None:
    """Only entries of its own naming that are real files or folders: a link named like a model
    file, or like a staging folder, and what it points to, stay."""
    outside = with_corrections.parent / "outside"
    (outside / "kept").mkdir(parents=True)
    (outside / "kept" / "file").write_bytes(b"keep\n")
    (outside / "model.onnx").write_bytes(b"keep\n")
    links = {
        with_corrections / "model.int8.g0badf00d.onnx": outside / "model.onnx",
        with_corrections / f"{STAGING_PREFIX}1-abc": outside / "kept",
    }
    for link, target in links.items():
        link.symlink_to(target)
    (with_corrections / "notes.onnx").write_bytes(b"the user's\n")
    retrain(with_corrections)
    for link, target in links.items():
        assert link.is_symlink() and target.exists()
    assert (outside / "kept" / "file").read_bytes() == b"keep\n"
    assert (with_corrections / "notes.onnx").is_file()
    assert os.path.isfile(outside / "model.onnx")
