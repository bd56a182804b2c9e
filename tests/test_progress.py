"""What `spamfilter train` shows while it runs: on a terminal (a real pseudo-terminal, a real
process), a bar per epoch with warnings on their own lines and nothing drawn after training; in a
log (stderr not a terminal), a line per phase and per epoch."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamfilter import train_progress
from spamfilter.cli import cli
from spamfilter.train_loop import EpochRecord
from spamfilter.train_progress import TrainingProgress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PHASES = ["loading data", "tokenising", "loading model", "training", "evaluating on the test split"]
PHASES += ["exporting to ONNX"]


def _small_sms(folder: Path, sms_file: Path) -> Path:
    """20 spam and 20 ham lines of the SMS collection: a split of 28 / 4 / 8, 3 steps an epoch; its
    4 validation messages make --target-fpr warn that the threshold rests on too little ham."""
    lines = sms_file.read_text(encoding="utf-8").splitlines()
    chosen = [line for line in lines if line.startswith("spam\t")][:20]
    chosen += [line for line in lines if line.startswith("ham\t")][:20]
    path = folder / "small.tsv"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


def _train_args(tmp_path: Path, sms_file: Path) -> list[str]:
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2}))
    return [
        "train", "--model", str(tmp_path / "config.json"), "--weights", "random", "--device", "cpu",
        "--data", str(_small_sms(tmp_path, sms_file)), "--out", str(tmp_path / "model"), "--epochs", "2",
        "--target-fpr", "0.01", "--quantize", "none",
    ]  # fmt: skip


def _screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: the carriage returns, cursor-up moves and line erasures
    of rich's live display applied; colours dropped."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", raw):
        if token == "\n":
            row, col = row + 1, 0
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            argument, code = token[2:-1], token[-1]
            if code == "A":
                row = max(row - int(argument or 1), 0)
            elif code == "K":
                lines[row] = "" if argument == "2" else lines[row][:col]
        elif token:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
        lines += [""] * (row + 1 - len(lines))
    return [line.rstrip() for line in lines]


def _run_on_a_terminal(args: list[str], deadline_s: float = 900) -> tuple[int, str]:
    """``python -m spamfilter ARGS`` with stderr on a pseudo-terminal 300 columns wide; its exit
    code and everything it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 300, 0, 0))
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "300"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "spamfilter", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks, stop = [], time.monotonic() + deadline_s
    try:
        while time.monotonic() < stop:
            if not select.select([master], [], [], 5)[0]:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the process closed the terminal (EIO)
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        code = process.wait()
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_a_bar_per_epoch_and_warnings_on_their_own_lines(
    tmp_path: Path, sms_file: Path
) -> None:
    code, raw = _run_on_a_terminal(_train_args(tmp_path, sms_file))
    screen = _screen(raw)
    assert code == 0, "\n".join(screen)
    plain = ANSI.sub("", raw)
    # The bar counts the steps of its own epoch (3 a epoch here), not the steps of every epoch.
    assert re.search(r"epoch 2/2 [━╸╺ ]+ 3/3 steps, loss \d", plain), plain
    assert "6/6" not in plain
    # Nothing draws the bar again once training is over: the export prints after it, not under it.
    assert "exporting to ONNX" in plain
    assert "━" not in raw[raw.index("exporting to ONNX") :]
    # What stays on the screen: each line whole, the warning on its own line, no bar left behind.
    warnings = [line for line in screen if "spamfilter:" in line]
    assert warnings and all(line.startswith("spamfilter: ") for line in warnings), screen
    assert not any("━" in line for line in screen), screen
    assert [line for line in screen if line.startswith("epoch ")] == [
        line
        for line in screen
        if re.match(r"epoch [12]/2: train loss [\d.]+ acc [\d.]+% \| validation", line)
    ]
    assert len([line for line in screen if line.startswith("epoch ")]) == 2


def test_in_a_log_a_line_per_phase_and_per_epoch(
    tmp_path: Path, sms_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Within an epoch a log gets a line every STEP_LINE_SECONDS; 0 makes that every step here.
    monkeypatch.setattr(train_progress, "STEP_LINE_SECONDS", 0.0)
    result = CliRunner().invoke(cli, _train_args(tmp_path, sms_file))
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    phases = [line.split("…")[0] for line in lines if re.search(r"… \(\d+:\d\d:\d\d elapsed\)$", line)]
    assert phases == PHASES, lines
    epochs = [line for line in lines if re.match(r"epoch \d/2: train loss", line)]
    assert len(epochs) == 2
    assert all(
        re.search(
            r"acc [\d.]+% \| validation loss [\d.]+ acc [\d.]+% \([\d.]+ s; \d+:\d\d:\d\d elapsed\)$", e
        )
        for e in epochs
    )
    steps = [
        line
        for line in lines
        if re.match(r"epoch [12]/2: step [123]/3, loss [\d.]+ \(\d+:\d\d:\d\d elapsed\)$", line)
    ]
    assert len(steps) == 6, lines
    assert "━" not in result.stderr and "\r" not in result.stderr and "\x1b" not in result.stderr
    warning = next(i for i, line in enumerate(lines) if line.startswith("spamfilter: "))
    assert lines.index(next(line for line in lines if line.startswith("exporting"))) > warning


def test_a_warning_while_the_bar_is_live_is_printed_above_it() -> None:
    from rich.console import Console

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=200, highlight=False)
    with TrainingProgress(console, epochs=2) as progress:
        assert progress.live
        progress.step(1, 6, 0.9)
        progress.warn("a warning")
        progress.step(2, 6, 0.8)
        progress.epoch(EpochRecord(1, 0.5, 0.6, 0.75, 0.5, 1.0))
        progress.step(4, 6, 0.7)
        progress.stage("exporting to ONNX")
    screen = _screen(stream.getvalue())
    assert "spamfilter: a warning" in screen
    assert not any("━" in line for line in screen), screen
    assert "━" not in stream.getvalue().split("exporting to ONNX")[1]
    assert re.search(r"epoch 2/2 [━╸╺ ]+ 1/3 steps, loss 0\.700", ANSI.sub("", stream.getvalue()))
