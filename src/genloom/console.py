"""Rendering for the CLI: rich progress bars and tables, plain lines for logs, or JSON lines."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

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


@dataclass
class _StageProgress:
    """What a plain progress line needs to know about one running stage."""

    unit: str
    total: int | None
    started: float
    done: int = 0
    rows: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    first_step: int | None = None  # training may resume past step 0: the rate counts from here
    first_step_at: float = 0.0
    info_at: float = 0.0  # when ``info`` last arrived: its ``eta_s`` has aged since


def _duration(seconds: float) -> str:
    """``4.2s``, ``42s``, ``3m05s``, ``1h02m``."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(count: float, seconds: float, unit: str) -> str:
    per_s = count / seconds if seconds > 0 else 0.0
    return f"{per_s:,.0f} {unit}/s" if per_s >= 100 else f"{per_s:.3g} {unit}/s"


def progress_line(stage: str, p: _StageProgress, now: float) -> str:
    """One plain line: stage, shards and rows or step/total, rate, elapsed time, ETA, live metrics."""
    return "  ".join([f"{stage:<10}", *_progress_parts(p, now, final=False)])


def _progress_parts(p: _StageProgress, now: float, final: bool) -> list[str]:
    elapsed = now - p.started
    parts: list[str] = []
    eta: float | None = None
    step = p.info.get("step")
    if step is not None:
        total = p.info.get("total") or p.total
        parts.append(f"step {step:,}/{total:,}" if total else f"step {step:,}")
        since, span = step - (p.first_step or 0), now - p.first_step_at
        parts.append(_rate(since, span, "steps") if since > 0 else "rate ?")
        if isinstance(p.info.get("eta_s"), int | float):
            eta = max(0.0, float(p.info["eta_s"]) - (now - p.info_at))
        elif total and since > 0 and span > 0:
            eta = (total - step) * span / since
    else:
        parts.append(f"{p.done:,}/{p.total:,} {p.unit}" if p.total is not None else f"{p.done:,} {p.unit}")
        if p.rows:
            parts.append(f"{p.rows:,} rows")
        if p.rows or p.done:
            parts.append(_rate(p.rows, elapsed, "rows") if p.rows else _rate(p.done, elapsed, p.unit))
        else:
            parts.append("rate ?")
        if p.total and p.done:
            eta = (p.total - p.done) * elapsed / p.done
    if not final:
        parts.append(f"elapsed {_duration(elapsed)}")
        parts.append(f"eta {_duration(eta)}" if eta is not None else "eta ?")
    for k in ("loss", "val_loss"):
        if isinstance(p.info.get(k), int | float):
            parts.append(f"{k}={p.info[k]:.4g}")
    if isinstance(p.info.get("tokens_per_s"), int | float):
        parts.append(f"{p.info['tokens_per_s']:,.0f} tokens/s")
    return parts


class PlainReporter(Reporter):
    """Plain progress lines for logs and CI, where no terminal shows a live bar.

    Every ``interval`` seconds each running stage prints one line (stage, shards and rows or
    step/total, rate, elapsed time, ETA), from a timer thread, so a long training stage is heard
    from even between its progress reports; every stage prints one line when it ends.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self.interval = interval
        self.clock = clock
        self._stages: dict[str, _StageProgress] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr  # looked up late: pytest and CliRunner swap sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def _tick(self) -> None:
        with self._lock:
            now = self.clock()
            for stage, p in self._stages.items():
                self._write(progress_line(stage, p, now))

    def _run_ticker(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def stage_start(self, stage: str, total: int | None, unit: str = "shards") -> None:
        with self._lock:
            self._stages[stage] = _StageProgress(unit, total, self.clock())
        if self._ticker is None and self.interval > 0:
            self._ticker = threading.Thread(target=self._run_ticker, name="genloom-progress", daemon=True)
            self._ticker.start()

    def stage_advance(
        self, stage: str, done: int = 1, rows: int = 0, info: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            p = self._stages.get(stage)
            if p is None:
                return
            p.done += done
            p.rows += rows
            if info:
                p.info.update(info)
                p.info_at = self.clock()
                if p.first_step is None and info.get("step") is not None:
                    p.first_step, p.first_step_at = info["step"], self.clock()

    def stage_end(self, stage: str, status: str, reason: str, seconds: float, stats: dict[str, Any]) -> None:
        with self._lock:
            p = self._stages.pop(stage, None)
            if p is None:
                self._write(f"{stage:<10}  {status}" + (f"  ({reason})" if reason else ""))
                return
            parts = [f"{stage:<10}", f"{status} in {_duration(seconds)}"]
            parts += _progress_parts(p, self.clock(), final=True)
            self._write("  ".join(parts) + (f"  ({reason})" if reason else ""))

    def message(self, text: str, **fields: Any) -> None:
        with self._lock:
            self._write(text)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None


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
        # live metrics never override the event's own fields (a table model reports "rows" seen)
        self._emit(**{**(info or {}), "event": "progress", "stage": stage, "done": done, "rows": rows})

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
