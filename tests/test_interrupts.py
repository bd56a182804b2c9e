"""Ctrl-C (SIGINT) and SIGTERM in the middle of a filter run: real signals, sent to this process or
to a real `spamfilter filter` child, at each stage of a chunk (reading, model call, writing)."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import StandIn, split_messages

from spamfilter import interrupts, pipeline
from spamfilter.cli import cli
from spamfilter.mail import remove_spam_headers
from spamfilter.runtime import Classifier
from spamfilter.verdict import Decision

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPAMFILTER = [sys.executable, "-m", "spamfilter"]
SAMPLE = (EXAMPLES / "sample.mbox").read_bytes()  # 10 messages


class SignalDuringModelCall(StandIn):
    """The real classifier; on its ``at``-th model call this process gets ``signum`` while the call
    is running (the signal arrives between two onnxruntime batches)."""

    def __init__(self, real: Classifier, signum: int, at: int = 1) -> None:
        super().__init__(real)
        self.signum, self.at, self.calls = signum, at, 0
        run = real.session.run

        def run_then_signal(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls += 1
            result = run(*args, **kwargs)
            if self.calls == self.at:
                os.kill(os.getpid(), self.signum)
            return result

        real.session.run = run_then_signal  # type: ignore[method-assign]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_model_call_writes_the_chunk_untagged(trained_model: Path, signum: int) -> None:
    data = SAMPLE * 30  # 300 messages: a full chunk of 256, then 44
    before = signal.getsignal(signum)
    classifier = SignalDuringModelCall(Classifier.load(trained_model, batch_size=8), signum, at=3)
    out = io.BytesIO()
    with interrupts.stop_on_signals(), pytest.raises(pipeline.FilterInterrupted) as stopped:
        pipeline.filter_mbox(io.BytesIO(data), out, classifier, Decision(0.5))
    assert stopped.value.signum == signum
    assert stopped.value.summary.untagged == pipeline.CHUNK and stopped.value.summary.messages == 0
    # the first chunk was being classified: it goes out exactly as it came in; the rest was not read
    assert out.getvalue() == b"".join(split_messages(data)[: pipeline.CHUNK])
    assert signal.getsignal(signum) == before  # the previous handler is back afterwards


class SignalOnWrite(io.BytesIO):
    """An output that gets SIGTERM sent to this process while it writes message ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.writes = at, 0

    def write(self, data) -> int:  # noqa: ANN001
        self.writes += 1
        if self.writes == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().write(data)


def test_signal_while_writing_finishes_the_chunk_then_stops(trained_model: Path) -> None:
    data = SAMPLE * 60  # 600 messages: chunks of 256, 256, 88
    out = SignalOnWrite(at=100)
    with interrupts.stop_on_signals(), pytest.raises(pipeline.FilterInterrupted) as stopped:
        pipeline.filter_mbox(io.BytesIO(data), out, Classifier.load(trained_model), Decision(0.5))
    written = split_messages(out.getvalue())
    assert len(written) == pipeline.CHUNK  # the chunk being written is complete, nothing after it
    assert all(m.count(b"\nX-Spam-Flag: ") == 1 for m in written)
    assert [remove_spam_headers(m) for m in written] == split_messages(data)[: pipeline.CHUNK]
    assert stopped.value.summary.messages == pipeline.CHUNK and stopped.value.summary.untagged == 0


class SignalOnRead(io.BytesIO):
    """An input that sends SIGINT to this process on its ``at``-th line (Ctrl-C while reading)."""

    def __init__(self, data: bytes, at: int) -> None:
        super().__init__(data)
        self.at, self.lines = at, 0

    def readline(self, size: int | None = -1) -> bytes:
        self.lines += 1
        if self.lines == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().readline(size)


def test_signal_while_reading_writes_what_was_read_untagged(trained_model: Path) -> None:
    data = SAMPLE * 30
    source = SignalOnRead(data, at=500)  # well inside the first chunk
    out = io.BytesIO()
    with interrupts.stop_on_signals(), pytest.raises(pipeline.FilterInterrupted) as stopped:
        pipeline.filter_mbox(source, out, Classifier.load(trained_model), Decision(0.5))  # type: ignore[arg-type]
    written = split_messages(out.getvalue())
    # what had been read when the stop came (the reader thread reads ahead up to a chunk), not the rest
    assert 0 < len(written) < len(split_messages(data))
    assert written == split_messages(data)[: len(written)]  # untagged, complete messages, in order
    assert stopped.value.summary.untagged == len(written)


def test_signal_in_pipeline_mode_passes_the_message_through(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = split_messages(SAMPLE)[0].split(b"\n", 1)[1]  # one message, no From_ line
    real = Classifier.spam_probability

    def interrupted(self: Classifier, texts: list[str]):  # noqa: ANN202
        os.kill(os.getpid(), signal.SIGTERM)  # the MTA's timeout, while the model runs
        return real(self, texts)

    monkeypatch.setattr(Classifier, "spam_probability", interrupted)
    args = ["filter", "--format", "email", "--model", str(trained_model), "-"]
    result = CliRunner().invoke(cli, args, input=message)
    assert result.exit_code == 0 and result.stdout_bytes == message
    assert "passed through untagged: interrupted by SIGTERM" in result.stderr
    strict = CliRunner().invoke(cli, [*args, "--strict"], input=message)
    assert strict.exit_code == 75 and strict.stdout_bytes == b""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_on_a_real_run(trained_model: Path, tmp_path: Path, signum: int) -> None:
    # A whole `spamfilter filter big.mbox -o out.mbox` process, signalled once its output has begun.
    big = tmp_path / "big.mbox"
    big.write_bytes(SAMPLE * 1000)  # 10,000 messages: far more than it can tag before the signal
    out = tmp_path / "out.mbox"
    process = subprocess.Popen(
        [*SPAMFILTER, "filter", str(big), "--model", str(trained_model), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while (not out.exists() or out.stat().st_size == 0) and process.poll() is None:
        assert time.monotonic() < deadline, "no output after 120 s"
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    # The domain guard's line (an SMS model over an mbox) comes first; the stop is one line after it.
    text = "".join(line for line in stderr.decode().splitlines(True) if "trained on SMS" not in line)
    assert process.returncode == 128 + signum, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert text.startswith(f"spamfilter: interrupted by {signal.Signals(signum).name}: ")
    assert text.rstrip().endswith("the rest of the input was not read")
    written = split_messages(out.read_bytes())
    assert 0 < len(written) < 10_000
    assert [remove_spam_headers(m) for m in written] == split_messages(big.read_bytes())[: len(written)]


def _caught_signals(pid: int) -> int:
    """The bitmask of signals a process has handlers for (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def _wait_for_stop_handlers(process: subprocess.Popen) -> None:
    # SIGTERM gets a handler only inside the filter run: from then on a signal is a stop request.
    deadline = time.monotonic() + 120
    while not _caught_signals(process.pid) & (1 << (signal.SIGTERM - 1)):
        assert process.poll() is None and time.monotonic() < deadline, "filter never started"
        time.sleep(0.02)


def _read_lines(stream: typing.IO[bytes], n: int, timeout: float = 120) -> list[bytes]:
    """``n`` lines from a pipe, waiting at most ``timeout`` seconds for them (a hung filter fails)."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {data!r} after {timeout} s"
        if select.select([stream], [], [], remaining)[0]:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"output closed after {data!r}"
            data += chunk
    return data.splitlines()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_slow_stream_is_tagged_as_it_arrives_and_a_signal_stops_it_at_once(
    trained_model: Path, signum: int
) -> None:
    # `tail -f log | spamfilter filter`: the writer keeps the pipe open and sends two lines.
    with subprocess.Popen(
        [*SPAMFILTER, "filter", "--format", "text", "--model", str(trained_model), "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdin and process.stdout and process.stderr
        try:
            process.stdin.write(b"WIN a prize now\nlunch tomorrow?\n")
            process.stdin.flush()
            lines = _read_lines(process.stdout, 2)  # without waiting for 256 lines or the end of input
            process.send_signal(signum)  # the pipe is still open: reading must not hold the stop back
            process.wait(timeout=60)  # (communicate would close the pipe)
        finally:
            process.kill()
        stderr = process.stderr.read().decode()
    assert [line.split(b"\t")[2] for line in lines] == [b"WIN a prize now", b"lunch tomorrow?"]
    assert all(line.split(b"\t")[0] in (b"spam", b"not spam") for line in lines)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert f"interrupted by {signal.Signals(signum).name}: 2 messages" in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_for_the_first_byte_stops_at_once(trained_model: Path, signum: int) -> None:
    # `spamfilter filter` on a terminal or a quiet pipe: nothing has arrived when the user gives up.
    with subprocess.Popen(
        [*SPAMFILTER, "filter", "--model", str(trained_model), "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdout and process.stderr
        try:
            _wait_for_stop_handlers(process)
            process.send_signal(signum)
            process.wait(timeout=60)  # the pipe stays open (communicate would close it)
        finally:
            process.kill()
        stdout, text = process.stdout.read(), process.stderr.read().decode()
    assert process.returncode == 128 + signum, text
    assert stdout == b"" and "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert f"interrupted by {signal.Signals(signum).name}" in text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_loop_stops_at_once_before_its_first_step_and_between_steps_after(signum: int) -> None:
    def signal_arrives() -> None:
        os.kill(os.getpid(), signum)
        time.sleep(0.01)  # the handler runs on the main thread at its next bytecode

    with interrupts.stop_on_signals(), interrupts.interruptible(), pytest.raises(interrupts.Interrupted):
        signal_arrives()  # nothing to save yet: it stops at once
    with interrupts.stop_on_signals(), interrupts.interruptible():
        interrupts.stop_between_steps()  # a step is done: its progress is worth saving
        signal_arrives()
        assert interrupts.requested() == signum  # recorded, for the loop to stop and save
    assert interrupts.requested() is None  # the handlers are gone with the run
