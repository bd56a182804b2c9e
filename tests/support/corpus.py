"""Real mail from the SpamAssassin public corpus beside the project, picked for what a test needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from spamfilter.mail import iter_mail_source
from spamfilter.pipeline import message_text
from spamfilter.runtime import Classifier

from . import SHARED_DATA

CORPUS = SHARED_DATA / "spamassassin"


def email_false_positive(model: Path) -> bytes:
    """A real ham email that ``model`` marks as spam (the session's SMS model marks most real
    email as spam: a real false positive to correct)."""
    classifier = Classifier.load(model)
    for raw in iter_mail_source(CORPUS / "easy_ham.mbox"):
        if classifier.spam_probability([message_text(raw)])[0] >= classifier.threshold:
            return raw
    pytest.fail("the SMS model marked no easy_ham message as spam")
