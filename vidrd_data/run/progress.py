"""The progress of a run as long runs need it: input rows done of the total, rows/s, ETA, ok and failed samples.

The bar counts input rows (what `total` counts), so its rate and ETA mean the same for a stage that makes one
sample per input and for one that makes many (segment); the ok/failed counts are output samples. Workers report
as they go, batched: local worker processes on their pipe (executors.py), Ray actors through a `RayCounter` actor
the driver polls while shards run, so a Ray run moves per batch of rows rather than per finished shard.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

log = logging.getLogger(__name__)

REPORT_EVERY_S = 0.25  # at most this often a worker sends its counts (a row can take a millisecond)

Advance = Callable[..., None]  # advance(ok, failed, rows=1): samples ok/failed from `rows` input rows


class RowRateColumn(ProgressColumn):
    """Input rows per second, over rich's sliding window of recent updates (not the average since the start, which
    a slow model load at the start would drag down for the whole run)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- rows/s" if speed is None else f"{speed:,.1f} rows/s", style="progress.data.speed")


def columns() -> list[ProgressColumn]:
    """Return the bar's columns: label, bar, rows done/total, rows/s, ok/failed samples, elapsed, ETA."""
    return [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowRateColumn(),
        TextColumn("[green]ok {task.fields[ok]}[/] [red]failed {task.fields[failed]}[/]"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]


@contextlib.contextmanager
def run_progress(label: str, total: int, enabled: bool = True, console=None) -> Iterator[Advance]:
    """Yield `advance(ok, failed, rows=1)`, which moves a rich progress bar shown while the block runs (on
    `console`, a `rich.console.Console`; the terminal's by default)."""
    counts = {"ok": 0, "failed": 0}
    # rich estimates speed over the last 30 s by default: long shards on Ray report less often than that
    with Progress(*columns(), disable=not enabled, transient=False, speed_estimate_period=120.0,
                  console=console) as bar:
        task_id = bar.add_task(label, total=total, ok=0, failed=0)

        def advance(ok: int, failed: int, rows: int = 1) -> None:
            counts["ok"] += ok
            counts["failed"] += failed
            bar.update(task_id, advance=rows, **counts)

        yield advance


class BatchedReport:
    """A shard's per-row `report(ok, failed)`, summed and handed to `send(ok, failed, rows)` at most every
    `REPORT_EVERY_S` seconds (and on `flush`)."""

    def __init__(self, send: Callable[[int, int, int], None]):
        self.send = send
        self.ok = self.failed = self.rows = 0
        self.t = time.monotonic()

    def __call__(self, ok: int, failed: int) -> None:
        self.ok += ok
        self.failed += failed
        self.rows += 1
        if time.monotonic() - self.t > REPORT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.send(self.ok, self.failed, self.rows)
        self.ok = self.failed = self.rows = 0
        self.t = time.monotonic()


class RayCounter:
    """A Ray actor that sums what the shard actors report; the driver takes the sums while it waits for shards."""

    def __init__(self) -> None:
        self.ok = self.failed = self.rows = 0

    def add(self, ok: int, failed: int, rows: int) -> None:
        self.ok += ok
        self.failed += failed
        self.rows += rows

    def take(self) -> tuple[int, int, int]:
        """Return the sums since the last take, and start again from zero."""
        taken = (self.ok, self.failed, self.rows)
        self.ok = self.failed = self.rows = 0
        return taken
