"""serve --explain: the Report field in PROCESS's tagged message (the same bytes as filter
--explain writes) and REPORT's body (spamc -R) carry the phrases that moved P(spam); SYMBOLS
(spamc -y) names the one rule. Real spamc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_email
from support import require_tool
from support.spamd_server import Server, request, service_in_thread, spamd_request

SPAM = make_email(
    "WIN cash now", "WINNER!! You have won a FREE prize of 1000 cash. Call now to claim, text WIN."
)
HAM = make_email("lunch", "Are we still meeting for lunch tomorrow at noon? Let me know, thanks.")


def spamc(server: Server, message: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    host, port = server.address
    command = [require_tool("spamc", "spamc"), "-d", host, "-p", str(port), *args]
    return subprocess.run(command, input=message, capture_output=True, timeout=300)


def filter_explained(model: Path, message: bytes, policy: str) -> bytes:
    command = [sys.executable, "-m", "spamfilter", "filter", "--format", "email", "-q", "-m", str(model)]
    done = subprocess.run(
        [*command, "--variant", "fp32", "--explain", policy], input=message, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_explained_spam_carries_its_phrases_in_process_and_report(trained_model: Path) -> None:
    with Server(trained_model, "--explain", "spam", "--variant", "fp32") as server:
        tagged = spamc(server, SPAM).stdout
        assert b"X-Spam-Flag: YES" in tagged and b"X-Spam-Report:" in tagged
        assert tagged == filter_explained(trained_model, SPAM, "spam")  # one explanation, same bytes
        report = spamc(server, SPAM, "-R")
        assert b"phrases towards spam" in report.stdout, report.stdout
        assert b"GPT2_SPAM_CLASSIFIER" in spamc(server, SPAM, "-y").stdout
        ham = spamc(server, HAM).stdout
        assert b"X-Spam-Flag: NO" in ham and b"X-Spam-Report:" not in ham  # --explain spam: spam only
        assert b"phrases towards" not in spamc(server, HAM, "-R").stdout


def test_without_explain_nothing_is_explained(trained_model: Path) -> None:
    with Server(trained_model) as server:
        assert b"X-Spam-Report:" not in spamc(server, SPAM).stdout
        assert b"phrases towards" not in spamc(server, SPAM, "-R").stdout


def test_replies_that_show_no_explanation_compute_none(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explanation costs tens of classifications: CHECK and SYMBOLS, whose replies never show
    one, do not make the model worker compute it (20 clients sending spam with CHECK held a
    victim's ham for half a minute); PROCESS still carries it."""
    import asyncio

    from spamfilter.runtime import Classifier
    from spamfilter.service import batcher as batcher_module
    from spamfilter.verdict import Decision

    explained: list[str] = []
    real = batcher_module.explanation_for

    def counted(
        classifier: object, decision: Decision, verdict: object, text: str, user: object = None
    ) -> object:
        explained.append(text)
        return real(classifier, decision, verdict, text, user)  # type: ignore[arg-type]

    monkeypatch.setattr(batcher_module, "explanation_for", counted)
    classifier = Classifier.load(trained_model, variant="fp32")

    async def tag(explain: bool) -> object:
        batcher = batcher_module.MicroBatcher(classifier, 8, 0.001, Decision(explain="all"))
        batcher.start()
        try:
            return await batcher.tag(SPAM, "", explain)
        finally:
            await batcher.stop()

    plain = asyncio.run(tag(False))
    assert explained == [] and getattr(plain, "explanation", None) is None
    assert asyncio.run(tag(True)).explanation is not None and len(explained) == 1  # type: ignore[attr-defined]

    # Through the spamd front end: CHECK and SYMBOLS ask for none, REPORT for one.
    from spamfilter.service.access import parse_address, parse_networks
    from spamfilter.service.settings import ServiceSettings

    explained.clear()
    settings = ServiceSettings(
        listen=[parse_address("127.0.0.1:0")], allow=parse_networks(()), decision=Decision(explain="all")
    )
    with service_in_thread(settings, classifier) as bound:
        host, port = bound[0].rsplit(":", 1)
        for command in ("CHECK", "SYMBOLS"):
            assert request((host, int(port)), spamd_request(command, SPAM)).startswith(b"SPAMD/1.1 0 EX_OK")
        assert explained == []
        assert b"phrases towards" in request((host, int(port)), spamd_request("REPORT", SPAM))
        assert len(explained) == 1


def test_an_explanation_holds_no_other_message(trained_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explanations ran on the model's one worker after each batch: a client sending spam with
    PROCESS (or REPORT) kept it busy for seconds per message, and everyone else's verdicts waited
    behind. Now a verdict waits only for its own explanation, on a thread of its own."""
    import asyncio
    import threading

    from spamfilter.runtime import Classifier
    from spamfilter.service import batcher as batcher_module
    from spamfilter.verdict import Decision

    release = threading.Event()
    real = batcher_module.explanation_for

    def slow(
        classifier: object, decision: Decision, verdict: object, text: str, user: object = None
    ) -> object:
        release.wait(60)  # an explanation that takes as long as the test wants
        return real(classifier, decision, verdict, text, user)  # type: ignore[arg-type]

    monkeypatch.setattr(batcher_module, "explanation_for", slow)
    classifier = Classifier.load(trained_model, variant="fp32")
    ham = make_email("lunch", "Are we still meeting for lunch tomorrow at noon?")

    async def scenario() -> tuple[object, object, bool]:
        batcher = batcher_module.MicroBatcher(classifier, 8, 0.001, Decision(explain="all"))
        batcher.start()
        try:
            explained = asyncio.ensure_future(batcher.tag(SPAM, "", True))
            await asyncio.sleep(0.5)  # its batch classified; its explanation under way
            plain = await asyncio.wait_for(batcher.tag(ham, "", False), 20)
            waiting = not explained.done()
            release.set()
            return plain, await explained, waiting
        finally:
            release.set()
            await batcher.stop()

    plain, explained, waiting = asyncio.run(scenario())
    assert waiting and getattr(plain, "error", "x") is None and getattr(plain, "verdict", None) is not None
    assert getattr(explained, "explanation", None) is not None and b"X-Spam-Report" in explained.message  # type: ignore[attr-defined]


def test_a_flood_of_explanations_delays_another_client_only_so_long(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explanation thread serves one at a time, first come first served: a client sending 24
    spam with --explain made another client's spam wait 21 s for its reply (spamc's and Exim's
    timeouts then pass the mail untagged). An explanation that cannot start within
    EXPLANATION_START_WAIT of its verdict is now left out, so the reply comes with the verdict
    alone, and the stale ones before it cost nothing. Here explanations take 1 s each, the wait
    is 0.5 s: behind ten, a reply came after 11 s; now within about 0.5 s + two explanations."""
    import asyncio
    import time

    from spamfilter.runtime import Classifier
    from spamfilter.service import batcher as batcher_module
    from spamfilter.verdict import Decision

    def slow(
        classifier: object, decision: Decision, verdict: object, text: str, user: object = None
    ) -> object:
        time.sleep(1.0)
        return None  # what a failed explanation gives: the verdict alone

    monkeypatch.setattr(batcher_module, "explanation_for", slow)
    monkeypatch.setattr(batcher_module, "EXPLANATION_START_WAIT", 0.5)
    classifier = Classifier.load(trained_model, variant="fp32")
    skipped: list[int] = []

    async def scenario() -> tuple[float, object, int]:
        batcher = batcher_module.MicroBatcher(classifier, 8, 0.001, Decision(explain="all"))
        batcher.on_explanation_skipped = lambda: skipped.append(1)
        batcher.start()
        try:
            flood = [asyncio.ensure_future(batcher.tag(SPAM, "", True)) for _ in range(10)]
            await asyncio.sleep(0.2)
            began = time.monotonic()
            victim = await asyncio.wait_for(batcher.tag(SPAM, "", True), 30)
            waited = time.monotonic() - began
            await asyncio.gather(*flood)
            return waited, victim, batcher.explanations_skipped
        finally:
            await batcher.stop()

    waited, victim, count = asyncio.run(scenario())
    assert waited < 5.0, waited  # FIFO: at least 10 s
    assert getattr(victim, "error", "x") is None and getattr(victim, "verdict", None) is not None
    assert count >= 8 and len(skipped) == count  # the stale ones were skipped, each one said
