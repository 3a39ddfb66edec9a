"""What runs show while and after they work: Prefect artifacts (UI) and progress bars (CLI)."""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

log = logging.getLogger(__name__)
_console: Progress | None = None
UPDATE_EVERY_S = 2.0


def publish_summary(key: str, summary: dict, description: str) -> None:
    """One row per figure; lists are joined so the table stays readable."""
    rows = [{"figure": name, "value": ", ".join(map(str, value)) if isinstance(value, (list, tuple))
             else str(value)} for name, value in summary.items()]
    create_table_artifact(table=rows, key=key, description=description)


@contextmanager
def console_progress() -> Iterator[None]:
    """Within it, every transfer also draws a progress bar on the terminal (the CLI uses it)."""
    global _console
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=False) as progress:
        _console = progress
        try:
            yield
        finally:
            _console = None


class TransferProgress:
    """A byte counter for one transfer: a Prefect progress artifact (updated at most every 2 s)
    and, under the CLI, a rich progress bar. Called from transfer threads."""

    def __init__(self, description: str, total_bytes: int):
        self.total = max(total_bytes, 1)
        self.done = 0
        self._lock = threading.Lock()
        self._last = 0.0
        self._artifact = create_progress_artifact(progress=0.0, description=description)
        # Transfer threads do not inherit the run's context (its Prefect settings and client):
        # updates run in a copy of the context the transfer was created in.
        self._context = contextvars.copy_context()
        self._bar = _console.add_task(description, total=self.total) if _console else None

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            now = time.monotonic()
            due = now - self._last >= UPDATE_EVERY_S or self.done >= self.total
            if due:
                self._last = now
        if _console is not None and self._bar is not None:
            _console.update(self._bar, completed=self.done)
        if due:
            try:
                self._context.copy().run(update_progress_artifact, self._artifact,
                                         progress=min(100.0, 100.0 * self.done / self.total))
            except Exception as exc:  # noqa: BLE001 — a progress display never fails a transfer
                log.warning("progress artifact not updated: %s", exc)
