"""An exponential moving average of the trainable weights, evaluated and saved in their place.

On a small corpus trained for many epochs the average of the last few hundred steps generalises
better than the last step's weights (Polyak averaging); the training itself is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn


class WeightEMA:
    """``ema = decay_t * ema + (1 - decay_t) * w`` after every optimizer step, for trainable weights.

    ``decay_t = min(decay, (1 + t) / (10 + t))`` so the first steps are not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        seen: set[int] = set()
        for name, p in model.named_parameters():
            if p.requires_grad and id(p) not in seen:  # tied weights once
                seen.add(id(p))
                self.names.append(name)
                self.params.append(p)
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own outside."""
        saved = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for p, s in zip(self.params, self.shadow, strict=True):
            p.copy_(s.to(p.dtype))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """For the checkpoint: ``ema.<name>`` tensors and the update count."""
        out = {f"ema.{n}": s.contiguous() for n, s in zip(self.names, self.shadow, strict=True)}
        out["ema_updates"] = torch.tensor(self.updates)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, n in enumerate(self.names):
            self.shadow[i].copy_(tensors[f"ema.{n}"])
        self.updates = int(tensors["ema_updates"])
