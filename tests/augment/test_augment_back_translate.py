"""back_translate: Apertium round trips, an OpenAI-compatible endpoint on loopback, and the per-sentence cache."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from tests.conftest import FakeLLM

from genloom.augment import is_augmented
from genloom.augment.back_translate import BackTranslateAugmenter
from genloom.core.steps import StepContext

TEXTS = [
    "The weather is very nice today and I want to go to the beach with my friends.",
    "The cat sleeps on the mat. It is happy.",
]


def _table(texts: list[str | None]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {"id": [f"r{i}" for i in range(n)], "text": texts, "source": ["t"] * n, "meta": ["{}"] * n}
    )


def _has_apertium() -> bool:
    if shutil.which("apertium") is None:
        return False
    return "eng-spa" in subprocess.run(["apertium", "-l"], capture_output=True, text=True, check=False).stdout


@pytest.mark.skipif(not _has_apertium(), reason="Debian apertium and apertium-eng-spa are not installed")
def test_apertium_round_trip(tmp_path: Path) -> None:
    step = BackTranslateAugmenter(cache_path=str(tmp_path / "bt.sqlite"))
    out = step.run(_table([*TEXTS, None]), StepContext())
    new = [r for r in out.to_pylist() if is_augmented(json.loads(r["meta"]))]
    assert len(new) == 2
    assert new[0]["text"] != TEXTS[0] and "beach" in new[0]["text"]
    assert json.loads(new[0]["meta"])["pivot"] == "spa"
    # a second step with the same cache file translates nothing anew and gives the same result
    again = BackTranslateAugmenter(cache_path=str(tmp_path / "bt.sqlite"))
    again.ensure_setup()
    assert len(again._cache) == 0
    assert again.run(_table([*TEXTS, None]), StepContext()).equals(out)


def test_openai_endpoint_batched_and_cached(llm_server: str) -> None:
    step = BackTranslateAugmenter(translator="openai", endpoint=llm_server, api_key="k", concurrency=2)
    texts = [*TEXTS, TEXTS[1]]  # the repeated record's sentences are translated once
    out = step.run(_table(texts), StepContext())
    new = [r for r in out.to_pylist() if is_augmented(json.loads(r["meta"]))]
    assert [r["text"] for r in new] == [
        "Indeed, " + TEXTS[0],
        "Indeed, The cat sleeps on the mat. Indeed, It is happy.",
        "Indeed, The cat sleeps on the mat. Indeed, It is happy.",
    ]
    assert len(FakeLLM.calls) == 6  # 3 distinct sentences, there and back
    step.run(_table(texts), StepContext())
    assert len(FakeLLM.calls) == 6  # all from the cache


def test_unreachable_endpoint_quarantines_records() -> None:
    step = BackTranslateAugmenter(translator="openai", endpoint="http://127.0.0.1:9/v1", timeout_s=2)
    ctx = StepContext()
    out = step.run(_table(TEXTS[:1]), ctx)
    assert out.num_rows == 1 and ctx.rejected[0]["reason"] == "translation_failed"


def test_api_key_is_sent_but_never_shown(llm_server: str) -> None:
    key = "sk-test-3f9a1c77e2"
    step = BackTranslateAugmenter(translator="openai", endpoint=llm_server, api_key=key)
    for shown in (repr(step), str(step), json.dumps(step.config_dict()), step.model_dump_json()):
        assert key not in shown
    step.run(_table(TEXTS[:1]), StepContext())
    assert FakeLLM.auth and set(FakeLLM.auth) == {f"Bearer {key}"}
    FakeLLM.auth = []
    BackTranslateAugmenter(translator="openai", endpoint=llm_server).run(_table(TEXTS[1:]), StepContext())
    assert FakeLLM.auth and set(FakeLLM.auth) == {None}  # no key: no Authorization header
