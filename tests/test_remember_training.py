"""train --remember-training (the mail recipe's default): the model keeps a memory of its training
messages (memory.npz, see spamfilter/memory.py); the filter reads it with the model; a later run
without it leaves none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import write_mbox
from support import SHARED_DATA

from spamfilter.cli import cli
from spamfilter.explain import explain_batch
from spamfilter.mail import iter_mail_source
from spamfilter.memory import MEMORY_FILE, WEIGHT, read_memory
from spamfilter.pipeline import message_text
from spamfilter.report import error_report
from spamfilter.runtime import Classifier

CORPUS = SHARED_DATA / "spamassassin"


def _train(root: Path, *options: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["train", "--model", str(root / "config.json"), "--weights", "random", "--epochs", "1"]
        + ["--spam", str(root / "spam.mbox"), "--ham", str(root / "ham.mbox"), "--max-length", "64"]
        + ["--out", str(root / "model"), "--device", "cpu", *options],
    )
    assert result.exit_code == 0, result.output


def test_a_model_remembers_its_training_mail_and_the_filter_reads_it(tmp_path: Path) -> None:
    spam = list(iter_mail_source(CORPUS / "spam.mbox"))[:30]
    ham = list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:70]
    write_mbox(tmp_path / "spam.mbox", spam)
    write_mbox(tmp_path / "ham.mbox", ham)
    (tmp_path / "config.json").write_text(
        json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128})
    )
    _train(tmp_path)  # the mail recipe's default
    model = tmp_path / "model"
    manifest = json.loads((model / "spamfilter.json").read_text())
    assert manifest["recipe"]["remember_training"] is True
    memory = read_memory(model)
    assert len(memory) == manifest["recipe"]["split_sizes"][0]  # the real training messages, no copy
    # The spam behind a page of ham: those of the training split get their +10 from the memory.
    padded = [message_text(ham[-1]) + "\n" + message_text(raw) for raw in spam]
    classifier = Classifier.load(model)
    evidence = classifier.memory_evidence(padded)
    assert evidence is not None
    held = [i for i, found in enumerate(evidence) if found.spam is not None and found.spam.share == 1.0]
    assert len(held) >= 10, "most of the spam are training messages, each held whole"
    with_memory = classifier.spam_probability(padded)
    classifier.use_memory = False
    without = classifier.spam_probability(padded)

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p) - np.log1p(-p)

    moved = logit(with_memory) - logit(without)
    assert np.allclose(moved, [found.shift for found in evidence], atol=1e-6)
    assert np.all(moved[held] >= 0.9 * WEIGHT)  # (a ham of the training split may take a little back)
    # Explanations name it, as the model's memory of its training mail (no date: none was reported).
    classifier.use_memory = True
    explanation = explain_batch(classifier, [padded[held[0]]])[0]
    assert explanation.memory and " holds 100% of a training spam" in explanation.memory[0]
    # ... and so does eval --report's page (these spam filed as ham: they show as false positives)
    for fmt, marker in (("markdown", "| memory \\+10"), ("html", "<li>memory +10")):
        page = error_report(
            [padded[i] for i in held],
            [0] * len(held),
            with_memory[held],
            classifier.threshold,
            classifier,
            fmt=fmt,
        )
        assert marker in page and "of a training spam" in page
    # Trained again into the same folder without it: no memory is left behind to be read.
    _train(tmp_path, "--no-remember-training")
    assert not (model / MEMORY_FILE).exists()
    assert json.loads((model / "spamfilter.json").read_text())["recipe"]["remember_training"] is False
