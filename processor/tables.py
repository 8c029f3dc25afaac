"""Human output of the CLI: rich tables that never cut a number, and progress bars on a terminal only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from events.money import format_cents as money
from projections.model import Summary


def print_table(table: Table, console: Console | None = None) -> None:
    """Print at the table's natural width when the console is narrower: rich would otherwise shrink
    columns and cut amounts with an ellipsis (a terminal wraps the long lines instead)."""
    console = console or Console()
    needed = console.measure(table, options=console.options.update(max_width=100_000)).maximum
    width = console.width
    if needed <= width:
        console.print(table)
        return
    console.width = needed  # print caps its width argument at the console's
    try:
        console.print(table)
    finally:
        console.width = width


def amounts_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *,
                  left: Iterable[int] = (0,)) -> Table:
    """A table whose cells never wrap or truncate; columns not in ``left`` are right-aligned."""
    lefts = set(left)
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i in lefts else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def summary_tables(summary: Summary) -> list[Table]:
    """``benefits-ledger summary`` as tables: totals, counts, discrepancies by kind."""
    c = summary.counts
    totals = amounts_table("ledger totals", ("measure", "value"), [
        ("members (subscribers and dependents)", f"{summary.members:,}"),
        ("accounts", f"{summary.accounts:,}"),
        ("coverage months", f"{summary.coverage_months:,}"),
        ("billed", money(summary.billed_cents)),
        ("adjusted", money(summary.adjusted_cents)),
        ("paid", money(summary.paid_cents)),
        ("outstanding", money(summary.outstanding_cents)),
        ("credits", money(summary.credits_cents)),
        ("unapplied cash", money(summary.unapplied_cents)),
    ])
    counts = amounts_table("records (received = applied + duplicates + dead-lettered)",
                           ("received", "applied", "duplicates", "dead-lettered"),
                           [(f"{c.received:,}", f"{c.applied:,}", f"{c.duplicates:,}", f"{c.dead_lettered:,}")],
                           left=())
    kinds = sorted(set(summary.discrepancies_opened_by_kind) | set(summary.discrepancies_open_by_kind))
    by_kind = amounts_table("discrepancies by kind", ("kind", "ever opened", "open now"), [
        (k, f"{summary.discrepancies_opened_by_kind.get(k, 0):,}", f"{summary.discrepancies_open_by_kind.get(k, 0):,}")
        for k in kinds
    ])
    return [totals, counts, by_kind]


def progress_bar(enabled: bool = True) -> Progress:
    """A bar on stderr, shown only on a terminal (never escape codes in a pipe or a log file)."""
    console = Console(stderr=True)
    return Progress(
        SpinnerColumn(), TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, disable=not (enabled and console.is_terminal),
        transient=False,
    )


class ProgressPublisher:
    """Wraps a Publisher (or anything with publish/flush/close) so that ``publish`` advances a bar."""

    def __init__(self, inner: Any, progress: Progress, description: str = "publishing events") -> None:
        self.inner = inner
        self.progress = progress
        self.description = description
        # the publisher's own chunk: each call stays all-or-nothing, as without the bar
        self.step = int(getattr(inner, "chunk_events", 10_000))
        self.task: TaskID | None = None

    def publish(self, events: Iterable[Any]) -> int:
        items = list(events)
        if self.task is None:
            self.task = self.progress.add_task(self.description, total=len(items))
        else:
            total = (self.progress.tasks[self.task].total or 0) + len(items)
            self.progress.update(self.task, total=total)
        sent = 0
        for i in range(0, len(items), self.step):
            chunk = items[i:i + self.step]
            sent += self.inner.publish(chunk)
            self.progress.advance(self.task, len(chunk))
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> ProgressPublisher:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)


@contextlib.contextmanager
def spinner(progress: Progress, description: str) -> Iterator[None]:
    """An indeterminate line while something of unknown length runs (parsing files)."""
    task = progress.add_task(description, total=None)
    try:
        yield
    finally:
        progress.update(task, total=1, completed=1)
