"""The server's OpenAPI document validates, and requests generated from it by schemathesis
(property-based, through Hypothesis) against a live uvicorn server never get a 5xx, nor a
response that breaks the document; for the tiny GPT (text endpoints) and a table model (samples)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from genloom.core.catalog import Catalog
from genloom.serve.app import ServedModel, create_app
from genloom.serve.schemas import ServeSettings

from .conftest import StubTableFamily, live_server, served

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (pip install schemathesis)"
)
from hypothesis import HealthCheck, settings  # noqa: E402  (hypothesis comes with schemathesis)

# small limits keep each generated request fast; the fuzzer still reaches every limit's error path
SETTINGS = ServeSettings(max_tokens_cap=4, max_n=2, max_sample_rows=3, max_prompt_tokens=64)


def _schema(app: FastAPI, base: str) -> Any:
    """The app's OpenAPI document, checked against the OpenAPI specification, aimed at ``base``."""
    from openapi_spec_validator import validate

    document = app.openapi()
    validate(document)
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=base)
    return schema


@pytest.fixture(scope="module")
def text_schema(tiny_gpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    catalog = Catalog(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'catalog.db'}")
    app = create_app(lambda: served(tiny_gpt), catalog, settings=SETTINGS)
    with live_server(app) as base:
        yield _schema(app, base)
    catalog.close()


@pytest.fixture(scope="module")
def table_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("fuzz-table")
    catalog = Catalog(f"sqlite:///{folder / 'catalog.db'}")
    model = ServedModel("adult", 1, folder, StubTableFamily(), {}, 1700000000)
    app = create_app(lambda: model, catalog, settings=SETTINGS)
    with live_server(app) as base:
        yield _schema(app, base)
    catalog.close()


def fuzz(schema: Any, paths: tuple[str, ...] | None = None, examples: int = 15) -> list[str]:
    """Every operation (of ``paths``) called with ``examples`` generated requests; each response
    must not be a 5xx and must match the document. Returns the operations exercised."""
    from hypothesis import given
    from schemathesis.checks import positive_data_acceptance

    done: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if paths is not None and operation.path not in paths:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def call(case: Any) -> None:
            # positive_data_acceptance (ST202) expects every schema-valid request to succeed; this
            # server refuses some on purpose, for what the model is rather than what the body is
            # (chat on a model not trained for chat, text on a table model, n over max_sample_rows,
            # an unknown model name): documented 400/404s, not bugs. Every other check stays.
            case.call_and_validate(timeout=30, excluded_checks=[positive_data_acceptance])

        try:
            call()
        except BaseException as e:  # noqa: BLE001  (a FailureGroup of every distinct failure)
            failures.append(f"{operation.method.upper()} {operation.path}: {str(e)[:1500]}")
        done.append(f"{operation.method.upper()} {operation.path}")
    assert not failures, "\n\n".join(failures)
    return done


def test_text_model_server_has_no_5xx(text_schema: Any) -> None:
    done = fuzz(text_schema)
    assert {
        "POST /v1/completions",
        "POST /v1/chat/completions",
        "GET /v1/models",
        "POST /v1/feedback",
    } <= set(done)


def test_table_model_samples_have_no_5xx(table_schema: Any) -> None:
    assert fuzz(table_schema, ("/v1/samples",)) == ["POST /v1/samples"]


def test_the_document_is_served_and_documents_the_errors(tiny_gpt: Path, catalog: Catalog) -> None:
    from .conftest import ready_client

    app = create_app(lambda: served(tiny_gpt), catalog, settings=SETTINGS)
    with ready_client(app) as client:
        doc = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 404  # the interactive page stays off
        empty = client.post("/v1/completions", json={"prompt": []})
        metrics = client.get("/metrics")
    completions = doc["paths"]["/v1/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "429", "503", "504"} <= set(completions)
    assert "422" not in completions  # validation errors are 400s here
    assert completions["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "text/event-stream" in completions["200"]["content"]
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert metrics.headers["content-type"].startswith("text/plain")
    # an empty prompt list is a 400 (as vLLM answers it), not a 500
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"
    assert "prompt" in empty.json()["error"]["message"]
