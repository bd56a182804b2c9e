"""The library's errors: one base class, one subclass per domain, each carrying the exit code that
the command line gives it. Anything else that escapes is a bug and is shown as one."""

from __future__ import annotations

# Every exit code the command line gives, and every status code the spamd front end answers with:
# one table (sysexits.h where a code has a meaning to mail systems).
EX_OK = 0
EX_FAILURE = 1  # a SpamfilterError; with --exit-code in pipeline mode: the message is spam
EX_USAGE = 2  # click's code for usage errors
EX_DATAERR = 65  # --engine ray: some inputs could not be filtered; the others are complete
EX_UNAVAILABLE = 69  # spamd: the service cannot answer (message too large, model failed)
EX_SOFTWARE = 70  # spamd: an internal error
EX_CANTCREAT = 73  # spamd TELL: the correction cannot be written
EX_TEMPFAIL = 75  # the mail system should retry later (pipeline mode --strict, spamd busy)
EX_PROTOCOL = 76  # spamd: a request that breaks the protocol
EX_NOPERM = 77  # spamd TELL: a peer not allowed to teach
EX_TIMEOUT = 79  # spamd: a request not complete in time
SIGNAL_BASE = 128  # a run ended by signal N exits 128 + N, the shell's convention (Ctrl-C: 130)
EX_INTERRUPTED = SIGNAL_BASE + 2  # SIGINT
EX_BROKEN_PIPE = SIGNAL_BASE + 13  # SIGPIPE: the reader of stdout went away


def signal_exit_code(signum: int) -> int:
    """The exit code of a run that a signal stopped."""
    return SIGNAL_BASE + signum


class SpamfilterError(Exception):
    """A failure the user can act on; its message is one sentence that says what to do."""

    exit_code = 1


class UsageError(SpamfilterError):
    """Input or options the user must change: a missing CSV column, binary input, options that do not
    go together."""

    exit_code = EX_USAGE


class InstallError(SpamfilterError):
    """A part of the install that is missing: an onnxruntime build, or the train extra."""


class ModelDirectoryError(SpamfilterError):
    """A model directory that is missing, incomplete or does not match its manifest."""


class DataError(SpamfilterError):
    """Training or evaluation data that cannot be downloaded or read."""


class WeightsError(SpamfilterError):
    """Pretrained weights that cannot be downloaded, read or matched to the model."""


class TrainingError(SpamfilterError):
    """Training options that cannot work (a length over the context, nothing to resume)."""


class ExportError(SpamfilterError):
    """An export that failed or whose ONNX model does not agree with torch."""


class ClassificationError(SpamfilterError):
    """The model failed in the middle of a run; what was read went out untagged."""


def printable(text: str) -> str:
    """``text`` with every character that is not printable (control characters, C1 codes such
    as ``\\x9b`` that a terminal reads as an escape, line breaks) written as its escape: safe for
    one line of a terminal or a log, whatever a message or a peer put in it."""
    if text.isprintable():  # every request's log line: nearly always
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
