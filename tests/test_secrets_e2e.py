"""Secrets end to end: a pipeline with credentials in four components, run through ``genloom run``.

An encrypted PDF (``pdf.password``), an encrypted workbook (``excel.password``), an encrypted DOCX
(``docx.passwords``, the first one wrong) and ``back_translate.api_key`` against an
OpenAI-compatible server on loopback, every secret given as ``${env:...}``. The run must use every
secret (records from each decrypted file, the key in the Authorization header), and no secret may
appear in any file under the project's ``.genloom`` folder (Parquet shards read back as data),
any catalog row, the CLI's output in both log formats, the log records, ``explain`` or ``status``.
Correcting a wrong password must rerun ingest through the HMAC in the key, and ``explain`` must
name the field without its value.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline
from tests.conftest import FakeLLM
from tests.sources.sources_fixtures import make_docx, make_pdf, make_xlsx

pytest.importorskip("msoffcrypto")
pytest.importorskip("pypdfium2")
pytest.importorskip("fpdf")

PDF_PW = "pdf-Pw-7c1e90aa"
XLSX_PW = "xlsx-Pw-52b8d0f3"
XLSX_WRONG = "xlsx-Wrong-e4a61c2d"
DOCX_PW = "docx-Pw-9d03b7e1"
DOCX_OLD = "docx-Old-0af3c658"
API_KEY = "sk-Key-31f6a2b94c"
ALL_SECRETS = [PDF_PW, XLSX_PW, XLSX_WRONG, DOCX_PW, DOCX_OLD, API_KEY]

runner = CliRunner()


def _encrypt(path: Path, password: str) -> Path:
    """Encrypt an OOXML file in place (ECMA-376 Agile encryption)."""
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    with open(path, "rb") as f:
        OOXMLFile(f).encrypt(password, out)
    path.write_bytes(out.getvalue())
    return path


def _project(root: Path, endpoint: str) -> Path:
    data = root / "data"
    for sub in ("pdf", "xlsx", "docx"):
        (data / sub).mkdir(parents=True)
    make_pdf(data / "pdf" / "manual.pdf", password=PDF_PW)
    _encrypt(make_xlsx(data / "xlsx" / "cups.xlsx"), XLSX_PW)
    _encrypt(make_docx(data / "docx" / "manual.docx"), DOCX_PW)
    cfg = {
        "name": "secrets",
        "sources": [
            {"type": "pdf", "paths": ["data/pdf"], "password": "${env:E2E_PDF_PW}", "ocr": "never"},
            {"type": "excel", "paths": ["data/xlsx"], "password": "${env:E2E_XLSX_PW}"},
            {
                "type": "docx",
                "paths": ["data/docx"],
                "passwords": ["${env:E2E_DOCX_OLD}", "${env:E2E_DOCX_PW}"],
            },
        ],
        "augment": [
            {
                "type": "back_translate",
                "translator": "openai",
                "endpoint": endpoint,
                "api_key": "${env:E2E_API_KEY}",
                "concurrency": 2,
                "timeout_s": 10,
            }
        ],
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _texts_of_files(folder: Path) -> Iterator[tuple[str, str]]:
    """(file, text) for every file under ``folder``: Parquet read back as rows, SQLite as rows,
    everything else as its bytes (decoded leniently), so compression cannot hide a secret."""
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = f.read_bytes()
        yield str(f), raw.decode("utf-8", "replace") + raw.decode("utf-16-le", "replace")
        if f.suffix == ".parquet":
            yield f"{f} (rows)", json.dumps(pq.read_table(f).to_pylist(), default=str)
        if raw.startswith(b"SQLite format 3"):
            yield f"{f} (rows)", "\n".join(_catalog_rows(f))


def _catalog_rows(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [f"{t}: {row!r}" for t in tables for row in con.execute(f'SELECT * FROM "{t}"')]
    finally:
        con.close()


def _leaks(texts: dict[str, str]) -> list[str]:
    """Secrets found in any text, also when a table cell folded one over two lines."""
    found = []
    for where, text in texts.items():
        squashed = re.sub(r"[\s\u2500-\u257f]", "", text)  # whitespace and box-drawing characters
        found += [f"{secret} in {where}" for secret in ALL_SECRETS if secret in text or secret in squashed]
    return found


def _rows(project: Path, stage: str) -> list[dict[str, Any]]:
    """Every record of ``stage`` in the store's shards."""
    rows: list[dict[str, Any]] = []
    for f in sorted((project / ".genloom" / "artifacts" / "shards" / stage).glob("*/data.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _invoke(args: list[str]) -> Any:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_secrets_in_four_components_are_used_and_never_stored_or_shown(
    tmp_path: Path, llm_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    project = tmp_path / "proj"
    path = str(_project(project, llm_server))
    for name, value in [
        ("E2E_PDF_PW", PDF_PW),
        ("E2E_XLSX_PW", XLSX_WRONG),  # wrong at first: the workbook is quarantined
        ("E2E_DOCX_OLD", DOCX_OLD),
        ("E2E_DOCX_PW", DOCX_PW),
        ("E2E_API_KEY", API_KEY),
    ]:
        monkeypatch.setenv(name, value)
    shown: dict[str, str] = {}

    first = _invoke(["run", path])
    shown["run 1 output"] = first.output
    ingest = _rows(project, "ingest")
    sources = {r["source"] for r in ingest}
    assert {"pdf", "docx"} <= sources and "excel" not in sources
    assert any("looms and weaving" in r["text"] for r in ingest if r["source"] == "pdf")
    augmented = [r for r in _rows(project, "augment") if "augmented_from" in json.loads(r["meta"] or "{}")]
    assert augmented and all(r["text"].startswith("Indeed, ") for r in augmented)
    assert FakeLLM.auth and set(FakeLLM.auth) == {f"Bearer {API_KEY}"}
    rejected = _invoke(["rejected", path]).output
    assert "wrong_password" in rejected and "cups.xlsx" in rejected
    shown["rejected"] = rejected

    # correct the wrong password: explain names the field, not either value, and ingest reruns
    monkeypatch.setenv("E2E_XLSX_PW", XLSX_PW)
    explain = _invoke(["explain", path]).output
    shown["explain after the change"] = explain
    assert "sources.1.password" in explain

    second = _invoke(["run", path, "--log-format", "json"])
    shown["run 2 output (json)"] = second.output
    ingest = _rows(project, "ingest")
    excel = [r for r in ingest if r["source"] == "excel"]
    assert excel and any("Leafs" in r["text"] for r in excel)

    shown["explain"] = _invoke(["explain", path]).output
    shown["status"] = _invoke(["status", path]).output
    pipeline = Pipeline.from_file(path)  # the same answers as data, as the UI gets them
    try:
        shown["explain (data)"] = json.dumps(pipeline.explain(), default=str)
        shown["status (data)"] = json.dumps(pipeline.status(), default=str)
    finally:
        pipeline.close()
    shown["log records"] = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records
    )

    texts = dict(_texts_of_files(project / ".genloom"))
    texts.update(
        (f"{name} (project)", text) for name, text in _texts_of_files(project) if "/data/" not in name
    )
    assert any(name.endswith("manifest.json") for name in texts)
    assert any("catalog" in name and "(rows)" in name for name in texts)
    texts.update(shown)
    assert not _leaks(texts)
