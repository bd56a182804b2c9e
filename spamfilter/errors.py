"""The library's errors: one base class, one subclass per domain, each carrying the exit code that
the command line gives it. Anything else that escapes is a bug and is shown as one."""

from __future__ import annotations

EX_USAGE = 2  # click's code for usage errors
EX_TEMPFAIL = 75  # sysexits.h: the mail system should retry later


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


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
