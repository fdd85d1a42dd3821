"""The ``genloom`` command line: parses, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import json
import os
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from genloom.core.errors import ConfigError, GenloomError, MissingDependencyError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="genloom: raw data to a deployed, monitored, self-updating generative model.",
)
setup_app = typer.Typer(no_args_is_help=True, help="Install offline resources (WordNet...).")
app.add_typer(setup_app, name="setup")
out = Console()
err = Console(stderr=True)

FileArg = Annotated[Path, typer.Argument(help="The pipeline file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: a.b.c=value")]


class LogFormat(StrEnum):
    rich = "rich"
    json = "json"


def _fail(e: Exception) -> None:
    if isinstance(e, ConfigError):
        for line in str(e).splitlines():
            err.print(f"[red]config error[/] {line}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    err.print(f"[red]error[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _pipeline(file: Path, overrides: list[str] | None = None, reporter: Any = None) -> Any:
    from genloom.pipeline import Pipeline

    return Pipeline.from_file(file, overrides, reporter=reporter)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to create the project in")]) -> None:
    """Create a project folder with a commented pipeline.yaml and a data/ folder."""
    from importlib.resources import files

    target = directory / "pipeline.yaml"
    if target.exists():
        err.print(f"[red]error[/] {target} already exists; not overwriting it")
        raise typer.Exit(1)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    text = files("genloom").joinpath("templates/pipeline.yaml").read_text(encoding="utf-8")
    target.write_text(
        text.replace("name: my-project", f"name: {_slug(directory.resolve().name)}"), encoding="utf-8"
    )
    out.print(f"created {target} and {directory / 'data'}/\nnext: genloom run {target}")


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "project"


@app.command()
def validate(file: FileArg, set_: SetOpt = None) -> None:
    """Check a pipeline file; print OK or each mistake with its place and fix (exit code 2)."""
    from genloom.core.config import load_config

    try:
        load_config(file, set_)  # relative paths inside are relative to the file's folder
    except GenloomError as e:
        _fail(e)
    out.print(f"{file}: OK")


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline files (for editor completion)."""
    from genloom.core.config import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=1) + "\n")


@app.command("list")
def list_components(
    stage: Annotated[str | None, typer.Argument(help="sources, augment, clean, preprocess, features")] = None,
) -> None:
    """List every component (the YAML ``type:``) with the first line of its documentation."""
    from genloom.core.registry import REGISTRIES, first_doc_line, suggest

    if stage is not None and stage not in REGISTRIES:
        err.print(
            f"[red]error[/] unknown stage {stage!r}; {suggest(stage, list(REGISTRIES))} "
            f"stages: {', '.join(REGISTRIES)}"
        )
        raise typer.Exit(2)
    for name, registry in REGISTRIES.items():
        if stage and name != stage:
            continue
        table = Table(title=name, show_header=False, title_justify="left")
        table.add_column("type", style="bold")
        table.add_column("what it does")
        for comp, cls in registry.items():
            table.add_row(comp, first_doc_line(cls))
        out.print(table)


@app.command()
def run(
    file: FileArg,
    until: Annotated[str | None, typer.Option(help="Stop after this stage")] = None,
    force: Annotated[
        list[str] | None, typer.Option(help="Rerun this stage even if cached (repeatable)")
    ] = None,
    set_: SetOpt = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="rich (humans) or json (machines)")
    ] = LogFormat.rich,
    progress_every: Annotated[
        float,
        typer.Option(
            "--progress-every",
            min=0,
            help="Without a terminal (log file, CI): a progress line every N seconds (0: at stage ends only)",
        ),
    ] = 10.0,
) -> None:
    """Run the pipeline: every stage whose artifact is missing; the others are cache hits."""
    from genloom.console import JsonReporter, PlainReporter, RichReporter, summary_table
    from genloom.core.progress import Reporter

    reporter: Reporter
    if log_format == LogFormat.json:
        reporter = JsonReporter()
    elif err.is_terminal:
        reporter = RichReporter(err)
    else:
        reporter = PlainReporter(interval=progress_every)
    try:
        pipeline = _pipeline(file, set_, reporter)
        summary = pipeline.run(until=until, force=force)
    except GenloomError as e:
        reporter.close()
        _fail(e)
    finally:
        reporter.close()
    if log_format == LogFormat.json:
        reporter.message(
            "summary",
            run_id=summary.run_id,
            status=summary.status,
            seconds=round(summary.seconds, 2),
            stages=[r.__dict__ for r in summary.stages],
            model=summary.model,
        )
        return
    out.print(summary_table(summary))
    if summary.report:
        out.print(f"report: {summary.report}", soft_wrap=True)
    if summary.model:
        m = summary.model
        if m.get("gates"):
            out.print(gate_table(m["gates"]))
        out.print(f"model [bold]{m['name']}[/] v{m['version']} is [bold]{m['stage']}[/] ({m['decision']})")
        if m.get("profile"):
            out.print(
                f"reference profile: {m['profile']} (genloom monitor compares traffic with it)",
                highlight=False,
            )
        if m["stage"] == "champion" or pipeline.catalog.champion(m["name"]):
            from genloom.models.base import family

            quoted = shlex.quote(str(file))
            if family(pipeline.cfg.train.model.type).generates_text:
                prompt = shlex.quote(_example_prompt(pipeline, summary))
                hint = f"generate text:  genloom generate {quoted} --prompt {prompt}"
            else:
                hint = f"generate records:  genloom sample {quoted} -n 1000 --seed 0 -o synthetic.parquet"
            out.print(hint, markup=False, highlight=False, soft_wrap=True)


def gate_table(rows: list[dict[str, Any]]) -> Table:
    """The quality gates of a run: gate, metric, value, champion's value, bound, passed, missed by."""

    def num(v: Any) -> str:
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    table = Table(title="quality gates", title_justify="left")
    for col in ("gate", "metric", "value", "champion", "bound", "passed", "missed by"):
        table.add_column(
            col,
            justify="right" if col in ("value", "champion", "bound") else "left",
            no_wrap=col in ("gate", "metric"),
        )
    for r in rows:
        passed = "[green]yes[/]" if r["passed"] else "[red]no[/]"
        missed = num(r.get("missed_by")) if not r["passed"] else ""
        if not r["passed"] and r.get("missed_by") is None:  # "the model does not report it"...
            missed = r.get("note") or ""
        table.add_row(
            r["gate"],
            r["metric"],
            num(r.get("value")),
            num(r.get("champion")),
            num(r.get("bound")),
            passed,
            missed,
        )
    return table


def _example_prompt(pipeline: Any, summary: Any, words: int = 3) -> str:
    """The first words of a record the model was trained on, or a placeholder when there is none."""
    from genloom.pipeline import DATA_STAGES

    done = [r for r in summary.stages if r.stage in DATA_STAGES and r.key and r.status in ("ran", "cached")]
    if done:
        last = done[-1]
        try:
            for batch in pipeline.store.iter_artifact(last.stage, last.key, columns=["text"]):
                for text in batch.column("text").to_pylist():
                    found = (text or "").split()
                    if len(found) >= words and all(w.isprintable() for w in found[:words]):
                        return " ".join(found[:words])
        except (GenloomError, OSError, KeyError, ValueError):
            pass  # only a hint: a placeholder will do
    return "<your text>"


@app.command()
def report(
    file: FileArg = Path("pipeline.yaml"),
    run_id: Annotated[
        str | None, typer.Option("--run", help="A run id (or its start; default: the latest run with one)")
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the report in the web browser")] = False,
    features: Annotated[
        bool,
        typer.Option("--features", help="Write the feature report of the features stage's output instead"),
    ] = False,
) -> None:
    """The path of a run's evaluation report (self-contained HTML); --open shows it.
    With --features: write the feature report (top terms, topics, sentiment, embeddings...) and print its path."""
    from genloom.evaluate.report import find_report

    try:
        pipeline = _pipeline(file)
        try:
            if features:
                from genloom.stages.feature_report import write_feature_report

                path = write_feature_report(pipeline)
            else:
                path = find_report(pipeline.catalog, pipeline.store, pipeline.cfg.name, run_id)
        finally:
            pipeline.close()
    except GenloomError as e:
        _fail(e)
    out.print(str(path), soft_wrap=True, highlight=False)
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command()
def status(file: Annotated[Path, typer.Argument(help="The pipeline file")] = Path("pipeline.yaml")) -> None:
    """Recent runs (what ran, what was cached) and the model versions."""
    try:
        info = _pipeline(file).status()
    except GenloomError as e:
        _fail(e)
    if not info["runs"]:
        out.print("no runs yet: genloom run " + str(file))
    for r in info["runs"]:
        t = Table(
            title=f"run {r['id']} {r['status']} {r['started_at']:%Y-%m-%d %H:%M:%S}", title_justify="left"
        )
        for c in ("stage", "status", "seconds", "key", "why"):
            t.add_column(c, overflow="fold")
        for s in r["stages"]:
            t.add_row(
                s["stage"], s["status"], f"{s['seconds'] or 0:.1f}", (s["key"] or "")[:12], s["reason"] or ""
            )
        out.print(t)
    if info["models"]:
        t = Table(title="models", title_justify="left")
        for c in ("name", "version", "stage", "metrics", "created"):
            t.add_column(c, overflow="fold")
        for m in info["models"]:
            metrics = ", ".join(
                f"{k}={v:.4g}" for k, v in (m["metrics"] or {}).items() if isinstance(v, float)
            )
            t.add_row(m["name"], str(m["version"]), m["stage"], metrics, f"{m['created_at']:%Y-%m-%d %H:%M}")
        out.print(t)


@app.command()
def explain(
    file: Annotated[Path, typer.Argument(help="The pipeline file")] = Path("pipeline.yaml"),
    set_: SetOpt = None,
) -> None:
    """For each stage: cached or will run, and which input or config change causes it."""
    try:
        rows = _pipeline(file, set_).explain()
    except GenloomError as e:
        _fail(e)
    t = Table()
    for c in ("stage", "will", "key", "because"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(r["stage"], r["status"], (r["key"] or "")[:12], r["reason"])
    out.print(t)


@app.command()
def lineage(
    record_id: Annotated[str, typer.Argument(help="A record id, e.g. python_docs:module/json/__init__.py")],
    file: Annotated[Path, typer.Option("--file", "-f", help="The pipeline file")] = Path("pipeline.yaml"),
) -> None:
    """A record's source, the steps that touched it, and the artifacts and models it reached."""
    try:
        info = _pipeline(file).lineage(record_id)
    except GenloomError as e:
        _fail(e)
    out.print(f"[bold]{info['id']}[/]")
    if "source" in info:
        out.print(f"  source: {info['source']['source']}  {json.dumps(info['source']['meta'])}")
    for s in info["stages"]:
        state = "kept" if s["present"] else "gone"
        out.print(f"  {s['stage']:<10} {state:<5} artifact {s['artifact'][:12]}")
        for e in s["events"]:
            out.print(f"      {e}")
    if "split" in info:
        out.print(f"  split: {info['split']}")
    for a in info["artifacts"]:
        if a["stage"] not in ("ingest", "augment", "clean", "preprocess", "features"):
            out.print(f"  {a['stage']:<10} artifact {a['key'][:12]}")
    for m in info["models"]:
        out.print(f"  model {m['name']} v{m['version']} ({m['stage']})")


@app.command()
def rejected(
    file: FileArg, stage: Annotated[str, typer.Option(help="Data stage")] = "ingest", limit: int = 50
) -> None:
    """The quarantine table of a data stage: id, step, reason, location."""
    try:
        table = _pipeline(file).rejected(stage)
    except GenloomError as e:
        _fail(e)
    t = Table(title=f"{stage}: {table.num_rows} rejected")
    for c in ("id", "step", "reason", "location", "detail"):
        t.add_column(c, overflow="fold")
    for r in table.slice(0, limit).to_pylist():
        t.add_row(r["id"], r["step"], r["reason"], r["location"], (r["detail"] or "")[:200])
    out.print(t)


@app.command()
def generate(
    file: FileArg,
    prompt: Annotated[list[str], typer.Option(help="Prompt text (repeat for a batch)")],
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable)")] = None,
    seed: int | None = None,
    controls: Annotated[list[str] | None, typer.Option(help="Control attribute k=v (repeatable)")] = None,
) -> None:
    """Generate text with the pipeline's champion model."""
    try:
        model_dir = _pipeline(file).champion_dir()
        from genloom.models.base import family_of

        if not family_of(model_dir).generates_text:
            raise ConfigError(
                "this pipeline's model generates records, not text",
                path="generate",
                hint="use genloom sample",
            )
        from genloom.models.text import generate as gen

        ctl = dict(c.split("=", 1) for c in controls or [])
        texts = gen(
            model_dir,
            list(prompt),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=stop,
            seed=seed,
            controls=ctl or None,
        )
    except GenloomError as e:
        _fail(e)
    for p, t in zip(prompt, texts, strict=True):
        out.print(t if t.startswith(p) else p + t, highlight=False, markup=False)
        if len(prompt) > 1:
            out.print("---")


@app.command()
def sample(
    file: FileArg,
    n: Annotated[int, typer.Option("-n", "--rows", help="How many records to generate")] = 1000,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Condition (repeatable): region=EU, age>=30, age=30..40; an image's label=7; for text, a control k=v"
        ),
    ] = None,
    seed: int | None = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            help="Write .parquet or .csv; for an image model a folder: PNG files and grid.png (default: print the first rows)",
        ),
    ] = None,
    version: Annotated[int | None, typer.Option(help="Model version (default: the champion)")] = None,
) -> None:
    """Generate records with the pipeline's champion: synthetic rows of a table model, images, or texts."""
    import pyarrow as pa

    try:
        if n < 1:
            raise ConfigError("-n must be at least 1", path="-n")
        table = _pipeline(file).sample(n, _conditions(where or []), seed=seed, version=version)
        binary = [
            f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
        ]
        as_images = "image" in binary and (
            out_file is None or out_file.suffix.lower() not in (".parquet", ".csv")
        )
        if out_file is not None and as_images:
            from genloom.models.image_data import write_images

            write_images(table, out_file)
        elif out_file is not None:
            _write_table(table, out_file)
    except GenloomError as e:
        _fail(e)
    report = (table.schema.metadata or {}).get(b"genloom")
    if out_file is not None and as_images:
        out.print(f"wrote {table.num_rows} PNG images and grid.png to {out_file}")
    elif out_file is not None:
        out.print(f"wrote {table.num_rows} rows to {out_file}")
    else:
        shown = table.slice(0, 20)
        for name in binary:  # encoded bytes (an image's PNG) are shown by their size
            sizes = [None if v is None else f"<{len(v)} bytes>" for v in shown.column(name).to_pylist()]
            shown = shown.set_column(shown.schema.get_field_index(name), name, pa.array(sizes, pa.string()))
        cells = [[str(c) for c in shown.column_names]]
        cells += [["" if v is None else str(v) for v in row.values()] for row in shown.to_pylist()]
        widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
        out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
        if as_images:
            out.print("[dim]write the images as PNG files and a grid with -o FOLDER[/dim]")
    if report:
        out.print(f"[dim]{report.decode()}[/dim]")


def _conditions(where: list[str]) -> dict[str, Any]:
    """``--where`` values: ``k=v`` is an equality (a table's column value, a text model's control);
    comparisons and ranges (``age>=30``, ``age=30..40``) are parsed by the table rules."""
    import re

    out: dict[str, Any] = {}
    for w in where:
        plain = re.fullmatch(r"\s*([^=<>!]+?)\s*=\s*(.*?)\s*", w)
        if plain and ".." not in plain.group(2):
            out[plain.group(1)] = plain.group(2)
            continue
        from genloom.models.tabular_rules import parse_condition

        column, condition = parse_condition(w)
        out[column] = condition
    return out


def _write_table(table: Any, path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(table, path, compression="zstd")
    elif suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        raise ConfigError(f"unknown output format {path.suffix!r}", path="--out", hint="use .parquet or .csv")


@app.command()
def export(
    file: FileArg,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="hf: a Hugging Face folder (LlamaForCausalLM for a genloom GPT); gguf: one file for llama.cpp",
        ),
    ] = "hf",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder (hf) or file (gguf) to write (default: exports/<model>-v<N>-hf or .gguf next to the pipeline)",
        ),
    ] = None,
    version: Annotated[int | None, typer.Option(help="Model version (default: the champion)")] = None,
    gguf_type: Annotated[str, typer.Option(help="gguf: f32, f16, bf16 or q8_0")] = "f32",
) -> None:
    """Export the champion (or a version) so transformers, vLLM or llama.cpp can load it."""
    try:
        if format not in ("hf", "gguf"):
            raise ConfigError(f"unknown export format {format!r}", path="--format", hint="hf or gguf")
        p = _pipeline(file)
        model_dir = p.model_dir(version)
        number = version or p.catalog.champion(p.model_name)["version"]
        from genloom.models.export import export_gguf, export_model

        if format == "gguf":
            target = out_dir or p.base_dir / "exports" / f"{p.model_name}-v{number}-{gguf_type}.gguf"
            written = export_gguf(model_dir, target, gguf_type)
        else:
            written = export_model(
                model_dir, out_dir or p.base_dir / "exports" / f"{p.model_name}-v{number}-hf"
            )
    except GenloomError as e:
        _fail(e)
    out.print(f"exported {p.model_name} v{number} to {written}")


@setup_app.command("wordnet")
def setup_wordnet(target: Annotated[Path | None, typer.Option(help="nltk_data folder")] = None) -> None:
    """Make Debian's WordNet (wordnet-base, wordnet-sense-index) readable by NLTK, offline."""
    try:
        from genloom.augment.wordnet_setup import setup_wordnet as do_setup

        path = do_setup(target) if target else do_setup()
    except (GenloomError, ImportError) as e:
        _fail(
            e if isinstance(e, GenloomError) else MissingDependencyError("nltk", "pip install 'genloom[nlp]'")
        )
    out.print(f"WordNet ready at {path}")


@app.command()
def serve(
    file: FileArg,
    host: Annotated[
        str, typer.Option(help="Address to listen on (not loopback: API keys required)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    version: Annotated[int | None, typer.Option(help="Model version (default: the champion)")] = None,
    require_key: Annotated[
        bool, typer.Option("--require-key", help="Need an API key on loopback too (always off loopback)")
    ] = False,
    redact: Annotated[bool, typer.Option("--redact", help="Store no prompt or output text")] = False,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body (else 413)")] = 1_000_000,
    max_prompt_tokens: Annotated[int, typer.Option(help="Longest prompt in tokens (else 400)")] = 4096,
    max_tokens: Annotated[int, typer.Option(help="Cap on a request's max_tokens")] = 512,
    max_batch: Annotated[int, typer.Option(help="KV-cache slots: rows decoded together (GPT engine)")] = 16,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a slot before a 503")] = 64,
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may take (else 504)")] = 120.0,
    threads: Annotated[
        int | None, typer.Option(help="torch threads of the engine (default: cores - 1, at least 1)")
    ] = None,
    follow_champion: Annotated[
        bool,
        typer.Option(
            "--follow-champion",
            help="Hot-swap to each newly promoted champion (the previous version stays on a failed load)",
        ),
    ] = False,
    follow_interval: Annotated[
        float, typer.Option(help="Seconds between two looks at the champion (--follow-champion)")
    ] = 10.0,
    requests_per_minute: Annotated[
        int | None, typer.Option(help="Requests per minute per API key, per worker (else 429)")
    ] = None,
    tokens_per_minute: Annotated[
        int | None, typer.Option(help="Prompt + completion tokens per minute per API key, per worker")
    ] = None,
    quantize: Annotated[
        str | None, typer.Option(help="int8: the GPT engine's Linear layers in int8 (dynamic quantisation)")
    ] = None,
    compile_step: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="GPT engine: the decode step compiled ahead of time (AOTInductor; ~50 s at the first start, "
            "then loaded from --compile-dir)",
        ),
    ] = False,
    compile_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where --compile keeps its packages (default: .genloom/compiled beside the pipeline file)"
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes behind the port, each with its own copy of the model (threads: cores // N)",
        ),
    ] = 1,
    embedding_model: Annotated[
        str | None,
        typer.Option(
            help="Serve POST /v1/embeddings with this encoder: a local folder, or 'default' (the offline all-MiniLM-L6-v2)"
        ),
    ] = None,
) -> None:
    """Serve the pipeline's champion over HTTP: the OpenAI API for text, /v1/samples for tables."""
    import tempfile

    try:
        import uvicorn

        from genloom.serve.app import (
            SERVE_SPEC_ENV,
            configure_logging,
            create_app,
            is_loopback,
            registered_model,
            write_serve_spec,
        )
        from genloom.serve.schemas import ServeSettings
    except ImportError as e:
        _fail(MissingDependencyError(e.name or "fastapi", "pip install 'genloom[serve]'"))
    from pydantic import ValidationError

    try:
        settings = ServeSettings(
            require_key=require_key or not is_loopback(host),
            redact=redact,
            max_body_bytes=max_body_bytes,
            max_prompt_tokens=max_prompt_tokens,
            max_tokens_cap=max_tokens,
            max_batch=max_batch,
            max_queue=max_queue,
            request_timeout_s=request_timeout,
            # several workers share the cores: each gets its part, unless told
            threads=threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None),
            follow_interval_s=follow_interval,
            quantize=quantize,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            embedding_model=embedding_model,
            compile_dir=(
                (compile_dir or Path(file).resolve().parent / ".genloom" / "compiled").resolve()
                if compile_step or compile_dir is not None
                else None
            ),
        )
    except ValidationError as e:
        _fail(ConfigError(str(e).splitlines()[-1].strip(), path="serve"))
    if follow_champion and version is not None:
        _fail(ConfigError("--follow-champion serves the champion: drop --version", path="serve"))
    try:
        p = _pipeline(file)
        loader = registered_model(p, version)
        api = create_app(loader, p.catalog, settings=settings, follow=loader if follow_champion else None)
    except GenloomError as e:
        _fail(e)
    configure_logging()
    auth = "API key required" if settings.require_key else "no API key needed (loopback)"
    procs = f", {workers} workers" if workers > 1 else ""
    err.print(
        f"serving {p.model_name} on http://{host}:{port} ({auth}{procs}); /readyz says when it is loaded"
    )
    if workers == 1:
        uvicorn.run(api, host=host, port=port, access_log=False, log_level="warning")
        return
    p.close()  # each worker opens the pipeline and loads the model itself
    with tempfile.TemporaryDirectory(prefix="genloom-serve-") as tmp:
        spec = Path(tmp) / "serve.json"
        write_serve_spec(spec, file, version, follow_champion, settings)
        os.environ[SERVE_SPEC_ENV] = str(spec)
        uvicorn.run(
            "genloom.serve.app:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
        )


keys_app = typer.Typer(
    no_args_is_help=True, help="API keys of `genloom serve` (stored hashed in the catalog)."
)
app.add_typer(keys_app, name="keys")
PipelineOpt = Annotated[Path, typer.Option("--pipeline", "-p", help="The pipeline file")]


def _key_store(file: Path) -> Any:
    from genloom.serve.keys import KeyStore

    return KeyStore(_pipeline(file).catalog.engine)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for")],
    file: PipelineOpt = Path("pipeline.yaml"),
    write: Annotated[
        bool,
        typer.Option("--write", help="The key may also change data (the dashboard's records and labels)"),
    ] = False,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    try:
        key_id, key = _key_store(file).create(name, write=write)
    except GenloomError as e:
        _fail(e)
    rights = "read and write" if write else "read"
    err.print(f"created key {key_id} ({rights}) for {name}; it is shown only now:")
    out.print(key, highlight=False, markup=False)


@keys_app.command("list")
def keys_list(file: PipelineOpt = Path("pipeline.yaml")) -> None:
    """Every API key's id and name (never the key)."""
    try:
        rows = _key_store(file).list()
    except GenloomError as e:
        _fail(e)
    table = Table("id", "name", "created", "revoked", "write")
    for r in rows:
        revoked = r["revoked_at"].isoformat(timespec="seconds") if r["revoked_at"] else ""
        write = "yes" if r["can_write"] else ""
        table.add_row(r["id"], r["name"], r["created_at"].isoformat(timespec="seconds"), revoked, write)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (genloom keys list)")],
    file: PipelineOpt = Path("pipeline.yaml"),
) -> None:
    """Revoke an API key; it stops working at once."""
    try:
        _key_store(file).revoke(key_id)
    except GenloomError as e:
        _fail(e)
    out.print(f"revoked key {key_id}")


def _register_command_groups() -> None:
    # commands that live with their package (monitoring); the module keeps its heavy imports
    # inside the commands, so `genloom --help` stays fast
    from genloom.monitor import cli as monitor_cli

    monitor_cli.register(app, out, err, _fail, _pipeline)
    from genloom.ui import cli as ui_cli

    ui_cli.register(app, out, err, _fail, _pipeline)


_register_command_groups()


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
