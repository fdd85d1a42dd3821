"""The model-family interface: everything the stages, the one training loop, sampling, the server
and monitoring ask of a kind of model.

A family is one file under ``models/`` whose name is its registry name and ``train.model.type``
(``gpt.py`` registers ``gpt``); its config class (``train.model``) lives in the torch-free
``models/config.py``, so validating a pipeline never imports torch. Nothing outside a family's
file branches on its name:

- the ``prepare`` stage calls ``prepare_key`` and ``prepare`` (records -> what the model trains
  on: tokens for text, an encoded matrix and its fitted transformer for tables);
- the ``train`` stage copies ``model_files`` of the prepared artifact into the model folder and
  runs the one loop of ``train/loop.py``, which calls ``open_data``, ``plan``, ``build``,
  ``optimizer_groups`` (through the model), ``train_step`` (a family with ``custom_step`` owns
  its whole step: a GAN's critic and generator updates) and ``save``;
- the ``evaluate`` stage calls ``evaluate`` (each metric with its direction) and ``register``
  calls ``evaluate_champion`` to score the champion on the same evaluation data;
- ``genloom sample`` / ``genloom generate``, the server and monitoring call ``sample``,
  ``load`` and ``profile``; ``genloom export`` calls ``export_hf``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from genloom.core.registry import MODELS

if TYPE_CHECKING:
    import pyarrow as pa
    import torch
    import torch.nn as nn

Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Metric:
    """One evaluation figure; ``direction`` says which way is better (None: shown, never decides
    promotion)."""

    value: float | None
    direction: Direction | None = None


# ----------------------------------------------------------------------------------------------
# prepare


@dataclass
class PrepareInput:
    """What a family's ``prepare`` reads: the last data stage's records, their split, the pipeline folder.

    ``batches(columns)`` streams the records as Arrow tables (only ``columns`` that exist; None:
    all); ``split(batch)`` gives each row's split, ``"train"``, ``"val"``, ``"test"`` or
    ``"none"`` (a stable hash of the record id; augmented copies never enter a held-out split);
    ``resolve(path)`` makes a config path absolute against the pipeline file's folder;
    ``advance()`` reports one of the family's ``prepare_steps`` done. ``test``: the split has a
    test part (``split.test_fraction`` > 0); the family writes it apart, under the names of its
    validation files with ``test`` for ``val`` (``test.bin``, ``test.parquet``...), and never
    trains or tunes on it: the evaluate stage scores the model on it.
    """

    batches: Callable[[Sequence[str] | None], Iterator[pa.Table]]
    columns: list[str]
    split: Callable[[pa.Table], list[str]]
    resolve: Callable[[str], str]
    advance: Callable[[], None] = lambda: None
    test: bool = False


@dataclass
class Prepared:
    """What ``prepare`` reports: training records, manifest entries (JSON), run-summary figures."""

    rows: int | None
    manifest: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class TrainPlan:
    """Every choice the training loop makes, resolved once from the config, the data and the
    machine, and saved with every checkpoint so that a resumed run follows it exactly.

    ``model`` holds the family's own entries (the GPT's preset and shape; a GAN's layer widths).
    ``to_dict`` writes the family's entries beside the common ones, as earlier versions did, so
    older checkpoints and model folders still read.
    """

    type: str
    block_size: int = 1  # tokens per training sequence; 1: a row is one unit
    batch_size: int = 0  # sequences (or rows) per micro-batch, per process
    lr: float = 0.0
    beta2: float | None = None
    precision: str = "fp32"
    muon_precision: str | None = None
    max_steps: int | None = None
    warmup_steps: int | None = None
    eval_interval: int | None = None
    checkpoint_interval: int | None = None
    measured_step_s: float | None = None
    first_estimate_steps: int | None = None
    model: dict[str, Any] = field(default_factory=dict)

    _COMMON: ClassVar[tuple[str, ...]] = (
        "type",
        "block_size",
        "batch_size",
        "lr",
        "beta2",
        "precision",
        "muon_precision",
        "max_steps",
        "warmup_steps",
        "eval_interval",
        "checkpoint_interval",
        "measured_step_s",
        "first_estimate_steps",
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the common entries (unset optional ones left out) and the family's."""
        out: dict[str, Any] = {"type": self.type, **self.model}
        for name in self._COMMON[1:]:
            v = getattr(self, name)
            if v is not None or name in ("max_steps", "beta2"):
                out[name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainPlan:
        common = {k: v for k, v in d.items() if k in cls._COMMON}
        return cls(**common, model={k: v for k, v in d.items() if k not in cls._COMMON})

    def replace(self, **changes: Any) -> TrainPlan:
        return dataclasses.replace(self, **changes)


class Batches(Protocol):
    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, ...]:
        """The tensors of micro-batch ``micro`` of ``step``; the same for the same (seed, step, micro, rank)."""
        ...


class TrainData(Protocol):
    """A family's prepared training and validation data, as the loop sees it."""

    #: what a step counts: "tokens" (text) or "rows" (tables)
    unit: str
    #: units in the training split (sizes the default schedule and the auto model size)
    n_train: int
    #: units in the validation split
    n_val: int
    #: the tokenizer's vocabulary (0: none, or the model brings its own)
    vocab_size: int

    def batches(self, plan: TrainPlan, seed: int, rank: int, world: int, grad_accum: int) -> Batches: ...

    def val_loss(self, model: nn.Module, plan: TrainPlan, max_units: int, device: torch.device) -> float:
        """The validation loss the loop tracks (early stopping, the best weights), deterministic."""
        ...

    def final_metrics(self, val_loss: float) -> dict[str, Any]:
        """Figures derived from the final validation loss (text: bits per character)."""
        ...


class ModelFamily:
    """A kind of model genloom trains (a registered class; one instance per use)."""

    name: ClassVar[str]
    #: files of the prepared artifact the model folder needs (copied in by the train stage)
    model_files: ClassVar[tuple[str, ...]] = ()
    #: progress units of ``prepare``
    prepare_steps: ClassVar[int] = 3
    #: True: ``train_step`` does the whole optimizer step (backward, updates); False: the loop
    #: runs forward(batch) -> (output, loss), accumulation, clipping and one optimizer step
    custom_step: ClassVar[bool] = False
    #: True: ``genloom generate`` continues prompts (a language model); False: ``genloom sample`` only
    generates_text: ClassVar[bool] = False

    # -- prepare --------------------------------------------------------------------------------

    def prepare_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        """What the prepared artifact depends on beyond the data and the split (JSON)."""
        raise NotImplementedError

    def prepare(self, inp: PrepareInput, train_cfg: Any, out_dir: Path) -> Prepared:
        """Writes into ``out_dir`` what the family trains and evaluates on (cached by the stage)."""
        raise NotImplementedError

    def profile(self, prepared_dir: Path) -> dict[str, Any]:
        """A JSON profile of the training data that monitoring compares live traffic with."""
        raise NotImplementedError

    # -- train ----------------------------------------------------------------------------------

    def open_data(self, prepared_dir: Path, model_dir: Path) -> TrainData:
        """The prepared training and validation data (memory-mapped where it can be)."""
        raise NotImplementedError

    def plan(
        self, cfg: Any, data: TrainData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        """(the family's plan entries: ``block_size``, and ``batch_size``, ``lr``, ``max_steps``
        where the family decides them, the rest into ``TrainPlan.model``; the model width that
        sizes the default learning rate)."""
        raise NotImplementedError

    def default_lr(self, cfg: Any, width: int) -> float:
        """Peak learning rate when ``train.lr`` is not set."""
        return min(2e-3, 0.4 / width)  # muP-like 1/width beyond widths of a few hundred

    def set_dropout(self, plan: TrainPlan, cfg: Any, epochs: float) -> None:
        """Adjust regularisation once the schedule's passes over the data are known (default: none)."""

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        """The model of a plan, on ``device``. Unless ``custom_step``, its forward takes a batch's
        tensors and returns ``(output, loss)``; it has ``optimizer_groups(weight_decay)``."""
        raise NotImplementedError

    def train_step(
        self,
        model: nn.Module,
        batches: Batches,
        opt: torch.optim.Optimizer,
        plan: TrainPlan,
        step: int,
        cfg: Any,
    ) -> dict[str, float]:
        """(``custom_step`` only) one optimizer step of ``step``; returns its losses, ``loss`` first."""
        raise NotImplementedError

    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors beyond the trainable parameters that a checkpoint must keep for an exact resume
        (a GAN's BatchNorm running statistics); default none."""
        return {}

    def load_checkpoint_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Restores what ``checkpoint_state`` gave."""
        if tensors:
            model.load_state_dict(tensors, strict=False)

    def save(self, model: nn.Module, plan: TrainPlan, out_dir: Path) -> dict[str, Any]:
        """Write the trained weights into ``out_dir`` (safetensors, never pickle); returns the
        entries the family adds to ``config.json``."""
        raise NotImplementedError

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, Any]:
        """The model ``save`` wrote (CPU, float32) and its companion (text: the tokenizer; tables:
        the fitted data transformer)."""
        raise NotImplementedError

    # -- use ------------------------------------------------------------------------------------

    def evaluate(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """The trained model on the held-out split; every metric with its direction."""
        raise NotImplementedError

    def evaluate_champion(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """An earlier model (the champion) scored on this run's evaluation data; by default
        ``evaluate`` (text re-tokenizes the validation texts with the champion's tokenizer)."""
        return self.evaluate(model_dir, prepared_dir, eval_cfg)

    def sample(
        self,
        model_dir: Path,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> pa.Table:
        """``n`` generated records as an Arrow table (text: a ``text`` column; tables: the real
        schema), under ``conditions`` (text: control values; tables: column values)."""
        raise NotImplementedError

    def export_hf(self, model_dir: Path, out_dir: Path) -> Path:
        """The trained model as a Hugging Face folder that transformers loads."""
        from genloom.core.errors import ConfigError

        raise ConfigError(f"a {self.name} model has no Hugging Face export", path="--format")


def family(name: str) -> ModelFamily:
    """The family registered as ``name``: the module ``genloom.models.<name>`` is imported first
    (file name = registry name), so torch is imported only when a model is actually used."""
    try:
        importlib.import_module(f"genloom.models.{name}")
    except ModuleNotFoundError as e:  # a plugin's family registers through its entry point
        if e.name != f"genloom.models.{name}":
            raise
    cls = MODELS.get(name, path="train.model.type")
    return cls()


def family_of(model_dir: Path | str) -> ModelFamily:
    """The family of a trained model folder (its config.json's ``model_type``)."""
    import json

    from genloom.core.errors import NotFoundError

    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise NotFoundError(f"no trained model in {model_dir} (config.json is missing)")
    return family(str(json.loads(path.read_text()).get("model_type", "")))
