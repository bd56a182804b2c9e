"""Exim's ``spam =`` ACL condition against ``spamfilter serve``: ``exim -bh`` runs a whole SMTP
session through a DATA ACL (Debian's exim4-daemon-heavy, which CI installs) without a running MTA;
see exim_harness.py. Exim sends ``REPORT SPAMC/1.2`` and parses only spamd's 1.2 reply shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_email
from support import unavailable
from support.exim_harness import closed_port, exim_spam_check, exim_supports_spam
from support.spamd_server import Server

from spamfilter.pipeline import tag_message
from spamfilter.runtime import Classifier
from spamfilter.verdict import sa_score

SPAM = make_email("You have WON", "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now")
HAM = make_email("lunch", "Are we still meeting for lunch tomorrow at noon? I'll bring the notes.")


@pytest.fixture(scope="module", autouse=True)
def exim() -> None:
    if not exim_supports_spam():
        reason = "exim with content scanning is not installed (Debian: apt-get install exim4-daemon-heavy)"
        unavailable(reason)


@pytest.fixture(scope="module")
def server(trained_model: Path):
    with Server(trained_model) as running:
        yield running


def test_spam_is_refused_and_ham_accepted_with_our_scores(
    server: Server, trained_model: Path, tmp_path: Path
) -> None:
    classifier = Classifier.load(trained_model)
    address = f"127.0.0.1:{server.port}"
    for message, refused in ((SPAM, True), (HAM, False)):
        result = exim_spam_check(message, address, tmp_path)
        assert result.completed and result.scanned, result.describe()
        # Exim scans the message as it received it (with its Received: and envelope lines), so
        # the expected score comes from that exact text, the .eml the harness kept.
        p = float(tag_message(result.mbox, lambda: classifier).probability or 0.0)
        score, required = sa_score(p, classifier.threshold), 5.0
        assert result.spam_score_int == round(10 * score), result.describe()
        assert result.matched is refused and (p >= classifier.threshold) is refused, result.describe()
        assert result.data_code == (550 if refused else 250), result.describe()
        assert result.spam_action == ("reject" if refused else "no action")
        assert "GPT2_SPAM_CLASSIFIER" in (result.spam_report or "")
        assert required == 5.0


def test_server_down_defers_unless_defer_ok(trained_model: Path, tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    deferred = exim_spam_check(SPAM, address, tmp_path)
    assert deferred.data_code == 451, deferred.describe()
    accepted = exim_spam_check(SPAM, address, tmp_path, defer_ok=True)
    assert accepted.data_code == 250 and not accepted.scanned, accepted.describe()
