"""The model-family interface: what the training loop, generation and export ask of a kind of model.

A family is one file under ``models/`` whose name is its registry name and ``train.model.type``
(``gpt.py`` registers ``gpt``); its config class (``train.model``) lives in the torch-free
``models/config.py``, so validating a pipeline never imports torch. Nothing outside a family's
file branches on its name: the loop calls ``plan``, ``build`` and ``save``, generation and
evaluation call ``load``, ``genloom export`` calls ``export_hf``. The pipeline's prepare stage
(tokenizer + token memmaps) and the one loop's next-token step are shared by the two text
families today; docs/architecture.md gives the interface the tabular, series and image families
will add (their own ``prepare``, ``train_step``, ``sample``, ``evaluate``, ``profile``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from genloom.core.registry import MODELS

if TYPE_CHECKING:
    import tokenizers
    import torch
    import torch.nn as nn


class ModelFamily:
    """A kind of model genloom trains (a registered class; one instance per use)."""

    name: ClassVar[str]

    def plan(
        self, cfg: Any, vocab_size: int, n_train_tokens: int, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        """(the family's entries of the training plan, with ``block_size``; the model width that
        sizes the default learning rate)."""
        raise NotImplementedError

    def default_lr(self, cfg: Any, width: int) -> float:
        """Peak learning rate when ``train.lr`` is not set."""
        return min(2e-3, 0.4 / width)  # muP-like 1/width beyond widths of a few hundred

    def set_dropout(self, plan: dict[str, Any], cfg: Any, epochs: float) -> None:
        """Adjust regularisation once the schedule's passes over the data are known (default: none)."""

    def vocab_size(self, out_dir: Path) -> int:
        """The vocabulary the model is built for (0: the model brings its own)."""
        return 0

    def build(
        self, plan: dict[str, Any], cfg: Any, device: torch.device, compute_dtype: torch.dtype
    ) -> nn.Module:
        """The model of a plan, on ``device``; its forward is ``(idx, targets) -> (logits, loss)``."""
        raise NotImplementedError

    def save(self, model: nn.Module, plan: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Write the trained weights into ``out_dir`` (safetensors, never pickle); returns the
        entries the family adds to ``config.json``."""
        raise NotImplementedError

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, tokenizers.Tokenizer]:
        """The model and tokenizer ``save`` wrote (CPU, float32)."""
        raise NotImplementedError

    def export_hf(self, model_dir: Path, out_dir: Path) -> Path:
        """The trained model as a Hugging Face folder that transformers loads."""
        raise NotImplementedError


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
