"""``spamfilter serve`` against real spamd clients: Debian's ``spamc`` and the ``aiospamc`` library,
and raw requests in every protocol version spamd answers.

spamc comes from Debian's ``spamc`` package (CI installs it, .ci/run); missing, it fails the test in
CI and is skipped with the reason elsewhere. Every server runs the session's small real model.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiospamc
import aiospamc.responses
import pytest
from conftest import make_email, split_messages
from hypothesis import given
from hypothesis import strategies as st
from support import require_tool
from support.spamd_server import Server, filter_email, request, spamd_request

from spamfilter.pipeline import tag_message
from spamfilter.runtime import Classifier
from spamfilter.verdict import Decision, sa_score
from spamfilter.windows import MAX_WINDOWS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "spamassassin"
SPAM = make_email("You have WON", "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now")
HAM = make_email("lunch", "Are we still meeting for lunch tomorrow at noon? I'll bring the notes.")
CRLF_HAM = make_email("crlf", "See you at the station at six, the train leaves at 6:20.", newline="\r\n")
ALREADY_TAGGED = make_email(
    "tagged before",
    "Call 09061701461 now to claim your prize",
    extra="X-Spam-Flag: YES\nX-Spam-Status: Yes\n",
)
MBOX_STYLE = b"From sender@example.org  Mon Mar  4 09:12:45 2024\n" + HAM
MESSAGES = [SPAM, HAM, CRLF_HAM, ALREADY_TAGGED, MBOX_STYLE]
CHECK_LINE = re.compile(rb"^(-?\d+\.\d)/(\d+\.\d)\n$")


@pytest.fixture(scope="module")
def server(trained_model: Path):
    with Server(trained_model, "--metrics", "127.0.0.1:0", "--batch-wait-ms", "20") as running:
        yield running


@pytest.fixture(scope="module")
def classifier(trained_model: Path) -> Classifier:
    return Classifier.load(trained_model)


@pytest.fixture(scope="module")
def spamc() -> str:
    return require_tool("spamc", "spamc")


def run_spamc(spamc: str, server: Server, message: bytes, *options: str) -> subprocess.CompletedProcess:
    host, port = server.address
    return subprocess.run(
        [spamc, "-d", host, "-p", str(port), *options], input=message, capture_output=True, timeout=60
    )


# --------------------------------------------------------------------------- spamc


def test_ping(spamc: str, server: Server) -> None:
    done = run_spamc(spamc, server, b"", "-K")
    assert done.returncode == 0
    assert done.stdout.startswith(b"SPAMD/1.5 0"), done.stdout


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_process_is_byte_identical_to_filter(
    spamc: str, server: Server, trained_model: Path, index: int
) -> None:
    message = MESSAGES[index]
    # The default variant (int8) on both sides: one message a model call here (one spamc at a
    # time) as in pipeline mode, so the same rows meet the same kernels on any CPU. Comparisons of
    # messages batched differently use fp32 (the 50 clients below).
    done = run_spamc(spamc, server, message)
    assert done.returncode == 0, done.stderr
    assert done.stdout == filter_email(trained_model, message)
    assert done.stdout != message  # tagged
    assert done.stdout.count(b"X-Spam-Flag:") == 1


def test_check_prints_score_over_threshold_with_the_verdict_as_exit_code(
    spamc: str, server: Server, classifier: Classifier
) -> None:
    for message in (SPAM, HAM):
        p = float(tag_message(message, lambda: classifier).probability or 0.0)
        done = run_spamc(spamc, server, message, "-c")
        shown = CHECK_LINE.match(done.stdout)
        assert shown is not None, done.stdout
        score, required = float(shown.group(1)), float(shown.group(2))
        assert (score, required) == (sa_score(p, classifier.threshold), 5.0)
        assert required == 5.0
        assert done.returncode == (1 if p >= classifier.threshold else 0)
        assert (score >= required) == (p >= classifier.threshold)
    # The corpus's two classes both occur, so the exit codes above are not all one value.
    assert tag_message(SPAM, lambda: classifier).spam is True
    assert tag_message(HAM, lambda: classifier).spam is False


def test_exit_code_option_and_report_and_symbols(spamc: str, server: Server) -> None:
    processed = run_spamc(spamc, server, SPAM, "-E")
    assert processed.returncode == 1 and b"X-Spam-Flag: YES" in processed.stdout
    assert run_spamc(spamc, server, HAM, "-E").returncode == 0

    report = run_spamc(spamc, server, SPAM, "-R")
    assert report.returncode == 0  # spamc gives the verdict as exit code with -c and -E only
    first, _, rest = report.stdout.partition(b"\n")
    assert CHECK_LINE.match(first + b"\n")
    assert b"Content analysis details:" in rest and b"GPT2_SPAM_CLASSIFIER" in rest

    symbols = run_spamc(spamc, server, SPAM, "-y")
    assert symbols.stdout.strip() == b"GPT2_SPAM_CLASSIFIER"


def test_headers_and_randomized_hosts(spamc: str, server: Server, trained_model: Path) -> None:
    # --headers: spamd returns the new header block; spamc puts the body back.
    headers = run_spamc(spamc, server, HAM, "--headers")
    assert headers.stdout == filter_email(trained_model, HAM)
    # -H shuffles the server's addresses (one here): the request goes through as usual.
    assert run_spamc(spamc, server, HAM, "-H").stdout == headers.stdout


def test_safe_fallback_when_the_server_is_down(spamc: str, trained_model: Path) -> None:
    with Server(trained_model) as gone:
        address = gone.address
    done = subprocess.run(
        [spamc, "-d", address[0], "-p", str(address[1])], input=SPAM, capture_output=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, SPAM)  # delivered untagged
    strict = subprocess.run(
        [spamc, "-x", "-d", address[0], "-p", str(address[1])], input=SPAM, capture_output=True, timeout=60
    )
    assert strict.returncode == 69 and strict.stdout == b""  # -x: EX_UNAVAILABLE, nothing written


def test_error_reply_means_untagged_delivery(spamc: str, server: Server) -> None:
    # An empty message is not tagged (as with filter): spamd's error reply, spamc's fallback.
    done = run_spamc(spamc, server, b"\n")
    assert (done.returncode, done.stdout) == (0, b"\n")
    strict = run_spamc(spamc, server, b"\n", "-x")
    # spamc reads on past spamd's one-line error reply and meets the end: EX_IOERR, as with spamd.
    assert (strict.returncode, strict.stdout) == (74, b"")


def test_fifty_concurrent_spamc_clients_over_the_spamassassin_corpus(spamc: str, trained_model: Path) -> None:
    messages: list[bytes] = []
    for name in ("easy_ham.mbox", "hard_ham.mbox", "spam.mbox"):
        path = SHARED / name
        if not path.is_file():
            pytest.fail(f"shared data missing: {path}")
        messages += split_messages(path.read_bytes())
    assert len(messages) == 3250
    # fp32: int8 scales its activations per model call, so a message's last digits of P(spam) depend
    # on which concurrent messages share its batch; fp32's do not, and every byte can be compared.
    fp32 = Classifier.load(trained_model, variant="fp32")
    expected = [tag_message(message, lambda: fp32).message for message in messages]
    with Server(trained_model, "--log-interval", "60", "--variant", "fp32") as running:
        with ThreadPoolExecutor(50) as pool:
            outputs = list(pool.map(lambda m: run_spamc(spamc, running, m, "-x", "-s", "600000"), messages))
        assert running.stop() == 0
    failed = [i for i, done in enumerate(outputs) if done.returncode != 0]
    assert not failed, outputs[failed[0]].stderr
    different = [i for i, done in enumerate(outputs) if done.stdout != expected[i]]
    assert not different, f"{len(different)} messages differ from filter's output, e.g. #{different[0]}"
    spam = sum(b"\nX-Spam-Flag: YES" in b"\n" + out.stdout for out in outputs)
    assert 0 < spam < len(messages)
    # filter itself, for a sample: the library call above is what `filter --format email` runs.
    for index in (0, 2600, 3249):
        assert outputs[index].stdout == filter_email(trained_model, messages[index], "--variant", "fp32")


# --------------------------------------------------------------------------- aiospamc


def test_aiospamc_ping_process_compressed_headers_and_tell(server: Server, trained_model: Path) -> None:
    host, port = server.address

    async def talk() -> None:
        pong = await aiospamc.ping(host=host, port=port)
        assert (pong.status_code, pong.message, str(pong.version)) == (0, "PONG", "1.5")
        processed = await aiospamc.process(SPAM, host=host, port=port, compress=True, user="alice")
        assert processed.body == filter_email(trained_model, SPAM)
        spam_header = processed.headers["Spam"]
        assert spam_header.value is True and spam_header.threshold == 5.0
        headers = await aiospamc.headers(HAM, host=host, port=port)
        assert headers.body == filter_email(trained_model, HAM).split(b"\n\n")[0] + b"\n\n"
        with pytest.raises(aiospamc.responses.UnavailableException, match="TELL"):
            await aiospamc.tell(SPAM, "spam", set_action="local", host=host, port=port)

    asyncio.run(talk())


# --------------------------------------------------------------------------- the protocol by hand


def test_reply_shapes_follow_the_protocol_version(server: Server, trained_model: Path) -> None:
    tagged = filter_email(trained_model, SPAM)
    v13 = request(server.address, spamd_request("PROCESS", SPAM, "1.5"))
    assert v13.startswith(b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; " % len(tagged))
    assert v13.endswith(b"\r\n\r\n" + tagged)
    # 1.2: Content-length, no Spam header (Exim and old spamc parse exactly this).
    v12 = request(server.address, spamd_request("PROCESS", SPAM, "1.2"))
    assert v12 == b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n\r\n" % len(tagged) + tagged
    # 1.0: no headers either way; the message ends where the client half-closes.
    v10 = request(server.address, b"PROCESS SPAMC/1.0\r\n" + SPAM)
    assert v10 == b"SPAMD/1.0 0 EX_OK\r\n" + tagged
    # Exim's REPORT SPAMC/1.2: the Spam line right after the status line, then the report.
    report = request(server.address, spamd_request("REPORT", SPAM, "1.2", User="nobody"))
    assert re.match(rb"SPAMD/1.1 0 EX_OK\r\nSpam: True ; \d+\.\d / 5\.0\r\n\r\n\S", report), report
    symbols = request(server.address, spamd_request("SYMBOLS", SPAM, "1.2"))
    assert symbols.endswith(b"\r\n\r\nGPT2_SPAM_CLASSIFIER\r\n")
    symbols13 = request(server.address, spamd_request("SYMBOLS", SPAM, "1.5"))
    assert symbols13.endswith(b"\r\n\r\nGPT2_SPAM_CLASSIFIER")
    # REPORT_IFSPAM says Yes/No (not True/False) and sends no report for a message that is not spam.
    ifspam = request(server.address, spamd_request("REPORT_IFSPAM", HAM, "1.5"))
    assert re.match(rb"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; \d+\.\d / 5\.0\r\n\r\n$", ifspam)
    assert request(server.address, b"PING SPAMC/1.2\r\n", shut=False) == b"SPAMD/1.5 0 PONG\r\n"
    assert request(server.address, spamd_request("SKIP")) == b""


def test_zlib_bodies_and_their_limits(trained_model: Path) -> None:
    with Server(trained_model, "--max-size", "20000") as small:
        packed = zlib.compress(SPAM)
        reply = request(small.address, spamd_request("CHECK", packed, Compress="zlib"))
        assert reply.startswith(b"SPAMD/1.1 0 EX_OK\r\nSpam: True")
        bomb = zlib.compress(b"x" * 5_000_000)  # 5 MB inflated, a few KB sent
        refused = request(small.address, spamd_request("CHECK", bomb, Compress="zlib"))
        assert refused.startswith(b"SPAMD/1.0 69 Service Unavailable: inflated message of 20001 bytes")
        broken = request(small.address, spamd_request("CHECK", packed[:-6], Compress="zlib"))
        assert broken.startswith(b"SPAMD/1.0 69 Service Unavailable: zlib")
        gzip = request(small.address, spamd_request("CHECK", packed, Compress="gzip"))
        assert gzip.startswith(b"SPAMD/1.0 76 Bad header line: (compression type not supported")
        no_length = request(small.address, b"CHECK SPAMC/1.5\r\nCompress: zlib\r\n\r\n" + packed)
        assert no_length.startswith(b"SPAMD/1.0 69 Service Unavailable: Compress requires Content-length")
        assert small.stop() == 0


@given(p=st.floats(0, 1), q=st.floats(0, 1), threshold=st.floats(0, 1))
def test_spamd_score_reads_as_the_verdict(p: float, q: float, threshold: float) -> None:
    score, required = sa_score(p, threshold), Decision(threshold).verdict(p).required
    assert required == 5.0  # what rspamd's scanner and Exim rules written for SpamAssassin expect
    assert (score >= required) == (p >= threshold)  # Exim's and spamc's test agree with ours
    assert 0 <= score <= 10 and round(score, 1) == score
    if p <= q:
        assert score <= sa_score(q, threshold)  # a higher P never reads as a lower score
    if threshold == 0.5:
        assert abs(score - 10 * p) < 0.1 + 1e-6  # the default threshold: ten times P


# --------------------------------------------------------------------------- batching, metrics


def test_concurrent_requests_share_model_calls_and_metrics_count_them(server: Server) -> None:
    def metrics() -> str:
        with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=30) as answer:
            return answer.read().decode()

    def value(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = metrics()
    messages = [make_email(f"note {i}", f"message number {i} about the meeting") for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(lambda m: request(server.address, spamd_request("CHECK", m)), messages))
    assert all(reply.startswith(b"SPAMD/1.1 0 EX_OK") for reply in replies)
    after = metrics()
    calls = value(after, "spamfilter_batch_size_count") - value(before, "spamfilter_batch_size_count")
    classified = value(after, "spamfilter_batch_size_sum") - value(before, "spamfilter_batch_size_sum")
    assert classified == 24
    assert calls < 24, "24 concurrent messages took 24 model calls: nothing was batched"
    counted = 'spamfilter_requests_total{command="CHECK",outcome="ok"}'
    assert value(after, counted) - value(before, counted) == 24
    assert "spamfilter_request_seconds_bucket" in after and "spamfilter_model_info{" in after
    # A message longer than the model's window is read in several windows, and counted.
    assert value(after, "spamfilter_windows_total") - value(before, "spamfilter_windows_total") == 24
    long = make_email("a long one", " ".join(f"word{i} about the meeting" for i in range(1500)))
    assert request(server.address, spamd_request("CHECK", long)).startswith(b"SPAMD/1.1 0 EX_OK")
    windows = value(metrics(), "spamfilter_windows_total") - value(after, "spamfilter_windows_total")
    assert windows == MAX_WINDOWS  # 20,000 characters of text in windows of 120 tokens: the cap
    with urllib.request.urlopen(f"http://{server.metrics}/health", timeout=30) as answer:
        health = json.loads(answer.read())
    assert health["status"] == "ok" and health["variant"] in ("fp32", "int8")


def test_log_lines_name_the_request_not_the_message(server: Server, spamc: str) -> None:
    secret = make_email("confidential subject line", "the body says swordfish")
    assert run_spamc(spamc, server, secret).returncode == 0
    server.wait_for_log("PROCESS from 127.0.0.1")
    assert "swordfish" not in server.log() and "confidential" not in server.log()
    assert "trained on SMS messages" in server.log()  # the domain guard, once at start


def test_syslog_receives_the_log_lines_with_facility_mail(trained_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(path))
        syslog.settimeout(30)
        with Server(trained_model, "--syslog", str(path)) as running:
            assert request(running.address, b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"
            received: list[bytes] = []
            while not any(b"PING from" in line for line in received) and len(received) < 20:
                received.append(syslog.recv(4096))  # start-up lines first, then the PING line
    mail_info = b"<%d>" % (2 * 8 + 6)  # facility mail, severity info
    assert any(line.startswith(mail_info + b"spamfilter[") and b"PING from" in line for line in received), (
        received
    )
