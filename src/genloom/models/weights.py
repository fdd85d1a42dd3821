"""A model's trainable weights by name, for safetensors files (never pickle)."""

from __future__ import annotations

import torch
import torch.nn as nn

from genloom.core.errors import GenloomError


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (LoRA: only the adapters), each tensor once even if tied."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[name] = p.detach().contiguous().cpu()
    return out


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copies ``state`` into the model's parameters of the same names (the counterpart of trainable_state)."""
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise GenloomError(
            f"the checkpoint has parameters this model lacks ({', '.join(missing[:3])}...): it belongs to another "
            "model config; delete the output folder's checkpoints/ to start over"
        )
    with torch.no_grad():
        for name, t in state.items():
            params[name].copy_(t)
