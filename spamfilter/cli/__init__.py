"""The ``spamfilter`` command line: thin click commands over the library, one module per command.

Heavy imports (torch, pandas) happen inside the commands that need them, so ``filter`` and
``classify`` start fast enough for a mail pipeline.
"""

from __future__ import annotations

import sys

import click

from ..errors import EX_INTERRUPTED
from . import evaluate, filter, learn, serve, train  # noqa: F401 - each registers its commands
from .common import _console, cli

__all__ = ["_console", "cli", "main"]


def main() -> None:
    try:
        cli(prog_name="spamfilter")
    except KeyboardInterrupt:  # outside click's own handling (e.g. while writing): no traceback
        click.echo("spamfilter: interrupted", err=True)
        sys.exit(EX_INTERRUPTED)
