"""Per-step statistics: rows in and out, drops by reason, time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepStats:
    """What one step did to the rows it saw (summed over shards)."""

    rows_in: int = 0
    rows_out: int = 0
    added: int = 0
    rejected: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` rows dropped for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def merge(self, other: StepStats) -> None:
        """Add another shard's stats into this one."""
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.added += other.added
        self.rejected += other.rejected
        self.seconds += other.seconds
        for k, v in other.dropped.items():
            self.drop(k, v)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (seconds rounded so stats stay readable)."""
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        d["dropped"] = dict(sorted(self.dropped.items()))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepStats:
        """Inverse of to_dict."""
        return cls(**{**d, "dropped": dict(d.get("dropped", {}))})


def merge_stats(items: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Merge per-shard {step: stats} dicts into one, keeping step order."""
    out: dict[str, StepStats] = {}
    for shard in items:
        for name, d in shard.items():
            out.setdefault(name, StepStats()).merge(StepStats.from_dict(d))
    return {k: v.to_dict() for k, v in out.items()}
