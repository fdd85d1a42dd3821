"""`genloom ui` (registered by genloom.cli)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def register(
    app: typer.Typer, out: Any, err: Any, fail: Callable[[Exception], None], pipeline: Callable[..., Any]
) -> None:
    """Add the dashboard's command to the `genloom` app."""

    @app.command("ui")
    def ui_cmd(
        file: Annotated[Path, typer.Argument(help="The pipeline file")] = Path("pipeline.yaml"),
        host: Annotated[
            str, typer.Option(help="Address to listen on (not loopback: API keys required)")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8765,
        api_key_required: Annotated[
            bool,
            typer.Option(
                "--api-key-required", help="Every page and /v1 call needs an API key (always off loopback)"
            ),
        ] = False,
    ) -> None:
        """The web dashboard over runs, artifacts, models, reports, drift and requests, with a
        playground and a page to type and label records for the manual source; the same app also
        serves the champion's /v1 API. Read-only unless an API key with write rights is given."""
        from genloom.core.errors import GenloomError, MissingDependencyError

        try:
            import uvicorn

            from genloom.serve.app import configure_logging, is_loopback
            from genloom.serve.schemas import ServeSettings
            from genloom.ui.app import create_dashboard
        except ImportError as e:
            fail(MissingDependencyError(e.name or "fastapi", "pip install 'genloom[serve]'"))
            return
        settings = ServeSettings(require_key=api_key_required or not is_loopback(host))
        try:
            p = pipeline(file)
            api = create_dashboard(p, settings=settings)
        except GenloomError as e:
            fail(e)
            return
        configure_logging()
        auth = "API key required" if settings.require_key else "read-only without a key (loopback)"
        err.print(f"dashboard of {p.cfg.name} on http://{host}:{port}/ui/ ({auth})")
        uvicorn.run(api, host=host, port=port, access_log=False, log_level="warning")
