"""`genloom` commands of genloom.monitor (registered by genloom.cli)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from genloom.core.errors import GenloomError


def register(
    app: typer.Typer, out: Any, err: Any, fail: Callable[[Exception], None], pipeline: Callable[..., Any]
) -> None:
    """Add this package's commands to the `genloom` app."""

    @app.command("rollback")
    def rollback_cmd(
        file: Annotated[Path, typer.Argument(help="The pipeline file")] = Path("pipeline.yaml"),
        to: Annotated[
            int | None, typer.Option("--to", help="Version to restore (default: the previous champion)")
        ] = None,
        model: Annotated[
            str | None, typer.Option("--model", help="Model name (default: the pipeline's)")
        ] = None,
    ) -> None:
        """Re-promote the previous champion (or --to VERSION) and record it as a decision."""
        from genloom.monitor.rollback import rollback

        try:
            p = pipeline(file)
            try:
                res = rollback(p.catalog, model or p.model_name, to)
            finally:
                p.close()
        except GenloomError as e:
            fail(e)
        out.print(
            f"{res['model']}: version {res['champion_version']} is champion again "
            f"(was {res['previous_champion']})",
            highlight=False,
        )
