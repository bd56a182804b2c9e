"""The ``spamfilter`` command line: thin click commands over the library, one module per command.

Heavy imports (torch, pandas) happen inside the commands that need them, so ``filter`` and
``classify`` start fast enough for a mail pipeline.
"""

from __future__ import annotations

import sys

import click

from ..errors import EX_INTERRUPTED
from .common import _console, cli  # each command's module is imported when the command runs

__all__ = ["_console", "cli", "main"]


def main() -> None:
    try:
        cli(prog_name="spamfilter")
    except KeyboardInterrupt:  # outside click's own handling (e.g. while writing): no traceback
        click.echo("spamfilter: interrupted", err=True)
        sys.exit(EX_INTERRUPTED)
