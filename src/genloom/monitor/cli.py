"""`genloom` commands of genloom.monitor (registered by genloom.cli)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer


def register(
    app: typer.Typer, out: Any, err: Any, fail: Callable[[Exception], None], pipeline: Callable[..., Any]
) -> None:
    """Add this package's commands to the `genloom` app."""
