"""How ``spamfilter train`` shows its progress on stderr: on a terminal, a live rich bar for the
epoch under way; in a log file (stderr not a terminal), plain lines a reader can follow while the
run goes on.

Everything goes through one rich ``Console``: a warning printed while the bar is live lands on its
own line above it, and the bar is stopped (and erased) before each phase line, so nothing draws it
again after training has ended. The bar counts the steps of one epoch and estimates the time left
in that epoch only: with early stopping the number of epochs is not known in advance.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .train_loop import epoch_of_step

if TYPE_CHECKING:
    from rich.console import Console

    from .train_loop import EpochRecord

STEP_LINE_SECONDS = 60.0  # off a terminal: within an epoch, a line at most this often


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingProgress:
    """Callbacks for ``recipe.fine_tune`` (``stage``, ``step``, ``epoch``, ``download``, ``warn``),
    used as a context manager that leaves no bar behind."""

    def __init__(self, console: Console, epochs: int, *, steps: bool = True) -> None:
        self.console = console
        self.epochs = epochs
        self.live = steps and console.is_terminal and not console.is_dumb_terminal
        self.step_lines = steps and not self.live
        self.started = self._last_line = time.monotonic()
        self._bar: Any = None  # rich.progress.Progress while one is shown
        self._task: Any = None
        self._epoch = 0

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop_bar()

    def elapsed(self) -> str:
        return clock(time.monotonic() - self.started)

    # -- the callbacks

    def stage(self, name: str) -> None:
        self._stop_bar()
        self.console.print(f"{name}… ({self.elapsed()} elapsed)", style="dim", markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"spamfilter: {message}", markup=False)

    def download(self, done: int, total: int | None) -> None:
        if self.live:
            self._show("downloading", done, total, "bytes")

    def step(self, step: int, total: int, loss: float) -> None:
        epoch = epoch_of_step(step, total, self.epochs)
        per_epoch = max(total // self.epochs, 1)
        done = step - (epoch - 1) * per_epoch
        if self.live:
            self._show(
                f"epoch {epoch}/{self.epochs}", done, per_epoch, "steps", loss, new=epoch != self._epoch
            )
            self._epoch = epoch
        elif self.step_lines and time.monotonic() - self._last_line >= STEP_LINE_SECONDS:
            self._last_line = time.monotonic()
            self.console.print(
                f"epoch {epoch}/{self.epochs}: step {done}/{per_epoch}, loss {loss:.3f} "
                f"({self.elapsed()} elapsed)",
                markup=False,
            )

    def epoch(self, record: EpochRecord) -> None:
        """Figures on the whole train and validation splits, in place of the epoch's bar."""
        self._stop_bar()
        self._last_line = time.monotonic()
        self.console.print(
            f"epoch {record.epoch}/{self.epochs}: train loss {record.train_loss:.3f}"
            f" acc {record.train_accuracy:.2%} | validation loss {record.validation_loss:.3f}"
            f" acc {record.validation_accuracy:.2%} ({record.seconds:.1f} s; {self.elapsed()} elapsed)",
            markup=False,
        )

    # -- the bar

    def _show(
        self,
        label: str,
        done: int,
        total: int | None,
        unit: str,
        loss: float | None = None,
        new: bool = False,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}{task.fields[loss]}"),
                TimeRemainingColumn(),
                TextColumn("left"),
                console=self.console,
                transient=True,  # stopped, it is erased: the epoch's line or the next phase replaces it
            )
            self._bar.start()
        if self._task is None or new:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(label, total=total, unit=unit, loss="")
        shown = f", loss {loss:.3f}" if loss is not None else ""
        self._bar.update(self._task, description=label, completed=done, total=total, loss=shown)

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._task = None
        self._epoch = 0
