"""Rendering for the CLI: rich progress bars and tables, or JSON lines for machines."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from genloom.core.progress import Reporter


class RichReporter(Reporter):
    """A progress bar per stage (shards or steps, rows/s, ETA) and a live line for training."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.rows: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self._live = False

    def _ensure(self) -> None:
        if not self._live:
            self.progress.start()
            self._live = True

    def stage_start(self, stage: str, total: int | None, unit: str = "shards") -> None:
        self._ensure()
        self.rows[stage] = 0
        self.started[stage] = time.perf_counter()
        if stage in self.tasks:
            self.progress.update(self.tasks[stage], total=total, completed=0)
        else:
            self.tasks[stage] = self.progress.add_task(stage, total=total, rate="", info="")

    def stage_advance(
        self, stage: str, done: int = 1, rows: int = 0, info: dict[str, Any] | None = None
    ) -> None:
        task = self.tasks.get(stage)
        if task is None:
            return
        self.rows[stage] = self.rows.get(stage, 0) + rows
        elapsed = max(time.perf_counter() - self.started.get(stage, time.perf_counter()), 1e-9)
        fields: dict[str, Any] = {}
        if self.rows[stage]:
            fields["rate"] = f"{self.rows[stage]:,} rows {self.rows[stage] / elapsed:,.0f}/s"
        if info:
            step, total = info.get("step"), info.get("total")
            if total and self.progress.tasks[task].total != total:
                self.progress.update(task, total=total)
            if step is not None:
                self.progress.update(task, completed=step)
            shown = {k: v for k, v in info.items() if k not in ("step", "total")}
            fields["info"] = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
            )
        self.progress.update(task, advance=done, **fields)

    def stage_end(self, stage: str, status: str, reason: str, seconds: float, stats: dict[str, Any]) -> None:
        task = self.tasks.get(stage)
        if task is not None:
            t = self.progress.tasks[task]
            self.progress.update(
                task,
                completed=t.total if t.total is not None else t.completed,
                total=t.total if t.total is not None else t.completed,
            )
        elif status in ("cached", "skipped"):
            return
        if status == "ran" and stage == "register":
            self.console.print(f"[bold]register[/]: {reason}")

    def message(self, text: str, **fields: Any) -> None:
        self.console.print(text)

    def close(self) -> None:
        if self._live:
            self.progress.stop()
            self._live = False


class JsonReporter(Reporter):
    """One JSON object per event on stdout (``--log-format json``)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self._last: dict[str, float] = {}

    def _emit(self, **event: Any) -> None:
        event["ts"] = round(time.time(), 3)
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()

    def stage_start(self, stage: str, total: int | None, unit: str = "shards") -> None:
        self._emit(event="stage_start", stage=stage, total=total, unit=unit)

    def stage_advance(
        self, stage: str, done: int = 1, rows: int = 0, info: dict[str, Any] | None = None
    ) -> None:
        now = time.monotonic()
        if info and now - self._last.get(stage, 0) < 2:  # training reports often: throttle
            return
        self._last[stage] = now
        self._emit(event="progress", stage=stage, done=done, rows=rows, **(info or {}))

    def stage_end(self, stage: str, status: str, reason: str, seconds: float, stats: dict[str, Any]) -> None:
        self._emit(
            event="stage_end",
            stage=stage,
            status=status,
            reason=reason,
            seconds=round(seconds, 3),
            stats=stats,
        )

    def message(self, text: str, **fields: Any) -> None:
        self._emit(event="message", text=text, **fields)


def summary_table(summary: Any) -> Table:
    """The run summary: one row per stage."""
    table = Table(title=f"run {summary.run_id}: {summary.status} in {summary.seconds:.1f}s")
    for col in ("stage", "status", "rows", "dropped", "rejected", "seconds", "key", "why"):
        table.add_column(col, overflow="fold")
    for r in summary.stages:
        steps = r.stats.get("steps") if isinstance(r.stats, dict) else None
        steps = steps if isinstance(steps, dict) else {}
        dropped = sum(sum(s.get("dropped", {}).values()) for s in steps.values())
        color = {"ran": "green", "cached": "cyan", "skipped": "dim", "failed": "red"}.get(r.status, "")
        table.add_row(
            r.stage,
            f"[{color}]{r.status}[/]",
            "" if r.rows is None else f"{r.rows:,}",
            str(dropped) if steps else "",
            str(r.stats.get("rejected", "")) if steps else "",
            f"{r.seconds:.1f}",
            (r.key or "")[:12],
            r.reason,
        )
    return table
