"""Every example pipeline validates and runs end to end in a smoke mode (tiny model, few steps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genloom.core.config import load_config
from genloom.models.base import family
from genloom.pipeline import Pipeline

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*/pipeline.yaml"))
#: a table model: a few steps of small batches (divisible by the GAN's pac of 10)
TABLE_SMOKE = ["train.max_steps=15", "train.batch_size=100", "train.threads=1"]
SMOKE = [
    "train.model.preset=tiny",
    "train.time_budget=null",
    "train.max_steps=15",
    "train.batch_size=4",
    "train.eval_tokens=2048",
    "train.threads=1",
    "train.tokenizer.vocab_size=512",
]


def _shared_paths(path: Path) -> list[str]:
    """``--set`` overrides that point each source's paths outside the example folder (the shared
    data) at their absolute place, so the example runs from a copy; skips when that data is absent."""
    cfg = yaml.safe_load(path.read_text())
    out = []
    for i, source in enumerate(cfg.get("sources", [])):
        paths = source.get("paths") or []
        if any(str(x).startswith("..") for x in paths):
            resolved = [(path.parent / x).resolve() for x in paths]
            if not all(r.exists() for r in resolved):
                pytest.skip(f"{path.parent.name} reads {paths}, absent here (../shared/data)")
            out.append(f"sources.{i}.paths=[{', '.join(str(r) for r in resolved)}]")
    return out


def _support_tickets(folder: Path) -> None:
    """Create and fill the support-bot example's table in the machine's PostgreSQL with the
    example's own script; skips when PostgreSQL is not reachable."""
    psycopg = pytest.importorskip("psycopg", reason="pip install 'genloom[sql]'")
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3)
    except psycopg.OperationalError as e:
        pytest.skip(f"support-bot reads PostgreSQL, not reachable on 127.0.0.1:5432 ({e})")
    with conn:
        conn.execute((folder / "support_tickets.sql").read_text())
    conn.close()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    _shared_paths(path)  # skips when the example's shared data is absent
    load_config(path)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_runs_in_smoke_mode(path: Path, tmp_path: Path) -> None:
    folder = tmp_path / path.parent.name
    shutil.copytree(path.parent, folder, ignore=shutil.ignore_patterns(".genloom"))
    model_type = (yaml.safe_load(path.read_text()).get("train") or {}).get("model", {}).get("type", "gpt")
    text_model = family(model_type).generates_text
    overrides = list(SMOKE if text_model else TABLE_SMOKE) + _shared_paths(path)
    if path.parent.name == "quickstart":
        overrides.append("sources.0.packages=[json, textwrap]")
    if path.parent.name == "support-bot":
        _support_tickets(folder)
    offline = path.parent.name == "quickstart" and _offline_available()
    if offline:
        # Offline as a tested guarantee: the quickstart runs end to end through `genloom run` in a
        # network namespace with no interface up (not even loopback), so any code path that would
        # reach the network fails this test. The in-process run below is then all cache hits.
        _run_offline(folder / "pipeline.yaml", overrides)
    summary = Pipeline.from_file(folder / "pipeline.yaml", overrides=overrides).run()
    if offline:
        assert {s.stage: s.status for s in summary.stages if s.status == "ran"} == {}
    assert summary.status == "succeeded"
    assert summary.model is not None and summary.model["version"] == 1


def _offline_available() -> bool:
    """True where ``unshare -n`` can make a network namespace (root, as in CI) and it has no network."""
    if shutil.which("unshare") is None:
        return False
    probe = "import socket\ntry:\n socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept OSError as e:\n print(e.errno)"
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", probe], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == "101"  # ENETUNREACH: no interface up


def _run_offline(pipeline: Path, overrides: list[str]) -> None:
    genloom = Path(sys.executable).with_name("genloom")
    sets = [arg for o in overrides for arg in ("--set", o)]
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        ["unshare", "-n", str(genloom), "run", str(pipeline), "--log-format", "json", *sets],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"genloom run failed without network:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
