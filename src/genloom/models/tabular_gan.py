"""CTGAN: a conditional GAN for mixed-type rows.

Xu, Skoularidou, Cuesta-Infante and Veeramachaneni, "Modeling Tabular Data using Conditional GAN",
NeurIPS 2019 (https://arxiv.org/abs/1907.00503). The paper's four ideas, each a part of this file:

1. **Mode-specific normalisation** (the shared ``TableTransformer``): a numeric value becomes a
   scalar in (-1, 1) within one mode of a Gaussian mixture plus the mode's one-hot; a categorical
   value a one-hot. The generator ends in ``tanh`` for the scalars and a Gumbel-softmax
   (temperature 0.2) for every one-hot span (``SpanHeads.activate``).
2. **The conditional vector** ``cond`` (B, C): the one-hot of one level of one discrete column,
   C = the levels of all discrete columns together. The generator reads ``[z, cond]``, and a
   cross-entropy term makes it produce the level it was asked for (``SpanHeads.conditional_loss``).
3. **Training-by-sampling** (``TrainingSampler``): per row of a batch, a discrete column
   uniformly, one of its levels with probability proportional to the log of its frequency, and a
   real row with that level. Rare levels are seen often enough to be learned, while the critic
   compares real and generated rows under the same conditions, so the joint distribution stays
   right.
4. **A PacGAN critic with WGAN-GP** (``Critic``, ``gradient_penalty``): the critic scores ``pac``
   rows at once (Lin et al. 2018, against mode collapse) and is a Wasserstein critic with a
   gradient penalty on random interpolates (Gulrajani et al. 2017), computed per pac group.

Written from the paper, checked against the MIT-licensed CTGAN code (sdv-dev/CTGAN before 0.7).
Where it differs, for speed on CPUs:

- The networks see the encoded row in a *model order*: the scalars first, then the one-hot spans
  grouped by width. Then the Gumbel-softmax of all spans of one width is one softmax over a
  (B, spans, width) view of a slice, with no gather in the graph (the backward of a gather is a
  scatter-add, slow on CPUs). Real rows are put in model order once, when the sampler is built;
  generated rows are put back in encoded order after the network.
- The generator update reuses the fake rows of the last critic update (as the PyTorch DCGAN
  example does) instead of generating a second batch, and the critic's weights are frozen during
  it, so only the input gradients flow through the critic.
- Real rows are paired with the generator's conditions row for row (CTGAN permutes them within
  the batch; the pairs follow the same distribution either way).

Exact resume: everything random in a step (the conditions, the real rows, the noise, dropout,
Gumbel noise, the interpolation weights) comes from (seed, step), never from state carried over.

Differential privacy (``privacy:`` set): only the critic sees real rows, so only its updates are
private: DP-SGD with one clipping unit per pac group (a real row is in one group per update), by
``dp_step`` of ``models/tabular.py``; the accountant counts ``critic_steps`` updates per step.
Training-by-sampling would draw rows of rare levels far more often than the accountant assumes,
so under privacy real rows are drawn uniformly without replacement, each conditioned on its own
level of a random column, and the generator's conditions follow the training level frequencies.
The fitted transformer (modes, levels, their frequencies) is not covered by the guarantee.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.errors import ConfigError
from genloom.core.registry import MODELS
from genloom.models.base import TrainPlan
from genloom.models.tabular import PrivacyPlan, TabularData, TabularFamily, dp_step, noise_multiplier

GUMBEL_TAU = 0.2  # the paper's temperature: near one-hot outputs that still pass gradients
DROPOUT = 0.5  # the critic's dropout, as CTGAN
GENERATE_CHUNK = 4096  # rows generated per forward pass when sampling (bounded memory)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed drawn from integer ``keys`` (seed, step, ...): independent streams per key."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


# ----------------------------------------------------------------------------------------------
# the encoded row


@dataclass(frozen=True)
class DiscreteColumn:
    """A categorical or boolean column: its one-hot span in the encoded row, its level frequencies."""

    name: str
    start: int  # offset of the category span in the encoded row
    dim: int  # levels
    frequencies: tuple[float, ...]  # training frequency of each level, in span order


@dataclass(frozen=True)
class SpanLayout:
    """The encoded row as the GAN sees it: the scalars, the one-hot spans, the discrete columns, and
    the *model order* of the columns (scalars first, then the one-hot spans grouped by width)."""

    dim: int
    tanh_columns: tuple[int, ...]
    softmax_spans: tuple[tuple[int, int], ...]  # (start, width) of every one-hot span, encoded order
    discrete: tuple[DiscreteColumn, ...]

    @classmethod
    def from_plan(cls, spans: list[dict[str, Any]], dim: int, discrete: list[dict[str, Any]]) -> SpanLayout:
        """The layout of the plan's ``spans`` (``tabular.span_dicts``) and ``discrete`` entries."""
        return cls(
            int(dim),
            tuple(s["start"] + i for s in spans if s["activation"] == "tanh" for i in range(s["dim"])),
            tuple((int(s["start"]), int(s["dim"])) for s in spans if s["activation"] == "softmax"),
            tuple(
                DiscreteColumn(str(c["name"]), int(c["start"]), int(c["dim"]), tuple(c["frequencies"]))
                for c in discrete
            ),
        )

    @staticmethod
    def discrete_entries(transformer: Any) -> list[dict[str, Any]]:
        """The plan's ``discrete`` entry: each discrete column's category span and level frequencies."""
        out = []
        for name in transformer.discrete_columns:
            span = transformer.category_span(name)
            freq = np.asarray(transformer.level_frequencies(name), dtype=np.float64)
            out.append({"name": name, "start": span.start, "dim": span.dim, "frequencies": freq.tolist()})
        return out

    @property
    def cond_dim(self) -> int:
        """C: the levels of all discrete columns (the conditional vector's width)."""
        return sum(c.dim for c in self.discrete)

    @property
    def cond_starts(self) -> np.ndarray:
        """Offset of each discrete column's levels in the conditional vector, (K,)."""
        return np.cumsum([0] + [c.dim for c in self.discrete])[:-1].astype(np.int64)

    @property
    def width_groups(self) -> list[tuple[int, list[tuple[int, int]]]]:
        """The one-hot spans grouped by width, narrowest first: [(width, [(start, width), ...])]."""
        groups: dict[int, list[tuple[int, int]]] = {}
        for span in self.softmax_spans:
            groups.setdefault(span[1], []).append(span)
        return sorted(groups.items())

    @property
    def order(self) -> np.ndarray:
        """(dim,) the encoded column at each position of the model order."""
        cols = list(self.tanh_columns)
        for _, spans in self.width_groups:
            cols += [s + i for s, w in spans for i in range(w)]
        return np.asarray(cols, dtype=np.int64)

    @property
    def cond_columns(self) -> np.ndarray:
        """(C,) the model-order column of each entry of the conditional vector."""
        where = np.argsort(self.order)  # encoded column -> model position
        return np.asarray([where[c.start + j] for c in self.discrete for j in range(c.dim)], dtype=np.int64)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """(n, K) the level of every discrete column in encoded rows ``x`` (n, dim)."""
        out = np.zeros((len(x), len(self.discrete)), dtype=np.int64)
        for k, c in enumerate(self.discrete):
            out[:, k] = np.argmax(x[:, c.start : c.start + c.dim], axis=1)
        return out


class SpanHeads(nn.Module):
    """The generator's output activations and its conditional loss, on rows in model order."""

    def __init__(self, layout: SpanLayout) -> None:
        super().__init__()
        self.n_values = len(layout.tanh_columns)
        self.groups = [(w, len(spans)) for w, spans in layout.width_groups]  # (width, spans of it)
        self.sizes = [self.n_values] + [w * n for w, n in self.groups]

    def activate(
        self, raw: torch.Tensor, tau: float = GUMBEL_TAU, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """tanh on the scalars, Gumbel-softmax at temperature ``tau`` on every one-hot span:
        raw logits (B, dim) -> rows (B, dim), both in model order."""
        B = raw.size(0)
        values, *spans = raw.split(self.sizes, dim=1)
        # Gumbel(0, 1) noise as -log(-log(U)) (torch's exponential_ is several times slower on CPUs)
        u = torch.rand(B, raw.size(1) - self.n_values, generator=generator, device=raw.device)
        gumbels = (-(-u.clamp_min(1e-20).log()).log()).split(self.sizes[1:], dim=1)
        out = [torch.tanh(values)]
        for (w, n), logits, g in zip(self.groups, spans, gumbels, strict=True):
            y = torch.softmax(((logits + g) / tau).view(B, n, w), dim=-1)  # (B, n spans, width w)
            out.append(y.view(B, n * w))
        return torch.cat(out, dim=1)

    def conditional_loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the asked levels, mean over rows: raw logits (B, dim) in model order;
        ``target`` (B, dim) a 1 at the model-order column of each row's asked level, else 0."""
        B = raw.size(0)
        _, *spans = raw.split(self.sizes, dim=1)
        _, *targets = target.split(self.sizes, dim=1)
        loss = raw.new_zeros(())
        for (w, n), logits, t in zip(self.groups, spans, targets, strict=True):
            logp = torch.log_softmax(logits.view(B, n, w), dim=-1)
            loss = loss - (logp * t.view(B, n, w)).sum()
        return loss / B


# ----------------------------------------------------------------------------------------------
# the networks


class Residual(nn.Module):
    """Linear-BatchNorm-ReLU whose output is concatenated to its input (the generator's block)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.bn(self.fc(x))), x], dim=1)  # (B, d_in) -> (B, d_out + d_in)


class Generator(nn.Module):
    """[z, cond] (B, E + C) -> raw logits of a row in model order (B, dim), through residual blocks."""

    def __init__(self, d_in: int, dims: Sequence[int], d_out: int) -> None:
        super().__init__()
        blocks, d = [], d_in
        for width in dims:
            blocks.append(Residual(d, width))
            d += width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(d, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


class Critic(nn.Module):
    """PacGAN critic: ``pac`` rows [row, cond] judged as one sample, (B, D) -> (B / pac, 1) scores;
    Linear-LeakyReLU(0.2)-Dropout(0.5) per hidden width, then a linear score."""

    def __init__(self, d_in: int, dims: Sequence[int], pac: int) -> None:
        super().__init__()
        self.pac = pac
        self.dims = list(dims)
        widths = [d_in * pac, *dims]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.score = nn.Linear(widths[-1], 1)

    def forward(self, x: torch.Tensor, keep: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``keep``: dropout masks (G, width) per hidden layer, already scaled by 1 / (1 - p),
        instead of drawing them (a per-sample map under DP cannot draw random numbers)."""
        B, D = x.shape
        h = x.reshape(B // self.pac, self.pac * D)  # (G, pac * D): a group is one sample
        for i, layer in enumerate(self.hidden):
            h = F.leaky_relu(layer(h), 0.2)
            if keep is not None:
                h = h * keep[i]
            elif self.training:  # dropout from uniform draws: F.dropout's bernoulli_ took 2x as long here
                h = h * ((torch.rand(h.shape, device=h.device) >= DROPOUT) * (1 / (1 - DROPOUT)))
        return self.score(h).float()  # (G, 1), float32 under bf16 autocast too


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, weight: float) -> torch.Tensor:
    """WGAN-GP on pac groups: weight * E[(||grad critic(x_hat)|| - 1)^2] over random interpolates.

    One interpolation weight per pac group, and the gradient norm over each group's (pac * D)
    input, since the critic sees a group as one sample. real, fake: (B, D).
    """
    B, D = real.shape
    G = B // critic.pac
    alpha = torch.rand(G, 1, 1, device=real.device).expand(G, critic.pac, 1).reshape(B, 1)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)  # (B, D)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)  # (B, D)
    norm = grad.reshape(G, critic.pac * D).norm(dim=1)  # (G,)
    return weight * ((norm - 1) ** 2).mean()


class TabularGAN(nn.Module):
    """The generator and the critic of one encoded layout (rows in model order inside)."""

    dp_updates: torch.Tensor
    transformer: Any = None  # the fitted TableTransformer, set by ``TabularFamily.load``

    def __init__(
        self,
        layout: SpanLayout,
        embedding_dim: int,
        generator_dims: Sequence[int],
        critic_dims: Sequence[int],
        pac: int,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.embedding_dim = embedding_dim
        self.pac = pac
        C = layout.cond_dim
        self.generator = Generator(embedding_dim + C, generator_dims, layout.dim)
        self.critic = Critic(layout.dim + C, critic_dims, pac)
        self.heads = SpanHeads(layout)
        self.order = layout.order  # model position -> encoded column
        self.restore = np.argsort(self.order)  # encoded column -> model position
        # private critic updates done (a buffer: checkpoints carry it, so a resumed run counts on)
        self.register_buffer("dp_updates", torch.zeros((), dtype=torch.long))

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Generator and critic, Adam betas (0.5, 0.9) as in WGAN-GP and CTGAN."""
        return [
            {"params": list(self.generator.parameters()), "betas": (0.5, 0.9), "weight_decay": weight_decay},
            {"params": list(self.critic.parameters()), "betas": (0.5, 0.9), "weight_decay": weight_decay},
        ]

    def fake(
        self, z: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw logits, activated rows), both (B, dim) in model order, of noise z (B, E) under cond (B, C).

        The logits are float32 even under bf16 autocast: the Gumbel-softmax and the conditional
        loss work on them in full precision."""
        raw = self.generator(torch.cat([z, cond], dim=1)).float()
        return raw, self.heads.activate(raw, generator=generator)

    def sampling_conditions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, C) conditions as CTGAN samples: a discrete column uniformly, a level by training frequency."""
        cond = torch.zeros(n, self.layout.cond_dim)
        K = len(self.layout.discrete)
        if K == 0:
            return cond
        col = torch.randint(K, (n,), generator=generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        for k, c in enumerate(self.layout.discrete):
            rows = (col == k).nonzero().squeeze(1)
            freq = np.asarray(c.frequencies, dtype=np.float64)
            cum = torch.from_numpy(np.cumsum(freq) / max(freq.sum(), 1e-12))
            level = torch.searchsorted(cum, u[rows], right=True).clamp(max=c.dim - 1)
            cond[rows, int(self.layout.cond_starts[k]) + level] = 1.0
        return cond

    @torch.no_grad()
    def generate(self, n: int, seed: int, condition: tuple[int, int] | None = None) -> np.ndarray:
        """(n, dim) float32 rows in encoded order; ``condition`` (discrete column k, level) fixes
        the conditional vector of every row, else conditions are drawn by training frequency.

        Eval mode: BatchNorm uses its running statistics, so a row does not depend on the other
        rows of its batch (a batch under one condition is not like a training batch)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        out = []
        for lo in range(0, n, GENERATE_CHUNK):
            b = min(GENERATE_CHUNK, n - lo)
            if condition is None:
                cond = self.sampling_conditions(b, g)
            else:
                cond = torch.zeros(b, self.layout.cond_dim)
                cond[:, int(self.layout.cond_starts[condition[0]]) + condition[1]] = 1.0
            z = torch.randn(b, self.embedding_dim, generator=g)
            raw = self.generator(torch.cat([z, cond], dim=1).to(device)).cpu()
            out.append(self.heads.activate(raw, generator=g).numpy()[:, self.restore])
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.layout.dim), dtype=np.float32)

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor, seed: int) -> float:
        """The critic's Wasserstein estimate E[critic(real)] - E[critic(fake)] per pac group on
        validation rows x (n, dim, encoded order) and as many generated rows under the same
        conditions (each real row's own level of a random column), fixed ``seed``, eval mode."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        n = (len(x) // self.pac) * self.pac
        if n == 0:
            self.train(was_training)
            return 0.0
        g = torch.Generator().manual_seed(seed)
        rows = x[:n].float().cpu().numpy()
        cond = torch.zeros(n, self.layout.cond_dim)
        K = len(self.layout.discrete)
        if K:
            codes = self.layout.codes(rows)  # (n, K)
            col = torch.randint(K, (n,), generator=g).numpy()
            cond[np.arange(n), self.layout.cond_starts[col] + codes[np.arange(n), col]] = 1.0
        real = torch.from_numpy(np.ascontiguousarray(rows[:, self.order]))
        total, chunk = 0.0, max(self.pac, (GENERATE_CHUNK // self.pac) * self.pac)
        for lo in range(0, n, chunk):
            c = cond[lo : lo + chunk]
            z = torch.randn(len(c), self.embedding_dim, generator=g)
            raw = self.generator(torch.cat([z, c], dim=1).to(device)).cpu()
            fake = self.heads.activate(raw, generator=g)
            score_real = self.critic(torch.cat([real[lo : lo + chunk], c], dim=1).to(device)).sum()
            score_fake = self.critic(torch.cat([fake, c], dim=1).to(device)).sum()
            total += float(score_real - score_fake)
        self.train(was_training)
        return total / (n // self.pac)


# ----------------------------------------------------------------------------------------------
# training-by-sampling


class TrainingSampler:
    """CTGAN's training-by-sampling over the encoded training rows (n, dim).

    Per row of a batch: a discrete column k uniformly, a level j of k with probability
    proportional to log(1 + count_kj), then a training row whose column k has level j. The rows
    of each level are sorted once (``by_level``), so a batch is a few vectorised draws.
    """

    def __init__(self, data: np.ndarray, layout: SpanLayout) -> None:
        self.layout = layout
        self.n = len(data)
        self.rows = np.ascontiguousarray(np.asarray(data, dtype=np.float32)[:, layout.order])  # model order
        K, C = len(layout.discrete), layout.cond_dim
        self.codes = layout.codes(np.asarray(data))  # (n, K)
        self.cond_starts = layout.cond_starts  # (K,)
        self.cond_columns = layout.cond_columns  # (C,)
        widest = max((c.dim for c in layout.discrete), default=1)
        # rows of global level g (column k, level j: g = cond_starts[k] + j) are
        # by_level[level_start[g] : level_start[g] + level_count[g]]
        sorted_rows = [np.argsort(self.codes[:, k], kind="stable") for k in range(K)]
        self.by_level = np.concatenate(sorted_rows).astype(np.int64) if K else np.zeros(0, np.int64)
        self.level_count = np.zeros(C, dtype=np.int64)
        self.level_start = np.zeros(C, dtype=np.int64)
        # cumulative level probabilities per column; 2.0 past the last level so that a draw u < 1
        # always lands on a level despite rounding
        self.cum_log = np.full((K, widest), 2.0)
        self.cum_freq = np.full((K, widest), 2.0)
        for k, c in enumerate(layout.discrete):
            counts = np.bincount(self.codes[:, k], minlength=c.dim)
            g0 = self.cond_starts[k]
            self.level_count[g0 : g0 + c.dim] = counts
            self.level_start[g0 : g0 + c.dim] = k * self.n + np.cumsum(counts) - counts
            self.cum_log[k, : c.dim - 1] = (np.cumsum(np.log1p(counts)) / np.log1p(counts).sum())[:-1]
            freq = np.asarray(c.frequencies, dtype=np.float64)
            self.cum_freq[k, : c.dim - 1] = (np.cumsum(freq) / max(freq.sum(), 1e-12))[:-1]

    def _conditions(self, col: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cond (B, C), target (B, dim)): one-hots of level ``level`` of column ``col`` per row."""
        B = len(col)
        cond = np.zeros((B, self.layout.cond_dim), dtype=np.float32)
        target = np.zeros((B, self.layout.dim), dtype=np.float32)
        if len(self.layout.discrete):
            g = self.cond_starts[col] + level
            cond[np.arange(B), g] = 1.0
            target[np.arange(B), self.cond_columns[g]] = 1.0
        return cond, target

    def sample(self, B: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(real rows (B, dim) in model order, cond (B, C), target (B, dim)); row i has the level
        cond i names."""
        K = len(self.layout.discrete)
        if K == 0:
            cond, target = self._conditions(np.zeros(B, np.int64), np.zeros(B, np.int64))
            return self.rows[rng.integers(self.n, size=B)], cond, target
        col = rng.integers(K, size=B)
        level = (self.cum_log[col] > rng.random(B)[:, None]).argmax(axis=1)  # by log-frequency
        g = self.cond_starts[col] + level
        pick = self.level_start[g] + (rng.random(B) * self.level_count[g]).astype(np.int64)
        return self.rows[self.by_level[pick]], *self._conditions(col, level)

    def sample_private(
        self, B: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Under DP: B distinct rows drawn uniformly, each conditioned on its own level of a random
        column; the generator's conditions drawn apart, by training frequency.
        Returns (real rows in model order, their cond, generator cond, generator target)."""
        idx = rng.choice(self.n, size=B, replace=False)
        K = len(self.layout.discrete)
        if K == 0:
            cond, target = self._conditions(np.zeros(B, np.int64), np.zeros(B, np.int64))
            return self.rows[idx], cond, cond, target
        col = rng.integers(K, size=B)
        real_cond, _ = self._conditions(col, self.codes[idx, col])
        fake_col = rng.integers(K, size=B)
        fake_level = (self.cum_freq[fake_col] > rng.random(B)[:, None]).argmax(axis=1)
        return self.rows[idx], real_cond, *self._conditions(fake_col, fake_level)


class GANBatches:
    """``batch(step, micro)`` -> (real rows, their cond, generator cond, generator target), CPU float32.

    ``micro`` k of a step is the batch of its k-th critic update (the generator update reuses the
    last). Without privacy the real rows come with the generator's conditions (the same tensor
    twice), as training-by-sampling pairs them; under privacy they are drawn apart.
    """

    def __init__(
        self, sampler: TrainingSampler, batch_size: int, seed: int, rank: int, private: bool
    ) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.private = private

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, ...]:
        """The tensors of critic update ``micro`` of ``step``: the same for the same (seed, step, micro, rank)."""
        rng = np.random.default_rng([self.seed, step, micro, self.rank])
        if self.private:
            return tuple(torch.from_numpy(a) for a in self.sampler.sample_private(self.batch_size, rng))
        real, cond, target = self.sampler.sample(self.batch_size, rng)
        cond_t = torch.from_numpy(cond)
        return torch.from_numpy(real), cond_t, cond_t, torch.from_numpy(target)

    def step_seed(self, step: int) -> int:
        """The torch seed of ``step``'s own draws (noise, dropout, Gumbel noise, interpolation weights)."""
        return derive_seed(self.seed, step, self.rank)


class TabularGANData(TabularData):
    """The prepared table, batched by training-by-sampling."""

    def batches(self, plan: TrainPlan, seed: int, rank: int, world: int, grad_accum: int) -> GANBatches:  # type: ignore[override]
        """Batches of ``plan.batch_size`` rows; each rank draws its own from (seed, step, rank)."""
        layout = layout_of(plan)
        # the sampler keeps its own copy of the rows in model order: it reads them through a mapping
        # of its own, unmapped once read, so the file's pages do not stay in the process beside
        # the copy (20 MB on Adult, the training stage's peak)
        rows = np.load(self.prepared_dir / "train.npy", mmap_mode="r")
        sampler = TrainingSampler(rows, layout)
        del rows
        return GANBatches(sampler, plan.batch_size, seed, rank, bool(plan.model.get("privacy")))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global torch RNG seeded with ``seed`` inside, restored after (dropout takes no generator)."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        # not torch.manual_seed: on a machine without CUDA it queues a lazy CUDA seeding with a
        # formatted stack trace on every call (milliseconds per step)
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------------------------
# the family


def layout_of(plan: TrainPlan) -> SpanLayout:
    """The span layout the plan carries."""
    m = plan.model
    return SpanLayout.from_plan(m["spans"], m["dim"], m["discrete"])


def check_pac(batch_size: int, pac: int) -> None:
    """ConfigError unless the batch splits into whole pac groups."""
    if batch_size % pac:
        raise ConfigError(
            f"the batch of {batch_size} rows does not split into groups of pac={pac} rows (the critic judges groups)",
            path="train.model.pac",
            hint=f"set train.model.pac to a divisor of {batch_size}, or the batch size to a multiple of {pac}",
        )


@MODELS.register("tabular_gan")
class TabularGANFamily(TabularFamily):
    """CTGAN-style synthetic rows (Xu et al. 2019): a conditional generator trained against a
    PacGAN critic with WGAN-GP, and training-by-sampling over the levels of the categorical columns.

    A condition on a categorical column goes into the conditional vector, so nearly every generated
    row has the asked level before rejection; other conditions are met by rejection alone.
    """

    name = "tabular_gan"

    def open_data(self, prepared_dir: Path, model_dir: Path) -> TabularGANData:
        """The prepared table, batched by training-by-sampling."""
        from genloom.models.tabular_data import TableTransformer

        return TabularGANData(prepared_dir, TableTransformer.load(Path(prepared_dir) / "transformer.json"))

    def plan(
        self, cfg: Any, data: TabularData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        """The shared entries (batch, lr, steps, spans); a batch that pac does not divide is an error."""
        entries, width = super().plan(cfg, data, budget_s, device)
        check_pac(int(entries["batch_size"]), cfg.pac)
        return entries, width

    def plan_entries(self, cfg: Any, data: TabularData) -> dict[str, Any]:
        """The discrete columns (conditional vector), the network widths and the GAN's settings."""
        return {
            "discrete": SpanLayout.discrete_entries(data.transformer),
            "embedding_dim": cfg.embedding_dim,
            "generator_dims": list(cfg.generator_dims),
            "critic_dims": list(cfg.critic_dims),
            "pac": cfg.pac,
            "critic_steps": cfg.critic_steps,
            "gp_weight": cfg.gp_weight,
            "weight_decay": cfg.weight_decay,
        }

    def build(
        self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype
    ) -> TabularGAN:
        """The generator and critic of the plan, float32 weights (``train_step`` autocasts their
        matmuls to bf16 when the plan's precision is bf16)."""
        m = plan.model
        check_pac(plan.batch_size, int(m["pac"]))
        model = TabularGAN(
            layout_of(plan), int(m["embedding_dim"]), m["generator_dims"], m["critic_dims"], int(m["pac"])
        )
        return model.to(device)

    # -- privacy ----------------------------------------------------------------------------------

    def privacy_plan(self, plan: TrainPlan) -> PrivacyPlan | None:
        """DP-SGD settings of the critic: ``critic_steps`` private updates per step, sampling rate
        batch / training rows (None: privacy off)."""
        p = plan.model.get("privacy")
        if not p:
            return None
        q = min(1.0, plan.batch_size / max(1, int(plan.model["n_train"])))
        updates = int(plan.max_steps or 1) * int(plan.model["critic_steps"])
        sigma = noise_multiplier(float(p["epsilon"]), float(p["delta"]), q, updates)
        return PrivacyPlan(
            float(p["epsilon"]), float(p["delta"]), float(p["max_grad_norm"]), q, updates, sigma
        )

    def privacy_report(self, plan: TrainPlan) -> dict[str, Any] | None:
        """The DP figures of the planned schedule (its critic updates; None: privacy off)."""
        privacy = self.privacy_plan(plan)
        return privacy.report() if privacy is not None else None

    # -- the step ---------------------------------------------------------------------------------

    def train_step(
        self,
        model: nn.Module,
        batches: GANBatches,  # type: ignore[override]
        opt: torch.optim.Optimizer,
        plan: TrainPlan,
        step: int,
        cfg: Any,
    ) -> dict[str, float]:
        """``critic_steps`` critic updates (WGAN-GP), then one generator update on the last fake rows."""
        gan = _core(model)
        m = plan.model
        device = next(gan.parameters()).device
        world = _world(model)
        critic_steps, gp_weight = int(m["critic_steps"]), float(m["gp_weight"])
        privacy = self.privacy_plan(plan)
        # the plan's precision: bf16 autocast of the networks' matmuls where the machine probe found
        # bf16 fast (float32 weights, logits and scores; the private critic stays float32). One
        # autocast region per update: its cache of bf16 weights must not outlive an optimizer step.
        bf16 = plan.precision == "bf16" and privacy is None

        def mixed() -> torch.autocast:
            return torch.autocast(device.type, torch.bfloat16, enabled=bf16)

        with seeded(batches.step_seed(step), device):
            for k in range(critic_steps):
                real, real_cond, cond, target = (
                    t.to(device, non_blocking=True) for t in batches.batch(step, k)
                )
                z = torch.randn(real.size(0), gan.embedding_dim, device=device)  # (B, E)
                opt.zero_grad(set_to_none=True)
                with mixed():
                    with torch.set_grad_enabled(
                        k == critic_steps - 1
                    ):  # the generator update needs this graph
                        raw, fake = gan.fake(z, cond)  # (B, dim) each
                    x_real = torch.cat([real, real_cond], dim=1)  # (B, dim + C)
                    x_fake = torch.cat([fake.detach(), cond], dim=1)
                    if privacy is None:
                        scores = gan.critic(torch.cat([x_real, x_fake]))  # (2G, 1): real groups, then fake
                        wasserstein = scores.chunk(2)[0].mean() - scores.chunk(2)[1].mean()
                        penalty = gradient_penalty(gan.critic, x_real, x_fake, gp_weight)
                        critic_loss = -wasserstein + penalty
                        critic_loss.backward()
                    else:
                        critic_loss, wasserstein, penalty = private_critic_grads(
                            gan, x_real, x_fake, gp_weight, privacy
                        )
                        gan.dp_updates += 1
                _average_grads(gan, world)
                opt.step()

            # the generator: fool the updated critic and produce the asked levels
            opt.zero_grad(set_to_none=True)
            gan.critic.requires_grad_(False)  # input gradients only; AdamW skips parameters without .grad
            try:
                with mixed():
                    conditional = gan.heads.conditional_loss(raw, target)
                    generator_loss = -gan.critic(torch.cat([fake, cond], dim=1)).mean() + conditional
                    generator_loss.backward()
            finally:
                gan.critic.requires_grad_(True)
            _average_grads(gan, world)
            opt.step()
        with torch.no_grad():  # one device-to-host copy for all the figures
            c, w, p, g, ce = torch.stack(
                [critic_loss, wasserstein, penalty, generator_loss, conditional]
            ).tolist()
        return {"loss": c + g, "critic": c, "generator": g, "wasserstein": w, "penalty": p, "conditional": ce}

    # -- sampling -----------------------------------------------------------------------------------

    def generate(self, model: nn.Module, n: int, cond: dict[str, Any] | None, seed: int) -> np.ndarray:
        """(n, dim) encoded rows. Of the asked values of discrete columns the rarest in training
        goes into the conditional vector (the generator was trained on one column at a time);
        the others are left to rejection."""
        gan = _core(model)
        condition = None
        transformer = gan.transformer
        if cond and transformer is not None:
            names = [c.name for c in gan.layout.discrete]
            asked = []
            for column, value in cond.items():
                if column in names:
                    k = names.index(column)
                    level = int(transformer.category_index(column, value))
                    asked.append((gan.layout.discrete[k].frequencies[level], k, level))
            if asked:
                _, k, level = min(asked)
                condition = (k, level)
        return gan.generate(n, seed, condition)


def private_critic_grads(
    gan: TabularGAN, x_real: torch.Tensor, x_fake: torch.Tensor, gp_weight: float, privacy: PrivacyPlan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Writes DP-SGD gradients of the critic loss into the critic (one clipping unit per pac
    group: a group's real rows, fake rows and their gradient penalty); returns the batch's
    (critic loss, Wasserstein estimate, penalty)."""
    from torch.func import functional_call, grad

    critic = gan.critic
    B, D = x_real.shape
    G, pac = B // critic.pac, critic.pac
    device = x_real.device
    # what a per-sample map cannot draw itself: interpolation weights and dropout masks
    alpha = torch.rand(G, 1, device=device)
    keep = [
        (torch.rand(G, 3, width, device=device) >= DROPOUT).float() / (1 - DROPOUT) for width in critic.dims
    ]

    def group_loss(
        state: dict[str, torch.Tensor],
        xr: torch.Tensor,
        xf: torch.Tensor,
        a: torch.Tensor,
        *masks: torch.Tensor,
    ) -> Any:
        xr, xf = xr.reshape(pac, D), xf.reshape(pac, D)  # one group: (1, pac, D) -> (pac, D)

        def score(x: torch.Tensor, i: int) -> torch.Tensor:
            return functional_call(critic, state, (x,), {"keep": [mk[:, i] for mk in masks]}).sum()

        x_hat = a.reshape(1, 1) * xr + (1 - a.reshape(1, 1)) * xf
        slope = grad(lambda x: score(x, 2))(x_hat)  # (pac, D)
        penalty = gp_weight * (slope.norm() - 1) ** 2
        wasserstein = score(xr, 0) - score(xf, 1)
        return -wasserstein + penalty, torch.stack([wasserstein, penalty])

    losses, aux = dp_step(
        critic,
        group_loss,
        (x_real.reshape(G, pac, D), x_fake.reshape(G, pac, D), alpha, *keep),
        privacy.max_grad_norm,
        privacy.noise_multiplier,
        None,  # the global RNG, seeded from (seed, step) by the step
    )
    wasserstein, penalty = aux.mean(0).unbind()
    return losses.mean().detach(), wasserstein.detach(), penalty.detach()


def _world(model: nn.Module) -> int:
    """Processes training together: > 1 when the loop wrapped the model in DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def _average_grads(gan: TabularGAN, world: int) -> None:
    """Averages the gradients over the processes (the step calls the generator and the critic
    directly, past DDP's hooks; DDP made the starting weights equal)."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in gan.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _core(model: nn.Module) -> TabularGAN:
    """The TabularGAN inside a DDP or compiled wrapper."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    assert isinstance(inner, TabularGAN)
    return inner
