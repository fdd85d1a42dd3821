"""LLM-as-judge: an LLM behind any OpenAI-compatible endpoint scores generated samples against a
rubric (Zheng et al. 2023, "Judging LLM-as-a-judge"), through the official ``openai`` client.

Each sample goes as the user message after a system message holding the rubric and the scale;
the reply is asked for as ``{"score": int, "reason": str}`` with ``response_format`` json_schema
(``genloom serve`` constrains it with llguidance; vLLM, llama.cpp's server and OpenAI support it).
A reply that is not that object is read for its first integer within the scale, and a reply
with none leaves the sample unscored, with the reply as its reason. Every scored reply is cached
in the artifact store (``<store>/cache/judge/``), keyed by the endpoint URL (without user
information), the model, the rubric, the scale and the sample text: the API key is in neither
the key nor the entry, and a re-run of the same evaluation sends no request. An endpoint that
cannot be reached, refuses the key or rejects the request fails the evaluation with an error
naming the URL and never the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from genloom.core.errors import MissingDependencyError, StageError

CACHE_DIR = "cache/judge"
REPLY_SCHEMA_NAME = "judgement"
_INT = re.compile(r"-?\d+")


@dataclass
class Judgement:
    """The judge's verdict on one sample (``score`` None: the reply held no score)."""

    sample: int
    text: str
    score: int | None
    reason: str
    cached: bool


@dataclass
class JudgeResult:
    """Every sample's judgement, the mean score and how many requests were sent."""

    judgements: list[Judgement] = field(default_factory=list)
    requests: int = 0

    @property
    def score(self) -> float | None:
        """The mean score of the scored samples (None: none was scored)."""
        scores = [j.score for j in self.judgements if j.score is not None]
        return sum(scores) / len(scores) if scores else None

    def metrics(self) -> dict[str, float | None]:
        """``judge_score`` (the mean) and ``judge_scored`` (samples with a score)."""
        return {
            "judge_score": self.score,
            "judge_scored": float(sum(j.score is not None for j in self.judgements)),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One JSON row per sample, for ``metrics.json`` and the report."""
        return [
            {"sample": j.sample, "score": j.score, "reason": j.reason, "text": j.text, "cached": j.cached}
            for j in self.judgements
        ]


def public_url(url: str) -> str:
    """``url`` without user information, query or fragment (a URL may carry a password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def reply_schema(cfg: Any) -> dict[str, Any]:
    """The JSON schema of a reply: ``{"score": int in the scale, "reason": str}``."""
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": cfg.min_score, "maximum": cfg.max_score},
            "reason": {"type": "string"},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }


def system_message(cfg: Any) -> str:
    """The rubric and how to answer."""
    return (
        f"{cfg.rubric.strip()}\n\nScore the text the user sends on an integer scale from {cfg.min_score} "
        f"(worst) to {cfg.max_score} (best). Answer with a JSON object only: "
        '{"score": <integer>, "reason": "<one sentence>"}.'
    )


def cache_key(cfg: Any, text: str) -> str:
    """The cache entry of one sample: endpoint URL, model, rubric, scale and the text (never the key)."""
    parts = [public_url(cfg.base_url), cfg.model, cfg.rubric, str(cfg.min_score), str(cfg.max_score), text]
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def parse_reply(content: str, cfg: Any) -> tuple[int | None, str]:
    """(score, reason) of a reply: the JSON object when it is one, else the first integer within
    the scale (the reply is the reason); (None, the reply) when there is neither."""
    text = content.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("score"), int | float)
        and not isinstance(obj["score"], bool)
    ):
        score = int(obj["score"])
        if cfg.min_score <= score <= cfg.max_score:
            return score, str(obj.get("reason", ""))
    for m in _INT.finditer(text):
        value = int(m.group(0))
        if cfg.min_score <= value <= cfg.max_score:
            return value, text[:500]
    return None, f"no score in the reply: {text[:300]!r}"


class JudgeCache:
    """Judgements by cache key, one small JSON file each under ``<store>/cache/judge/``."""

    def __init__(self, fs: Any, base: str) -> None:
        self.fs = fs
        self.dir = f"{base.rstrip('/')}/{CACHE_DIR}"

    def _path(self, key: str) -> str:
        return f"{self.dir}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached entry, or None."""
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as f:
            entry: dict[str, Any] = json.load(f)
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store an entry (written to a temporary name, then moved into place)."""
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # two evaluations never share one
        with self.fs.open(tmp, "w") as f:
            json.dump(entry, f)
        self.fs.mv(tmp, path)


class Judge:
    """Scores texts with the LLM of a ``JudgeConfig`` (``evaluate.judge``), cached per sample."""

    def __init__(self, cfg: Any, cache: JudgeCache) -> None:
        self.cfg = cfg
        self.cache = cache
        self.url = public_url(cfg.base_url)
        self._client: Any = None

    def _open(self) -> Any:
        try:
            import openai
        except ImportError as e:
            raise MissingDependencyError(
                "openai (the client of evaluate.judge)", 'pip install "genloom[llm]"'
            ) from e
        if self._client is None:
            key = self.cfg.api_key.get_secret_value() if self.cfg.api_key else "none"
            self._client = openai.OpenAI(
                base_url=self.cfg.base_url,
                api_key=key,
                max_retries=self.cfg.retries,
                timeout=self.cfg.timeout_s,
                # settings come from the config, never from the environment (proxies, OPENAI_*)
                http_client=openai.DefaultHttpxClient(trust_env=False),
            )
        return self._client

    def score(self, texts: list[str]) -> JudgeResult:
        """Every text's judgement, from the cache where it holds one, else asked for
        (``concurrency`` requests at a time)."""
        result = JudgeResult()
        keys = [cache_key(self.cfg, t) for t in texts]
        found = [self.cache.get(k) for k in keys]
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            client = self._open()
            with ThreadPoolExecutor(
                max_workers=self.cfg.concurrency, thread_name_prefix="genloom-judge"
            ) as pool:
                replies = list(pool.map(lambda i: self._ask(client, texts[i]), missing))
            result.requests = len(missing)
            for i, content in zip(missing, replies, strict=True):
                if content is None:
                    score = None
                    reason = (
                        f"the JSON reply did not fit in max_tokens={self.cfg.max_tokens} "
                        "(structured_output_incomplete): raise evaluate.judge.max_tokens"
                    )
                else:
                    score, reason = parse_reply(content, self.cfg)
                entry = {"score": score, "reason": reason, "model": self.cfg.model, "url": self.url}
                if score is not None:  # an unscored reply is asked again next time
                    self.cache.put(keys[i], entry)
                found[i] = {**entry, "fresh": True}
        for i, (text, entry) in enumerate(zip(texts, found, strict=True)):
            assert entry is not None
            result.judgements.append(
                Judgement(i, text, entry.get("score"), str(entry.get("reason", "")), not entry.get("fresh"))
            )
        return result

    def _ask(self, client: Any, text: str) -> str | None:
        """The content of the judge's reply to one sample (None: the endpoint could not complete
        the JSON object within ``max_tokens``)."""
        import openai

        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": system_message(self.cfg)},
                {"role": "user", "content": text},
            ],
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
        }
        if self.cfg.send_schema:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": REPLY_SCHEMA_NAME, "schema": reply_schema(self.cfg), "strict": True},
            }
        where = f"evaluate.judge: {self.url} ({self.cfg.model})"
        try:
            reply = client.chat.completions.create(**kwargs)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise StageError(f"{where}: HTTP {e.status_code}: the endpoint refused the api_key") from None
        except openai.BadRequestError as e:
            if getattr(e, "code", None) == "structured_output_incomplete":
                return None  # the object did not fit in max_tokens: this sample stays unscored
            raise StageError(
                f"{where}: HTTP 400: the endpoint rejected the request: {self._redact(_message(e))}"
                " (send_schema: false if it does not support response_format json_schema)"
            ) from None
        except openai.NotFoundError as e:
            raise StageError(
                f"{where}: HTTP 404 (is the model name right?): {self._redact(_message(e))}"
            ) from None
        except openai.APIStatusError as e:
            raise StageError(
                f"{where}: HTTP {e.status_code} after {self.cfg.retries} retries: {self._redact(_message(e))}"
                " (send_schema: false if it does not support response_format json_schema)"
            ) from None
        except openai.APIError as e:  # connection refused, timeouts, a body that is not JSON
            raise StageError(
                f"{where} cannot be reached: {type(e).__name__}: {self._redact(_message(e))} "
                f"after {self.cfg.retries} retries (is the judge's server running?)"
            ) from None
        if not reply.choices:
            return ""
        return reply.choices[0].message.content or ""

    def _redact(self, text: str) -> str:
        """``text`` without the api_key, nor any 8-character or longer start of it."""
        if self.cfg.api_key is None:
            return text
        key = self.cfg.api_key.get_secret_value()
        for length in range(len(key), 7, -1):
            text = text.replace(key[:length], "***")
        return text


def _message(e: Exception) -> str:
    return str(getattr(e, "message", None) or e)[:300]
