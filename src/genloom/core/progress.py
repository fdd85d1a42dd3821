"""What the pipeline tells the outside world while it runs (the CLI renders it; tests ignore it)."""

from __future__ import annotations

from typing import Any


class Reporter:
    """Receives progress events; the default does nothing."""

    def stage_start(self, stage: str, total: int | None, unit: str = "shards") -> None:
        """A stage begins ``total`` units of work."""

    def stage_advance(
        self, stage: str, done: int = 1, rows: int = 0, info: dict[str, Any] | None = None
    ) -> None:
        """Some units finished (``rows`` rows produced); ``info`` carries live metrics (loss...)."""

    def stage_end(self, stage: str, status: str, reason: str, seconds: float, stats: dict[str, Any]) -> None:
        """A stage ended: ``status`` is ran / cached / skipped / failed."""

    def message(self, text: str, **fields: Any) -> None:
        """A line of information for the user."""

    def close(self) -> None:
        """Stop rendering."""
