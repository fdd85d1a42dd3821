"""The ``monitor:`` section of a pipeline file (filled in by the monitoring work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from genloom.core.registry import SECTIONS


@SECTIONS.register("monitor")
class MonitorConfig(BaseModel):
    """Drift, quality and feedback checks and the retraining policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
