"""The dashboard's pages, added to the server app of ``genloom serve`` (``create_app``): one
process answers the OpenAI API under ``/v1`` and the pages under ``/ui``.

Pages read the catalog, the monitoring log and the request log; the playground generates through
the app's own ``/v1/completions`` or ``/v1/samples`` (called in process, so the request passes the
same limits, engine and request log as any client's). Writes (new records, labels) need an API key
with write rights (``genloom keys create NAME --write``), given once on ``/ui/key`` (kept in an
HttpOnly, SameSite=Strict cookie) or as ``Authorization: Bearer``; with ``require_key`` every page
needs a key.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select

from genloom.core.catalog import lineage as lineage_table
from genloom.core.errors import ConfigError, GenloomError, NotFoundError
from genloom.monitor.store import MonitorLog
from genloom.serve.app import Clock, ModelLoader, create_app, registered_model
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog
from genloom.serve.traffic import feedback as feedback_table
from genloom.ui.records import ManualFile, manual_files
from genloom.ui.svg import line_chart

if TYPE_CHECKING:
    from genloom.pipeline import Pipeline

KEY_COOKIE = "genloom_key"
TEMPLATES = Path(__file__).parent / "templates"
PAGES = (
    ("/ui/", "Overview"),
    ("/ui/runs", "Runs"),
    ("/ui/models", "Models"),
    ("/ui/reports", "Reports"),
    ("/ui/drift", "Drift"),
    ("/ui/requests", "Requests"),
    ("/ui/playground", "Playground"),
    ("/ui/records", "Records"),
    ("/ui/key", "Key"),
)


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_dashboard(
    pipeline: Pipeline,
    settings: ServeSettings | None = None,
    loader: ModelLoader | None = None,
    keys: KeyStore | None = None,
    clock: Clock = time.time,
) -> FastAPI:
    """The server app of ``pipeline``'s champion (``create_app``) with the dashboard's pages."""
    settings = settings or ServeSettings()
    keys = keys or KeyStore(pipeline.catalog.engine)
    app = create_app(
        loader or registered_model(pipeline), pipeline.catalog, keys=keys, settings=settings, clock=clock
    )
    app.include_router(dashboard_router(app, pipeline, keys, settings.require_key))
    return app


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None and hasattr(value, "strftime") else ""


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def dashboard_router(app: FastAPI, pipeline: Pipeline, keys: KeyStore, require_key: bool) -> APIRouter:
    """The dashboard's routes over ``pipeline``; ``app`` answers the playground's calls."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["when"] = _when
    env.filters["num"] = _num
    env.filters["short"] = lambda key: (key or "")[:12]
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    catalog = pipeline.catalog
    monitor = MonitorLog(catalog.engine)
    traffic = RequestLog(catalog.engine)
    router = APIRouter()

    def key_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return request.cookies.get(KEY_COOKIE)

    def may_read(request: Request) -> None:
        if require_key:
            key = key_of(request)
            if key is None or keys.verify(key) is None:
                raise _Denied(401, "this dashboard needs an API key: give one on the Key page")

    def may_write(request: Request) -> str:
        key = key_of(request)
        key_id = keys.verify(key, write=True) if key else None
        if key_id is None:
            raise _Denied(
                403,
                "writing needs an API key with write rights (genloom keys create NAME --write), "
                "given on the Key page",
            )
        return key_id

    def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        key = key_of(request)
        context = {
            "pages": PAGES,
            "path": request.url.path,
            "pipeline": pipeline.cfg.name,
            "model_name": pipeline.model_name,
            "can_write": bool(key and keys.verify(key, write=True)),
            "has_key": bool(key and keys.verify(key)),
            **values,
        }
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def guarded(request: Request, name: str, build: Any) -> HTMLResponse:
        try:
            may_read(request)
            return page(request, name, **build())
        except _Denied as e:
            return page(request, "error.html", e.status, message=e.message)
        except NotFoundError as e:
            return page(request, "error.html", 404, message=str(e))
        except GenloomError as e:  # the store or catalog could not answer: said on the page
            return page(request, "error.html", 500, message=str(e))

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            state = app.state.genloom
            served = state.model
            return {
                "champion": catalog.champion(pipeline.model_name),
                "served": served,
                "load_error": state.load_error,
                "runs": catalog.runs(pipeline.cfg.name, limit=5),
                "decisions": monitor.decisions(pipeline.model_name, limit=5),
            }

        return guarded(request, "overview.html", build)

    @router.get("/ui/runs", response_class=HTMLResponse, include_in_schema=False)
    def runs(request: Request) -> HTMLResponse:
        return guarded(request, "runs.html", lambda: {"runs": catalog.runs(pipeline.cfg.name, limit=100)})

    @router.get("/ui/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        def build() -> dict[str, Any]:
            found = [r for r in catalog.runs(pipeline.cfg.name, limit=1000) if r["id"] == run_id]
            if not found:
                raise NotFoundError(f"pipeline {pipeline.cfg.name!r} has no run {run_id!r}")
            return {"run": found[0], "stages": [stage_view(s) for s in catalog.stage_runs(run_id)]}

        return guarded(request, "run.html", build)

    @router.get("/ui/artifacts/{key}", response_class=HTMLResponse, include_in_schema=False)
    def artifact_page(request: Request, key: str) -> HTMLResponse:
        def build() -> dict[str, Any]:
            artifact = catalog.artifact(key)
            if artifact is None:
                raise NotFoundError(f"no artifact with key {key!r}")
            with catalog.engine.connect() as c:
                q = select(lineage_table.c.parent).where(lineage_table.c.child == key)
                parents = [r[0] for r in c.execute(q)]
            inputs = [catalog.artifact(k) or {"key": k, "stage": "?"} for k in parents]
            outputs = [catalog.artifact(k) or {"key": k, "stage": "?"} for k in catalog.children(key)]
            models = [
                {**m, "requests": traffic.served(m["name"], int(m["version"]))}
                for m in catalog.models(pipeline.model_name)
                if m["artifact_key"] == key
            ]
            return {"artifact": artifact, "inputs": inputs, "outputs": outputs, "models": models}

        return guarded(request, "artifact.html", build)

    @router.get("/ui/lineage", response_class=HTMLResponse, include_in_schema=False)
    def lineage_page(request: Request, id: str = "") -> HTMLResponse:
        def build() -> dict[str, Any]:
            found, error = None, None
            if id:
                try:
                    found = pipeline.lineage(id)
                except GenloomError as e:
                    error = str(e)
            return {"record_id": id, "found": found, "error": error}

        return guarded(request, "lineage.html", build)

    @router.get("/ui/models", response_class=HTMLResponse, include_in_schema=False)
    def models(request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            versions = catalog.models(pipeline.model_name)
            history = champion_history()
            metric_names = sorted({k for v in versions for k in (v["metrics"] or {})})
            return {"versions": versions, "history": history, "metric_names": metric_names}

        return guarded(request, "models.html", build)

    def champion_history() -> list[dict[str, Any]]:
        """Every change of champion, oldest first: registrations that became champion (the
        register stage of each run) and the monitor's promote and rollback decisions."""
        events: list[dict[str, Any]] = []
        for run in catalog.runs(pipeline.cfg.name, limit=1000):
            for s in catalog.stage_runs(run["id"]):
                stats = s["stats"] or {}
                if s["stage"] == "register" and s["status"] == "ran" and stats.get("version"):
                    events.append(
                        {
                            "at": run["finished_at"] or run["started_at"],
                            "version": stats.get("version"),
                            "what": f"registered as {stats.get('stage')}",
                            "by": f"run {run['id'][:8]}",
                            "run_id": run["id"],
                        }
                    )
        for d in monitor.decisions(pipeline.model_name, limit=1000):
            if d["action"] in ("promote", "rollback", "keep", "failed"):
                events.append(
                    {
                        "at": d["created_at"],
                        "version": d["challenger_version"]
                        if d["action"] == "promote"
                        else d["champion_version"],
                        "what": f"{d['action']}: {d['reason']}",
                        "by": "genloom monitor" if d["action"] != "rollback" else "genloom rollback",
                        "run_id": None,
                    }
                )
        events.sort(key=lambda e: _when(e["at"]))
        return events

    def evaluations() -> list[dict[str, Any]]:
        out = []
        for run in catalog.runs(pipeline.cfg.name, limit=200):
            for s in catalog.stage_runs(run["id"]):
                if s["stage"] == "evaluate" and s["key"]:
                    out.append({"run": run, "stage": s, "key": s["key"]})
        seen: set[str] = set()
        unique = []
        for e in out:  # a cached evaluation repeats its key: list it once, at its newest run
            if e["key"] not in seen:
                seen.add(e["key"])
                unique.append(e)
        return unique

    @router.get("/ui/reports", response_class=HTMLResponse, include_in_schema=False)
    def reports(request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            items = evaluations()
            for item in items:
                item["has_report"] = report_path(item["key"]) is not None
            return {"items": items}

        return guarded(request, "reports.html", build)

    def report_path(key: str) -> Path | None:
        if not pipeline.store.has_artifact("evaluate", key):
            return None
        path = Path(pipeline.store.fetch_artifact("evaluate", key)) / "report.html"
        return path if path.exists() else None

    @router.get("/ui/reports/{key}/report.html", include_in_schema=False)
    def report_file(request: Request, key: str) -> Response:
        try:
            may_read(request)
        except _Denied as e:
            return page(request, "error.html", e.status, message=e.message)
        path = report_path(key) if key.isalnum() else None
        if path is None:
            return page(request, "error.html", 404, message=f"evaluation {key!r} has no report.html")
        return FileResponse(path, media_type="text/html")

    @router.get("/ui/drift", response_class=HTMLResponse, include_in_schema=False)
    def drift(request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            checks = list(reversed(monitor.checks(pipeline.model_name, limit=5000)))  # oldest first
            groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
            for c in checks:
                groups.setdefault((c["kind"], c["signal"], c["method"]), []).append(c)
            charts = []
            for (kind, signal, method), rows in sorted(groups.items()):
                scored = [r for r in rows if r["score"] is not None]
                threshold = next((r["threshold"] for r in reversed(rows) if r["threshold"] is not None), None)
                points = [(r["created_at"], float(r["score"]), bool(r["breached"])) for r in scored]
                charts.append(
                    {
                        "kind": kind,
                        "signal": signal,
                        "method": method,
                        "threshold": threshold,
                        "last": rows[-1],
                        "svg": line_chart(points, threshold, label=f"{signal} ({method})"),
                    }
                )
            return {"charts": charts, "decisions": monitor.decisions(pipeline.model_name, limit=20)}

        return guarded(request, "drift.html", build)

    @router.get("/ui/requests", response_class=HTMLResponse, include_in_schema=False)
    def requests_page(request: Request, model: str | None = None, version: int | None = None) -> HTMLResponse:
        def build() -> dict[str, Any]:
            rows = traffic.recent(200, model, version)
            keys = {(m["name"], int(m["version"])): m["artifact_key"] for m in catalog.models()}
            ids = [r["request_id"] for r in rows]
            by_request: dict[str, list[dict[str, Any]]] = {}
            if ids:
                q = (
                    select(feedback_table)
                    .where(feedback_table.c.request_id.in_(ids))
                    .order_by(feedback_table.c.id)
                )
                with catalog.engine.connect() as c:
                    for f in c.execute(q):
                        by_request.setdefault(f.request_id, []).append(dict(f._mapping))
            return {
                "rows": rows,
                "feedback": by_request,
                "artifacts": {f"{n}:{v}": k for (n, v), k in keys.items()},
                "model": model,
                "version": version,
            }

        return guarded(request, "requests.html", build)

    @router.get("/ui/playground", response_class=HTMLResponse, include_in_schema=False)
    def playground(request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            served = app.state.genloom.model
            kind = None if served is None else ("text" if served.family.generates_text else "samples")
            return {"served": served, "kind": kind, "load_error": app.state.genloom.load_error}

        return guarded(request, "playground.html", build)

    @router.post("/ui/api/generate", include_in_schema=False)
    async def generate(request: Request) -> JSONResponse:
        """The playground's call: its JSON body goes to ``/v1/completions`` (text) or
        ``/v1/samples`` (rows) of this app, with the caller's key; the answer comes back as is."""
        try:
            may_read(request)
        except _Denied as e:
            return JSONResponse({"error": {"message": e.message}}, status_code=e.status)
        body = await request.body()
        served = app.state.genloom.model
        path = "/v1/samples" if served is not None and not served.family.generates_text else "/v1/completions"
        status, headers, answer = await call_app(app, path, body, key_of(request))
        content = json.loads(answer) if answer else {}
        if isinstance(content, dict):
            content["request_id"] = headers.get("x-request-id")
        return JSONResponse(content, status_code=status)

    @router.get("/ui/records", response_class=HTMLResponse, include_in_schema=False)
    def records(request: Request, source: int = 0, done: str = "") -> HTMLResponse:
        def build() -> dict[str, Any]:
            files = manual_files(list(pipeline.cfg.sources))
            chosen = files[source] if 0 <= source < len(files) else None
            return {
                "files": files,
                "chosen": chosen,
                "index": source,
                "rows": chosen.rows() if chosen else [],
                "done": done,
            }

        return guarded(request, "records.html", build)

    def manual_file(source: int) -> ManualFile:
        files = manual_files(list(pipeline.cfg.sources))
        if not 0 <= source < len(files):
            raise NotFoundError(f"the pipeline has no manual source number {source}")
        return files[source]

    @router.post("/ui/records", include_in_schema=False)
    async def add_record(request: Request) -> Response:
        form = await form_of(request)
        try:
            may_write(request)
            source = _int(form.get("source", "0"), "source")
            file = manual_file(source)
            text, author = form.get("text", "").strip(), form.get("author", "").strip()
            if not text or not author:
                raise ConfigError("a new record needs its text and its author")
            extra = {form.get("label_field", "").strip() or "label": form.get("label", "").strip()}
            row = file.append(text, author, extra)
        except _Denied as e:
            return page(request, "error.html", e.status, message=e.message)
        except GenloomError as e:
            return page(request, "error.html", 400, message=str(e))
        done = quote(f"added line {row.line} to {file.source.path}")
        return RedirectResponse(f"/ui/records?source={source}&done={done}", status_code=303)

    @router.post("/ui/records/label", include_in_schema=False)
    async def label_record(request: Request) -> Response:
        form = await form_of(request)
        try:
            may_write(request)
            source = _int(form.get("source", "0"), "source")
            line = _int(form.get("line", ""), "line")
            label = form.get("label", "").strip()
            if not label:
                raise ConfigError("the label is empty")
            file = manual_file(source)
            file.label(line, form.get("label_field", "").strip() or "label", label)
        except _Denied as e:
            return page(request, "error.html", e.status, message=e.message)
        except GenloomError as e:
            return page(request, "error.html", 400, message=str(e))
        done = quote(f"labelled line {line} of {file.source.path}")
        return RedirectResponse(f"/ui/records?source={source}&done={done}", status_code=303)

    @router.get("/ui/key", response_class=HTMLResponse, include_in_schema=False)
    def key_page(request: Request) -> HTMLResponse:
        return page(request, "key.html", require_key=require_key, message="")

    @router.post("/ui/key", include_in_schema=False)
    async def set_key(request: Request) -> Response:
        form = await form_of(request)
        if form.get("forget"):
            response = RedirectResponse("/ui/key", status_code=303)
            response.delete_cookie(KEY_COOKIE, path="/")
            return response
        key = form.get("key", "").strip()
        if keys.verify(key) is None:
            return page(
                request, "key.html", 401, require_key=require_key, message="unknown or revoked API key"
            )
        response = RedirectResponse("/ui/", status_code=303)
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path="/")
        return response

    return router


async def form_of(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form post (the pages' forms send nothing else), last value wins."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not a whole number") from None


def stage_view(s: dict[str, Any]) -> dict[str, Any]:
    """A stage run as the run page shows it: rows in and out, drops by reason, per step."""
    stats = dict(s["stats"] or {})
    steps = stats.pop("steps") if isinstance(stats.get("steps"), dict) else {}
    step_rows = []
    rows_in = stats.pop("rows_in", None)
    rows_out = stats.pop("rows_out", None)
    for name, st in steps.items():
        if not isinstance(st, dict):
            continue
        step_rows.append(
            {
                "name": name,
                "rows_in": st.get("rows_in"),
                "rows_out": st.get("rows_out"),
                "dropped": st.get("dropped") or {},
                "seconds": st.get("seconds"),
            }
        )
    if rows_out is None and step_rows:
        rows_out = step_rows[-1]["rows_out"]
    if rows_in is None and step_rows:
        rows_in = step_rows[0]["rows_in"]
    dropped: dict[str, int] = {}
    for st in step_rows:
        for reason, n in st["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + int(n or 0)
    return {
        **s,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dropped,
        "steps": step_rows,
        "other": {k: v for k, v in stats.items() if not isinstance(v, dict | list)},
    }


async def call_app(
    app: FastAPI, path: str, body: bytes, key: str | None
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` (JSON) to ``path`` of ``app`` in process, through its middleware: (status,
    headers, body)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    sent = False
    done = asyncio.Event()
    status, out_headers, chunks = 500, {}, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the caller stays connected until the whole answer is out
            await done.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            out_headers.update({k.decode().lower(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return status, out_headers, b"".join(chunks)
