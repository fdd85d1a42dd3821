"""Back translation (Sennrich et al. 2016): translate to a pivot language and back, for paraphrases."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr, SecretStr

from genloom.augment._common import selected
from genloom.core.errors import MissingDependencyError, RecordError
from genloom.core.registry import AUGMENTERS
from genloom.core.steps import Augmenter, StepContext

_SENT = re.compile(r"(?<=[.!?])\s+")
_LLM_PROMPT = (
    "Translate the following text from {src} to {dst}. Answer with the translation only, "
    "without quotes or comments.\n\n{text}"
)


@AUGMENTERS.register("back_translate")
class BackTranslateAugmenter(Augmenter):
    """Add paraphrases of records made by translating each sentence to ``pivot`` and back.

    ``translator: apertium`` runs the rule-based Apertium engine (Debian ``apertium`` and a pair
    package such as ``apertium-eng-spa``; modes ``<source>-<pivot>`` and back, three-letter codes)
    as one subprocess per direction per batch, one sentence per line. ``translator: openai`` sends
    each sentence to an OpenAI-compatible ``/chat/completions`` endpoint (``endpoint``, ``model``,
    ``api_key`` from ``${env:...}``), ``concurrency`` requests at a time. Both translate only
    sentences not seen before: translations are cached per sentence in memory and, with
    ``cache_path``, in a SQLite file shared between runs. A paraphrase identical to the original
    is not added. Records are picked with ``ratio`` and a ``seed``; the translation itself is
    deterministic for Apertium and for an LLM at temperature 0. New records get ``meta.augmented_from``.
    """

    type: Literal["back_translate"] = "back_translate"
    column: str = "text"
    translator: Literal["apertium", "openai"] = "apertium"
    source: str = "eng"
    pivot: str = "spa"
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    seed: int = 0
    endpoint: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of the endpoint; write ${env:OPENAI_API_KEY}, never the key itself "
        "(the cache key holds only its HMAC)",
    )
    temperature: float = 0.0
    concurrency: int = Field(default=4, ge=1)
    timeout_s: float = 60.0
    cache_path: str | None = None
    max_chars: int = Field(default=5000, description="longer texts are not translated")

    _cache: dict[tuple[str, str], str] = PrivateAttr(default_factory=dict)
    _db: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        if self.translator == "apertium":
            if shutil.which("apertium") is None:
                raise MissingDependencyError(
                    "apertium", f"apt-get install apertium apertium-{self.source}-{self.pivot}"
                )
            modes = subprocess.run(
                ["apertium", "-l"], capture_output=True, text=True, check=False
            ).stdout.split()
            for mode in (f"{self.source}-{self.pivot}", f"{self.pivot}-{self.source}"):
                if mode not in modes:
                    raise MissingDependencyError(
                        f"Apertium mode {mode!r}", f"apt-get install apertium-{self.source}-{self.pivot}"
                    )
        if self.cache_path:
            self._db = sqlite3.connect(self.resolve_path(self.cache_path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS bt (key TEXT PRIMARY KEY, value TEXT)")

    # -- translation ---------------------------------------------------------------------------

    def _key(self, direction: str, sentence: str) -> str:
        return f"{self.translator}|{self.model if self.translator == 'openai' else ''}|{direction}|{sentence}"

    def translate(self, sentences: list[str], src: str, dst: str) -> list[str]:
        """Translate sentences from ``src`` to ``dst`` with the cache in front of the translator."""
        direction = f"{src}-{dst}"
        out: dict[str, str] = {}
        todo = []
        for s in dict.fromkeys(sentences):
            hit = self._cache.get((direction, s))
            if hit is None and self._db is not None:
                row = self._db.execute(
                    "SELECT value FROM bt WHERE key = ?", (self._key(direction, s),)
                ).fetchone()
                hit = row[0] if row else None
            if hit is None:
                todo.append(s)
            else:
                out[s] = hit
        if todo:
            done = (
                self._apertium(todo, direction)
                if self.translator == "apertium"
                else self._llm(todo, src, dst)
            )
            for s, t in zip(todo, done, strict=True):
                out[s] = t
                self._cache[(direction, s)] = t
            if self._db is not None:
                self._db.executemany(
                    "INSERT OR REPLACE INTO bt VALUES (?, ?)",
                    [(self._key(direction, s), out[s]) for s in todo],
                )
                self._db.commit()
        return [out[s] for s in sentences]

    def _apertium(self, sentences: list[str], mode: str) -> list[str]:
        lines = [s.replace("\n", " ") for s in sentences]
        res = subprocess.run(
            ["apertium", "-u", mode],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=self.timeout_s + len(lines),
            check=False,
        )
        if res.returncode != 0:
            raise RecordError("translation_failed", res.stderr[-500:])
        got = res.stdout.rstrip("\n").split("\n")
        if len(got) != len(lines):  # the engine merged or split lines: fall back to one call each
            return [self._apertium([s], mode)[0] for s in lines] if len(lines) > 1 else [" ".join(got)]
        return [g.strip() for g in got]

    def _llm_one(self, text: str, src: str, dst: str) -> str:
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [{"role": "user", "content": _LLM_PROMPT.format(src=src, dst=dst, text=text)}],
        }
        req = urllib.request.Request(
            self.endpoint.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.load(resp)
            return str(data["choices"][0]["message"]["content"]).strip()
        except Exception as e:  # network and protocol errors quarantine the record
            raise RecordError("translation_failed", f"{self.endpoint}: {e}") from e

    def _llm(self, sentences: list[str], src: str, dst: str) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda s: self._llm_one(s, src, dst), sentences))

    # -- augmentation --------------------------------------------------------------------------

    def _picked(self, record: dict[str, Any]) -> bool:
        text = record.get(self.column)
        return (
            bool(text)
            and len(text) <= self.max_chars
            and selected(self.seed, record["id"], self.ratio, self.type)
        )

    def run(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        """Translate every picked sentence of the batch in two batched calls, then expand from the cache."""
        self.ensure_setup()
        ids = table.column("id").to_pylist()
        texts = table.column(self.column).to_pylist()
        sentences = [
            s
            for rid, t in zip(ids, texts, strict=True)
            if self._picked({"id": rid, self.column: t})
            for s in _split(t)
        ]
        if sentences:
            try:
                there = self.translate(sentences, self.source, self.pivot)
                self.translate(there, self.pivot, self.source)
            except RecordError:
                pass  # expand() retries per record, so a failure quarantines only its records
        return super().run(table, ctx)

    def expand(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        if not self._picked(record):
            return []
        text = record[self.column]
        sents = _split(text)
        back = self.translate(self.translate(sents, self.source, self.pivot), self.pivot, self.source)
        new = " ".join(b for b in back if b)
        if not new or new.strip() == text.strip():
            return []
        return [{self.column: new, "meta": {"pivot": self.pivot, "translator": self.translator}}]


def _split(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENT.split(text)) if s]
