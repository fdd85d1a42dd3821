"""`genloom` commands of genloom.monitor (registered by genloom.cli)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from genloom.core.errors import GenloomError

#: exit codes of `genloom monitor`, for cron
EXIT_FINE, EXIT_BREACH, EXIT_ERROR = 0, 1, 2

# the options `monitor` and `rollback` share
FileArg = Annotated[Path, typer.Argument(help="The pipeline file")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name (default: the pipeline's)")]


def parse_duration(text: str, option: str) -> float:
    """Seconds of a duration such as ``90s``, ``30m``, ``24h``, ``7d``, ``1h30m`` (or a ConfigError)."""
    import re

    from genloom.core.errors import ConfigError

    clean = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", clean)
    if not parts or "".join(a + b for a, b in parts) != re.sub(r"\s+", "", clean):
        raise ConfigError(f"{option} {text!r} is not a duration (90s, 30m, 24h, 7d, 1h30m)")
    seconds = sum(float(a) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[b] for a, b in parts)
    if seconds <= 0:
        raise ConfigError(f"{option} must be longer than 0s")
    return seconds


def parse_window(since: str | None, window: str | None, now: Any = None) -> tuple[Any, Any]:
    """(start, end) of the window, as aware UTC datetimes: ``--since ISO`` to now, or the last
    ``--window`` (``90s``, ``30m``, ``24h``, ``7d``; default 24h)."""
    from datetime import UTC, datetime, timedelta

    from genloom.core.errors import ConfigError

    end = now or datetime.now(UTC)
    if since is not None and window is not None:
        raise ConfigError("give --since or --window, not both")
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError as e:
            raise ConfigError(f"--since {since!r} is not an ISO date or time (2026-01-31T12:00)") from e
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        return start, end
    return end - timedelta(seconds=parse_duration(window or "24h", "--window")), end


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}"


def register(
    app: typer.Typer, out: Any, err: Any, fail: Callable[[Exception], None], pipeline: Callable[..., Any]
) -> None:
    """Add this package's commands to the `genloom` app."""

    @app.command("monitor")
    def monitor_cmd(
        file: FileArg = Path("pipeline.yaml"),
        model: ModelOpt = None,
        since: Annotated[
            str | None, typer.Option("--since", help="Window start, ISO date/time (UTC if no zone); to now")
        ] = None,
        window: Annotated[
            str | None,
            typer.Option(
                "--window", help="Window length up to now: 90s, 30m, 24h, 7d (default: monitor.window, 24h)"
            ),
        ] = None,
        reference_window: Annotated[
            str | None,
            typer.Option(
                "--reference-window",
                help="Compare with the request log of this long before the window (7d: the week before) "
                "instead of the training profile",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
        webhook: Annotated[
            str | None,
            typer.Option(
                "--webhook",
                help="POST the breaches as JSON to this URL (retried with backoff; exit 2 if it never succeeds; "
                "default: monitor.webhook)",
            ),
        ] = None,
        prometheus_textfile: Annotated[
            Path | None,
            typer.Option(
                "--prometheus-textfile",
                help="Write the checks as Prometheus metrics to this .prom file (node-exporter textfile; "
                "default: monitor.prometheus_textfile)",
            ),
        ] = None,
        watch: Annotated[
            bool, typer.Option("--watch", help="Run the checks every --interval until Ctrl-C (exit 0)")
        ] = False,
        interval: Annotated[
            str, typer.Option("--interval", help="Time between --watch rounds: 30s, 5m, 1h (default 60s)")
        ] = "60s",
        rounds: Annotated[
            int | None,
            typer.Option(
                "--rounds", min=1, help="With --watch: stop after this many rounds (exit: the last one's)"
            ),
        ] = None,
    ) -> None:
        """Check the champion's request log window against its training profile: drift, quality and
        feedback signals, each recorded in the monitoring log; with the pipeline's monitor:
        on_breach: retrain (or a due schedule), run the pipeline again and record the promote or
        keep decision. Exit 0 fine, 1 drift or breach, 2 error (a retrain that failed, or a
        --webhook that never succeeded)."""
        import json
        import time
        from datetime import timedelta

        from genloom.core.errors import ConfigError
        from genloom.monitor.alerts import check_webhook_url

        def error(e: Exception) -> int:
            if as_json:
                body = json.dumps({"error": str(e), "exit_code": EXIT_ERROR})
                typer.echo(body) if watch else out.print_json(body)
            else:
                err.print(f"[red]error[/] {e}", highlight=False, soft_wrap=True)
            return EXIT_ERROR

        try:
            parse_window(since, window)
            back = parse_duration(reference_window, "--reference-window") if reference_window else None
            pause = parse_duration(interval, "--interval")
            if rounds is not None and not watch:
                raise ConfigError("--rounds needs --watch")
            if webhook is not None:
                check_webhook_url(webhook)
        except GenloomError as e:
            raise typer.Exit(error(e)) from None

        def one_round() -> int:
            try:
                p = pipeline(file)
                try:
                    start, end = round_window(p.cfg, since, window)
                    hook, textfile = _alert_targets(p, webhook, prometheus_textfile)
                    ref = (start - timedelta(seconds=back), start) if back is not None else None
                    result = monitor_round(p, start, end, model, reference=ref)
                finally:
                    p.close()
                report = result.report
                alerts = _alerts(result, hook, textfile)
            except GenloomError as e:
                return error(e)
            code = result.exit_code
            if alerts.get("webhook") and not alerts["webhook"]["ok"]:
                code = EXIT_ERROR
            if as_json:
                body = json.dumps({**result.to_json(), "alerts": alerts, "exit_code": code})
                if watch:
                    typer.echo(body)  # one line per round
                else:
                    out.print_json(body)
            else:
                _print_report(report, start, end, alerts)
                _print_decisions(result)
            return code

        from genloom.monitor.policy import monitor_round, round_window

        if not watch:
            raise typer.Exit(one_round())
        done, code = 0, EXIT_FINE
        try:
            while True:
                code = one_round()
                done += 1
                if rounds is not None and done >= rounds:
                    break
                time.sleep(pause)
        except KeyboardInterrupt:
            if not as_json:
                err.print(f"stopped after {done} round(s)", highlight=False)
            raise typer.Exit(EXIT_FINE) from None
        raise typer.Exit(code)

    def _alert_targets(p: Any, webhook: str | None, textfile: Path | None) -> tuple[str | None, Path | None]:
        """The webhook and the Prometheus file: the options, else the ``monitor:`` section's."""
        from genloom.core.errors import ConfigError
        from genloom.monitor.alerts import check_webhook_url

        section = p.cfg.monitor
        if webhook is None and section.webhook is not None:
            webhook = section.webhook.get_secret_value()
            try:
                check_webhook_url(webhook)
            except ConfigError as e:
                raise ConfigError(
                    e.message.replace("--webhook", "the webhook"), path="monitor.webhook"
                ) from None
        if textfile is None and section.prometheus_textfile is not None:
            textfile = Path(p.base_dir) / section.prometheus_textfile
        return webhook, textfile

    def _print_decisions(result: Any) -> None:
        for d in result.decisions:
            versions = ""
            if d["challenger_version"] is not None:
                versions = f" (challenger v{d['challenger_version']}, champion v{d['champion_version']})"
            colour = {"promote": "green", "keep": "yellow", "failed": "red"}.get(d["action"], "bold")
            line = f"[{colour}]{d['action']}[/]{versions}: {d['reason']}"
            (err if d["action"] == "failed" else out).print(line, highlight=False, soft_wrap=True)

    def _alerts(result: Any, webhook: str | None, textfile: Path | None) -> dict[str, Any]:
        """Send the round's alerts: the webhook only when a check breached or a retrain failed
        (with the round's decisions in the body)."""
        from genloom.monitor.alerts import breach_payload, post_webhook, write_prometheus

        report = result.report
        res: dict[str, Any] = {}
        if textfile is not None:
            res["prometheus"] = str(write_prometheus(report, textfile))
        if webhook is not None and (report.breached or result.error is not None):
            body = breach_payload(report)
            if result.decisions:
                body["decisions"] = result.to_json()["decisions"]
            w = post_webhook(webhook, body)
            res["webhook"] = {
                "url": w.url,
                "ok": w.ok,
                "attempts": w.attempts,
                "status": w.status,
                "errors": w.errors,
            }
        return res

    def _print_report(report: Any, start: Any, end: Any, alerts: dict[str, Any]) -> None:
        from rich import box
        from rich.table import Table

        table = Table(
            box=box.SIMPLE_HEAD,
            title=f"{report.model} v{report.version}: {report.requests} requests "
            f"({report.text_requests} text) from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
        )
        for col in ("signal", "method", "score", "threshold", "p-value", "status"):
            numeric = col in ("score", "threshold", "p-value")
            table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
        kind = None
        for c in report.checks:
            if kind is not None and c.kind != kind:
                table.add_section()  # drift, quality, feedback
            kind = c.kind
            status = "[red]BREACH[/]" if c.breached else "[dim]skipped[/]" if c.skipped else "[green]ok[/]"
            table.add_row(c.signal, c.method, _fmt(c.score), _fmt(c.threshold), _fmt(c.p_value), status)
        out.print(table)
        skipped: dict[str, list[str]] = {}
        for c in report.checks:
            if c.skipped:
                names = skipped.setdefault(c.skipped, [])
                if c.signal not in names:
                    names.append(c.signal)
        for why, names in skipped.items():
            out.print(f"skipped {', '.join(names)}: {why}", highlight=False, soft_wrap=True)
        if report.profile_computed:
            out.print(
                f"profile {report.profile_key} computed from the training data and stored", highlight=False
            )
        if report.breached:
            breached = ", ".join(dict.fromkeys(f"{c.signal} ({c.method})" for c in report.breached))
            out.print(f"[red]breach[/]: {breached}", highlight=False)
        else:
            out.print("[green]no drift or breach[/]", highlight=False)
        if "prometheus" in alerts:
            out.print(f"metrics written to {alerts['prometheus']}", highlight=False)
        w = alerts.get("webhook")
        if w:
            if w["ok"]:
                out.print(
                    f"webhook {w['url']}: sent (HTTP {w['status']}, {w['attempts']} attempt(s))",
                    highlight=False,
                )
            else:
                err.print(
                    f"[red]webhook {w['url']} failed[/] after {w['attempts']} attempt(s): {'; '.join(w['errors'])}",
                    highlight=False,
                    soft_wrap=True,
                )

    @app.command("rollback")
    def rollback_cmd(
        file: FileArg = Path("pipeline.yaml"),
        to: Annotated[
            int | None, typer.Option("--to", help="Version to restore (default: the previous champion)")
        ] = None,
        model: ModelOpt = None,
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
