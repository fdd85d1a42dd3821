"""The pipeline file: YAML -> one frozen, validated ``PipelineConfig``.

Validation happens once, at the boundary, before any work. Every error names its place in the
file (``clean.2.min_chars``) and a fix (a close valid name, the variable to export...). The model
is built from the registries at load time, so plugins' components validate like built-in ones.
"""

from __future__ import annotations

import functools
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from genloom.core.errors import ConfigError, ConfigErrors
from genloom.core.registry import REGISTRIES, SECTIONS, suggest
from genloom.core.secrets import is_secret_name

STAGE_LISTS = ("sources", "augment", "clean", "preprocess", "features")
_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Frozen(BaseModel):
    """Base of config sections: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreConfig(Frozen):
    """Where artifacts live (any fsspec URL; a plain path is relative to the pipeline file)."""

    path: str = Field(
        ".genloom/artifacts", description="Artifact root: a folder, or s3://, gs://... with fsspec"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options of the filesystem (s3://: endpoint_url, key, secret, "
        "client_kwargs...); write credentials as ${env:NAME}",
    )
    cache: str | None = Field(
        None,
        description="Local folder where model stages stage the files of an object store's artifacts "
        "(default: .genloom/cache beside the pipeline file)",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _secret_options(cls, value: Any) -> Any:
        """Options named like credentials (key, secret, token, password...) become SecretStr, at any depth."""

        def wrap(node: Any) -> Any:
            if isinstance(node, dict):
                return {
                    k: SecretStr(v) if is_secret_name(k) and isinstance(v, str) else wrap(v)
                    for k, v in node.items()
                }
            return node

        return wrap(value)


class CatalogConfig(Frozen):
    """The catalog database (runs, artifacts, lineage, model versions)."""

    url: str = Field(
        "sqlite:///.genloom/catalog.db",
        description="SQLAlchemy URL: sqlite:///file.db (relative to the pipeline file) or postgresql+psycopg://...",
    )


class LocalExecutorConfig(Frozen):
    """Run shards in this process (workers=1) or in a process pool."""

    type: Literal["local"] = "local"
    workers: int = Field(1, ge=1, description="Processes for data stages; 1 runs inline (easiest to debug)")


class RayExecutorConfig(Frozen):
    """Run shards as Ray tasks, on a cluster at ``address`` or a local Ray runtime."""

    type: Literal["ray"] = "ray"
    address: str | None = Field(
        None,
        description=(
            "A cluster: 'auto' or host:6379 from a node of it, or ray://host:10001 (Ray Client); empty starts"
            " a local runtime. A cluster needs the store on object storage (s3://...) or shared_filesystem"
        ),
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local runtime (default: all)")
    shared_filesystem: bool = Field(
        False,
        description=(
            "Every node of the cluster mounts the store folder and the sources' files at the same paths"
            " (NFS...): a local store path is then allowed and any node reads any file"
        ),
    )


ExecutorConfig = Annotated[LocalExecutorConfig | RayExecutorConfig, Field(discriminator="type")]


class DataConfig(Frozen):
    """How data stages shard their work and how much loss is tolerated."""

    partitions_per_shard: int = Field(
        8, ge=1, description="Source partitions (files, modules...) per ingest shard"
    )
    max_drop_fraction: float = Field(
        0.99, ge=0, le=1, description="A stage fails when it drops more than this fraction of its input rows"
    )


class SplitConfig(Frozen):
    """Train/validation/test split, by a hash of the record id (stable across runs).

    A record's hash, read as a number u in [0, 1), puts it in validation when
    u < ``val_fraction``, in test when ``val_fraction`` <= u < ``val_fraction + test_fraction``,
    and in train otherwise: the three splits are disjoint, and a record keeps its split when the
    data grows. Training, early stopping and tuning see validation only; with a test split, the
    final metrics and the gates are computed on test.
    """

    val_fraction: float = Field(0.05, gt=0, lt=1, description="Fraction of records held out for validation")
    test_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of records held out for the final metrics and the gates (0: they use validation)",
    )
    seed: int = Field(0, description="Changes which records are held out")

    @model_validator(mode="after")
    def _leave_training_rows(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 (got {self.val_fraction + self.test_fraction:g})"
            )
        return self

    def key_dict(self) -> dict[str, Any]:
        """What a prepared artifact's key hashes: without ``test_fraction`` when it is 0, so the
        keys of pipelines without a test split are those of earlier versions."""
        out = self.model_dump(mode="json")
        if not self.test_fraction:
            out.pop("test_fraction")
        return out


class Gate(Frozen):
    """Bounds a metric must meet for the model to be promoted: absolute (``min``, ``max``) and
    relative to the champion scored on the same evaluation data (``min_vs_champion``,
    ``max_vs_champion``: offsets added to the champion's value). ``{min_vs_champion: -0.02}``
    passes when the value >= champion - 0.02; ``{max_vs_champion: 0}`` when it is no worse than
    the champion's for a lower-is-better metric. A relative bound passes when there is no
    champion yet (nothing to compare with)."""

    min: float | None = Field(None, description="The value must be at least this")
    max: float | None = Field(None, description="The value must be at most this")
    min_vs_champion: float | None = Field(
        None, description="The value must be at least the champion's plus this (e.g. -0.02)"
    )
    max_vs_champion: float | None = Field(
        None, description="The value must be at most the champion's plus this (e.g. 0.0)"
    )


class JudgeConfig(Frozen):
    """An LLM that scores generated samples against a rubric, behind any OpenAI-compatible endpoint
    (``genloom serve``, vLLM, llama.cpp's server, OpenAI...), through the ``openai`` client.

    Each of ``samples`` seeded generations is sent as the user message after a system message
    holding ``rubric``; the reply is asked for as ``{"score": int, "reason": str}`` with
    ``response_format`` json_schema (``send_schema: false`` for endpoints without structured
    output), else the first integer of the reply is the score. Replies are cached per sample in
    the artifact store (key: endpoint URL, model, rubric, scale, sample text), so a re-run asks
    nothing. The metric is ``judge_score``, the mean score (higher is better).
    """

    base_url: str = Field(description="the endpoint's base URL, with /v1 (http://127.0.0.1:8000/v1)")
    model: str = Field(description="the judge model's name at the endpoint")
    api_key: SecretStr | None = Field(
        None, description="the endpoint's key; write it as ${env:NAME} (none: local servers)"
    )
    rubric: str = Field(
        description="what to score and how (the system message), e.g. 'Score the fluency of this text'"
    )
    min_score: int = Field(1, description="the lowest score of the scale")
    max_score: int = Field(10, description="the highest score of the scale")
    samples: int = Field(16, ge=1, le=1000, description="generations judged (the same seeded ones each run)")
    sample_tokens: int = Field(120, ge=1, description="new tokens per judged generation (text models)")
    max_tokens: int = Field(200, ge=1, description="tokens of the judge's reply at most")
    temperature: float = Field(0.0, ge=0, le=2, description="the judge's sampling temperature")
    timeout_s: float = Field(60.0, gt=0, description="seconds per request")
    retries: int = Field(2, ge=0, description="retries of a failed request (the client's backoff)")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at a time")
    send_schema: bool = Field(
        True, description="send the reply's JSON schema as response_format (false: parse the first integer)"
    )

    @model_validator(mode="after")
    def _scale(self) -> JudgeConfig:
        if self.min_score >= self.max_score:
            raise ValueError(f"min_score ({self.min_score}) must be below max_score ({self.max_score})")
        return self


class EvaluateConfig(Frozen):
    """Held-out evaluation and the quality gates a model must pass."""

    gates: dict[str, Gate] = Field(
        default_factory=dict,
        description="metric -> {min, max, min_vs_champion, max_vs_champion}, e.g. {val_bpc: {max: 4.0}}",
    )
    max_tokens: int | None = Field(None, description="Evaluate on at most this many validation tokens")
    samples: int = Field(
        64,
        ge=0,
        description="Text models: generations scored for diversity, memorisation and embedding distance (0: off)",
    )
    embeddings: bool = Field(
        True, description="Text models: Fréchet distance and MAUVE in MiniLM's embedding space of the samples"
    )
    references: str | None = Field(
        None,
        description="Text models: a JSON Lines file of {prompt, reference} records (relative to the pipeline "
        "file) scored by BLEU, chrF and ROUGE-L; its content is in the evaluation's key",
    )
    judge: JudgeConfig | None = Field(None, description="An LLM that scores generated samples (judge_score)")
    language_sample: int = Field(
        0,
        ge=0,
        description="Text models without a language column (preprocess: language): held-out texts whose "
        "language langid counts for the report's language mix (0: none; loading langid takes seconds)",
    )

    def key_dict(self) -> dict[str, Any]:
        """What an evaluation's key hashes: the relative bounds only where set, so the keys of
        pipelines with absolute gates only are those of earlier versions. The judge's key is
        masked (its replies do not depend on it)."""
        out = self.model_dump(mode="json")
        defaults = (
            ("samples", 64),
            ("embeddings", True),
            ("references", None),
            ("judge", None),
            ("language_sample", 0),
        )
        for name, default in defaults:
            if out[name] == default:  # the defaults leave the keys of earlier versions as they were
                del out[name]
        out["gates"] = {
            name: {k: v for k, v in bounds.items() if k in ("min", "max") or v is not None}
            for name, bounds in out["gates"].items()
        }
        return out

    def relative(self) -> bool:
        """True when a gate compares with the champion."""
        return any(
            g.min_vs_champion is not None or g.max_vs_champion is not None for g in self.gates.values()
        )


class RegisterConfig(Frozen):
    """Model registry: the name to register under and the promotion rule."""

    name: str | None = Field(None, description="Model name (default: the pipeline name)")
    metric: str = Field(
        "val_bpc", description="Metric that decides promotion, compared in its declared direction"
    )
    promote: Literal["if_better", "always", "never"] = Field(
        "if_better", description="Make the new model champion if it beats the champion on the same data"
    )


_DURATION = re.compile(r"^(\d+(\.\d+)?[dhms])+$")


def _duration(value: str | None) -> str | None:
    """A duration such as 90s, 30m, 24h, 7d or 1h30m (checked here, read by genloom.monitor)."""
    if value is not None and not _DURATION.match(re.sub(r"\s+", "", value.lower())):
        raise ValueError(f"{value!r} is not a duration (90s, 30m, 24h, 7d, 1h30m)")
    return value


MonitorKind = Literal["drift", "quality", "feedback", "new_data"]


def _breach_kinds() -> list[MonitorKind]:
    return ["drift", "quality", "feedback"]


class MonitorThresholds(Frozen):
    """When a monitoring signal is a breach (the defaults of genloom.monitor.signals.Thresholds)."""

    psi: float = Field(0.2, gt=0, description="Drift: PSI of a length distribution above this")
    ks_alpha: float = Field(
        0.01, gt=0, lt=1, description="Drift: KS p-value below this (and ks_min_statistic)"
    )
    ks_min_statistic: float = Field(0.1, ge=0, le=1, description="Drift: the KS statistic at least this")
    js: float = Field(
        0.1, ge=0, le=1, description="Drift: Jensen-Shannon distance of categories (OOV, language) above this"
    )
    chi2_alpha: float = Field(
        0.01, gt=0, lt=1, description="Drift: chi-square p-value below this (and the JS distance >= js)"
    )
    error_rate: float = Field(0.01, ge=0, le=1, description="Quality: share of 5xx responses above this")
    latency_p95_s: float = Field(5.0, gt=0, description="Quality: 95th percentile latency (s) above this")
    empty_output_rate: float = Field(
        0.05, ge=0, le=1, description="Quality: share of empty outputs above this"
    )
    repetition_rate: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Quality: share of outputs of 8+ words with distinct word 4-grams under half their 4-grams above this",
    )
    truncation_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Quality: share of responses that stopped at their token limit above this",
    )
    negative_feedback_rate: float = Field(
        0.3, ge=0, le=1, description="Feedback: share of ratings <= 0 above this"
    )
    embedding_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Drift: MMD permutation p-value of MiniLM embeddings below this (and embedding_min_mmd2)",
    )
    embedding_min_mmd2: float = Field(
        0.005, ge=0, description="Drift: the embeddings' unbiased MMD^2 at least this"
    )
    output_bpc_ratio: float = Field(
        1.5,
        gt=0,
        description="Quality: the champion's bits per character on its outputs above this times its val_bpc",
    )
    min_requests: int = Field(50, ge=1, description="Text requests a window needs for the drift checks")
    min_feedback: int = Field(10, ge=1, description="Ratings a window needs for the feedback check")


#: the signals of ``genloom monitor`` that ``monitor.skip`` can name (genloom.monitor.signals and
#: the modules beside it), and the prefixes of the per-name families of checks
MONITOR_SIGNALS = (
    "prompt_words",
    "output_words",
    "prompt_oov_rate",
    "output_oov_rate",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "prompt_language",
    "prompt_embedding",
    "output_embedding",
    "error_rate",
    "latency_p95",
    "empty_output_rate",
    "repetition_rate",
    "truncation_rate",
    "output_loss",
    "negative_feedback_rate",
)
MONITOR_SIGNAL_PREFIXES = ("gate:", "condition:", "source:")


class MonitorConfig(Frozen):
    """``genloom monitor``'s policy: the window, thresholds, alerts, and whether a breach (or a
    schedule) retrains the pipeline. Command-line options override these."""

    window: str = Field("24h", description="Requests of the last window are checked (90s, 30m, 24h, 7d)")
    thresholds: MonitorThresholds = Field(
        default_factory=MonitorThresholds, description="When a check breaches (overrides the defaults)"
    )
    on_breach: Literal["none", "retrain"] = Field(
        "none", description="retrain: run the pipeline again when a check of retrain_on breaches"
    )
    retrain_on: list[MonitorKind] = Field(
        default_factory=_breach_kinds,
        description="Kinds of check whose breach retrains (with on_breach: retrain); new_data: the pipeline "
        "would train a model not registered yet (new source data or a changed config), planned each round",
    )
    schedule: str | None = Field(
        None,
        description="Also retrain when this long (7d, 24h) passed since the last retrain decision (else the "
        "champion's registration), breach or not",
    )
    cooldown: str = Field(
        "1h",
        description="No breach-triggered retrain within this long after the last one (a schedule still runs)",
    )
    skip: list[str] = Field(
        default_factory=list,
        description="Signals not to check: names (prompt_embedding, output_loss, latency_s...) or a family "
        "prefix (gate:, condition:, source:, or one check of it: gate:distinct_2)",
    )
    embedding_reference: Literal["first_monitor", "train"] = Field(
        "first_monitor",
        description="When a text model's MiniLM embedding reference (the embedding drift's) is computed: on "
        "its first genloom monitor round, or by the register stage at training time (a MiniLM pass over up to "
        "2,000 training records per new model)",
    )
    source_drift: bool = Field(
        False,
        description="When the sources hold records the champion was not trained on, run the data stages and "
        "check those records against the champion's reference profile (source: drift checks)",
    )
    webhook: SecretStr | None = Field(
        None, description="POST breaches to this URL (retried); write tokens as ${env:NAME}"
    )
    prometheus_textfile: str | None = Field(
        None,
        description="Write the checks as Prometheus gauges to this .prom file (relative to the pipeline file)",
    )

    @field_validator("window", "schedule", "cooldown")
    @classmethod
    def _check_duration(cls, value: str | None) -> str | None:
        return _duration(value)

    @field_validator("skip")
    @classmethod
    def _check_skip(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in MONITOR_SIGNALS and not name.startswith(MONITOR_SIGNAL_PREFIXES):
                known = ", ".join((*MONITOR_SIGNALS, *MONITOR_SIGNAL_PREFIXES))
                raise ValueError(f"unknown signal {name!r}; signals: {known}")
        return value


class PipelineBase(Frozen):
    """Fields common to every pipeline; stage lists are added from the registries."""

    name: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]+$", description="Pipeline name (also the default model name)"
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    executor: ExecutorConfig = Field(default_factory=LocalExecutorConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    # `register` would shadow ABCMeta.register on the model class, so the attribute is `registry`
    registry: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)


def has_literal_type(cls: type) -> bool:
    """True when a component declares ``type: Literal["name"]`` (needed to pick it from YAML)."""
    field = getattr(cls, "model_fields", {}).get("type")
    return field is not None and typing.get_origin(field.annotation) is Literal


def _component_union(stage: str) -> Any:
    classes = [cls for _, cls in REGISTRIES[stage].items() if has_literal_type(cls)]
    if not classes:
        return dict[str, Any]
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]  # noqa: UP007


@functools.cache
def pipeline_model() -> type[BaseModel]:
    """The PipelineConfig model, built from every registered component (cached)."""
    train_section = SECTIONS.get("train", path="train")

    sources_item = _component_union("sources")
    fields: dict[str, Any] = {
        "sources": (list[sources_item], Field(..., min_length=1, description="Where data comes from")),  # type: ignore[valid-type]
    }
    for stage in STAGE_LISTS[1:]:
        item = _component_union(stage)
        fields[stage] = (list[item], Field(default_factory=list, description=f"{stage} steps, in order"))  # type: ignore[valid-type]
    fields["train"] = (
        train_section | None,
        Field(None, description="Model training; omit to stop after data stages"),
    )
    return create_model("PipelineConfig", __base__=PipelineBase, **fields)


# ---------------------------------------------------------------------------------------------
# loading


def load_config(
    path: str | Path, overrides: list[str] | None = None, env: dict[str, str] | None = None
) -> Any:
    """Read, override, substitute secrets and validate a pipeline file; raise ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"pipeline file {str(p)!r} not found", hint="genloom init DIR writes one to start from"
        )
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML ({getattr(e, 'problem', e)})", path=where) from e
    return validate_config(raw, overrides=overrides, env=env, base_dir=p.resolve().parent)


def validate_config(
    raw: Any,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
    base_dir: str | Path | None = None,
) -> Any:
    """Validate already-parsed data (the Python API's entry point).

    ``base_dir`` is the folder relative paths in the config are relative to (the pipeline file's;
    default: the current folder): each component is bound to it (``Step.bind``), so no code ever
    changes the process's working directory.
    """
    if not isinstance(raw, dict):
        raise ConfigError("the pipeline file must be a mapping (name:, sources:, ...)")
    for item in overrides or []:
        apply_override(raw, item)
    template, raw = raw, substitute_env(raw, os.environ if env is None else env)
    _check_component_types(raw)
    model = pipeline_model()
    try:
        cfg = model.model_validate(raw)
    except ValidationError as e:
        raise ConfigErrors([_format_error(err, raw, model, template) for err in e.errors()]) from None
    base = Path(base_dir or ".").resolve()
    for stage in STAGE_LISTS:
        for step in getattr(cfg, stage):
            if hasattr(step, "bind"):
                step.bind(base)
    _bind_catalog(cfg)
    for stage in STAGE_LISTS:
        for i, step in enumerate(getattr(cfg, stage)):
            if hasattr(step, "check"):
                step.check(f"{stage}.{i}")
    _check_cluster_paths(cfg)
    return cfg


def _bind_catalog(cfg: Any) -> None:
    """Sources that read the pipeline's own catalog (the feedback source) get its URL."""
    for step in cfg.sources:
        if hasattr(step, "bind_catalog"):
            step.bind_catalog(cfg.catalog.url)


def _check_cluster_paths(cfg: Any) -> None:
    """On a Ray cluster, a worker node sees none of this machine's folders: the store must be object
    storage (or a filesystem every node mounts), and a source reading local files needs its shards
    pinned to the driver's node, which a Ray Client driver (ray://) is not part of."""
    ex = cfg.executor
    if ex.type != "ray" or not ex.address or ex.shared_filesystem:
        return
    protocol = cfg.store.path.split("://", 1)[0] if "://" in cfg.store.path else "file"
    if protocol in ("file", "local"):
        raise ConfigError(
            f"the Ray cluster at {ex.address} cannot reach this machine's store folder {cfg.store.path!r}",
            path="store.path",
            hint="put the store on object storage (store: {path: s3://bucket/prefix}) or, when every node"
            " mounts it at the same path, set executor.shared_filesystem: true",
        )
    if ex.address.startswith("ray://"):
        for i, src in enumerate(cfg.sources):
            if src.local_only():
                raise ConfigError(
                    f"{src.type} reads files of this machine, but a Ray Client driver ({ex.address}) is not a"
                    " node of the cluster, so no task can run where the files are",
                    path=f"sources.{i}",
                    hint="run genloom on a node of the cluster (executor.address: auto), or set"
                    " executor.shared_filesystem: true when every node mounts the files at the same paths",
                )


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.2.c=value`` override (the value is parsed as YAML) to raw config data."""
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} is not KEY=VALUE", path="--set", hint="e.g. --set train.max_steps=200"
        )
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"no list item {part!r}", path=".".join(parts[: i + 1]), hint=f"{len(node)} items"
                )
            if last:
                node[int(part)] = yaml.safe_load(value)
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = yaml.safe_load(value)
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError("cannot set a key inside a scalar", path=".".join(parts[:i]))


def substitute_env(node: Any, env: Any, path: str = "") -> Any:
    """Replace ``${env:NAME}`` (or ``${env:NAME:-default}``) in string values; a missing variable is an error."""
    if isinstance(node, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node)]
    if isinstance(node, str) and "${env:" in node:

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return str(env[name])
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set", path=path, hint=f"export {name}=... before running"
            )

        return _ENV.sub(repl, node)
    return node


def _check_component_types(raw: dict[str, Any]) -> None:
    errors = []
    for stage in STAGE_LISTS:
        items = raw.get(stage)
        if not isinstance(items, list):
            continue
        registry = REGISTRIES[stage]
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "type" not in item:
                errors.append(
                    ConfigError(
                        "each step needs a 'type'",
                        path=f"{stage}.{i}",
                        hint=f"one of: {', '.join(registry.names())}",
                    )
                )
                continue
            try:
                registry.get(str(item["type"]), path=f"{stage}.{i}.type")
            except ConfigError as e:
                errors.append(e)
    if errors:
        raise ConfigErrors(errors)


def _format_error(err: Any, raw: Any, model: type[BaseModel], template: Any = None) -> ConfigError:
    """One Pydantic error as a ConfigError at the user's path. ``template`` is the data before
    ``${env:...}`` substitution: a substituted value, or any value of a field named like a
    credential, is never echoed (it may be a secret given to the wrong field)."""
    loc = _clean_loc(err["loc"], raw)
    path = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(model, loc[:-1], raw)
        bad = str(loc[-1])
        hint = suggest(bad, valid, prefix=f"valid keys: {', '.join(valid)}" if valid else "")
        return ConfigError(f"unknown key {bad!r}", path=path, hint=hint or "remove it")
    if kind == "missing":
        return ConfigError("required field is missing", path=path, hint="add it")
    if kind == "union_tag_invalid":
        return ConfigError(err["msg"], path=f"{path}.type" if path else "type")
    value = err.get("input")
    written = _value_at(template, loc)
    if isinstance(written, str) and "${env:" in written:
        shown = f"the value of {written}"
    elif any(is_secret_name(p) for p in loc) or isinstance(value, dict | list):
        shown = type(value).__name__
    else:
        shown = repr(value)
    return ConfigError(f"{err['msg'].rstrip('.')} (got {shown})", path=path)


def _value_at(node: Any, loc: list[Any]) -> Any:
    """The raw value at ``loc`` (None when the path is not in the data)."""
    for part in loc:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _clean_loc(loc: tuple[Any, ...], raw: Any) -> list[Any]:
    """Drop the union tags and function-validator labels Pydantic inserts into error locations."""
    out: list[Any] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # discriminator tag
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out


def _fields_at(model: type[BaseModel], loc: list[Any], raw: Any) -> list[str]:
    """The valid keys of the config section at ``loc`` (for 'did you mean')."""
    tp: Any = model
    node = raw
    for part in loc:
        tp = _resolve(tp, node)
        if isinstance(part, int):
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
            node = node.get(part) if isinstance(node, dict) else None
        else:
            return []
    tp = _resolve(tp, node)
    return sorted(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _resolve(tp: Any, node: Any) -> Any:
    """Unwrap Annotated/Optional/unions, picking the member whose ``type`` tag matches the data."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tag = node.get("type") if isinstance(node, dict) else None
            chosen = [
                m
                for m in members
                if isinstance(m, type)
                and issubclass(m, BaseModel)
                and "type" in m.model_fields
                and m.model_fields["type"].default == tag
            ]
            tp = chosen[0] if chosen else members[0]
        else:
            return tp


def json_schema() -> dict[str, Any]:
    """JSON Schema of the pipeline file, for editor completion."""
    return pipeline_model().model_json_schema()
