"""TVAE: a variational autoencoder for mixed-type rows (Xu et al. 2019, "Modeling Tabular Data
using Conditional GAN", section 4.3 and appendix).

A row is encoded by the shared data transformer (``tabular_data.py``: a tanh value and a mode
one-hot per numeric column, a one-hot per categorical column, a missing flag where a column has
gaps). The encoder maps it to a Gaussian posterior q(z|x) over ``embedding_dim`` latents; the
decoder maps z to, per value span, the mean of a Gaussian whose standard deviation is a learned
parameter per column (clamped to [0.01, 1] as TVAE does), and per softmax span the logits of a
categorical. The loss is the negative ELBO per row with the reconstruction weighted by
``loss_factor``:

    loss = loss_factor * sum_spans -log p(x_span | z) + KL(q(z|x) || N(0, I))

Sampling draws z ~ N(0, I), then each value from its Gaussian (clipped to [-1, 1]) and each
level from its softmax, so generated rows follow p(x|z) rather than its mode.

With ``condition_on`` (categorical columns), the decoder also reads those columns' one-hots,
p(x | z, c), as in the conditional VAE of Sohn et al. 2015 (the encoder sees them within x):
sampling draws c at the columns' training frequencies, or takes an asked level, and the rows
carry the drawn c. A label the rows are used to predict is a natural c: the decoder is told the
label instead of having to encode it in z.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genloom.core.errors import ConfigError
from genloom.core.registry import MODELS
from genloom.models.base import TrainPlan
from genloom.models.tabular import (
    RowBatches,
    SpanIndex,
    TabularData,
    TabularFamily,
    average_gradients,
    ghost_dp_step,
    privacy_plan,
    step_generator,
    step_seed,
    world_size,
)

SIGMA_MIN, SIGMA_MAX = 0.01, 1.0  # TVAE's clamp of the learned standard deviations
GENERATE_CHUNK = 65_536  # rows decoded at once when sampling (bounded memory)


class Reparameterise(torch.autograd.Function):
    """The reparameterisation trick and the KL term of a diagonal Gaussian posterior, with their
    gradients written out: z = mu + eps * exp(logvar / 2), KL(N(mu, exp(logvar)) || N(0, I)) per
    row. One elementwise pass each way where autograd chains a dozen small ops."""

    generate_vmap_rule = True  # per-sample gradients (DP-SGD) map it like any torch code

    @staticmethod
    def forward(
        mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mu, eps, std)
        kl = 0.5 * (mu * mu + std * std - 1.0 - logvar).sum(-1)
        return z, kl

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]) -> None:
        mu, logvar, eps = inputs
        ctx.save_for_backward(mu, eps, torch.exp(0.5 * logvar))

    @staticmethod
    def backward(ctx: Any, grad_z: torch.Tensor, grad_kl: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mu, eps, std = ctx.saved_tensors
        g = grad_kl.unsqueeze(-1)
        grad_mu = grad_z + g * mu  # dz/dmu = 1, dKL/dmu = mu
        grad_logvar = 0.5 * (grad_z * eps * std + g * (std * std - 1.0))  # dz/dlogvar = eps std / 2
        return grad_mu, grad_logvar, None


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear-ReLU layers through ``widths`` (the first is the input width)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class TabularVAE(nn.Module):
    """TVAE's encoder, decoder and learned per-column standard deviations.

    Internally the columns are in ``SpanIndex`` order, [value columns | softmax spans], so the
    loss reads slices rather than gathers; ``forward`` takes and ``generate`` returns rows in the
    transformer's order."""

    cond_index: torch.Tensor  # a buffer: the condition columns' one-hot positions

    def __init__(
        self,
        spans: list[dict[str, Any]],
        dim: int,
        embedding_dim: int,
        compress_dims: list[int],
        decompress_dims: list[int],
        loss_factor: float,
        weight_decay: float,
        conditions: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim, self.loss_factor, self.weight_decay = embedding_dim, loss_factor, weight_decay
        self.spans = SpanIndex(spans, dim)
        # the condition columns' one-hot positions (transformer order) and training frequencies
        conditions = conditions or []
        self.conditions = [str(c["column"]) for c in conditions]
        index = [i for c in conditions for i in range(int(c["start"]), int(c["start"]) + int(c["dim"]))]
        self.register_buffer("cond_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.cond_freqs = [torch.tensor(c["frequencies"], dtype=torch.float64) for c in conditions]
        self.cond_dims = [int(c["dim"]) for c in conditions]
        self.transformer: Any = None  # set by the family's load (asked values -> levels)
        self.encoder = mlp([dim, *compress_dims])
        # mu and log-variance from one layer (TVAE's two heads, fused: one matmul instead of two)
        self.posterior = nn.Linear(([dim, *compress_dims])[-1], 2 * embedding_dim)
        width = embedding_dim + len(index)
        self.decoder = nn.Sequential(
            mlp([width, *decompress_dims]), nn.Linear(([width, *decompress_dims])[-1], dim)
        )
        self.sigma = nn.Parameter(torch.full((self.spans.n_values,), 0.1))  # one per value column

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row (reconstruction loss, KL) of rows ``x`` (B, dim) with posterior noise ``eps``
        (B, embedding_dim): both (B,). ``sigma``: the learned sigma expanded to (B, n_values), for
        per-row gradients of it (``ghost_dp_step``); default the parameter itself."""
        xp = self.spans.permute(x)  # (B, dim): [values | softmax spans]
        mu, logvar = self.posterior(self.encoder(xp)).chunk(2, dim=-1)  # (B, E) each
        z, kl = Reparameterise.apply(mu, logvar, eps)  # z = mu + eps * std; KL to N(0, I) per row
        if self.conditions:  # p(x | z, c): the condition columns' one-hots beside z
            z = torch.cat([z, torch.index_select(x, -1, self.cond_index)], dim=-1)
        out = self.decoder(z)  # (B, dim): value means (before tanh), then softmax logits
        return self.reconstruction(out, xp, self.sigma if sigma is None else sigma), kl

    def reconstruction(self, out: torch.Tensor, xp: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per row, up to a constant (model order): Gaussian NLL of the value
        columns around tanh(out) with the learned sigma, cross-entropy of the softmax spans: (B,)."""
        nv = self.spans.n_values
        gauss = ((xp[:, :nv] - torch.tanh(out[:, :nv])).pow(2) / (2 * sigma.pow(2))).sum(-1)
        return gauss + torch.log(sigma).sum(-1) + self.spans.cross_entropy(out[:, nv:], xp[:, nv:])

    def validation_loss(self, x: torch.Tensor, seed: int) -> float:
        """The negative ELBO per row of ``x`` (reconstruction unweighted), posterior noise from ``seed``."""
        g = step_generator(seed, 0, x.device)
        total = 0.0
        with torch.no_grad():
            for chunk in torch.split(x, GENERATE_CHUNK):
                eps = torch.randn(chunk.shape[0], self.embedding_dim, generator=g, device=x.device)
                rec, kl = self(chunk, eps)
                total += float((rec + kl).sum())
        return total / max(1, x.shape[0])

    def draw_conditions(self, n: int, generator: torch.Generator, fixed: dict[int, int]) -> torch.Tensor:
        """(n, C) one-hots of the condition columns: condition k's level ``fixed[k]`` where asked,
        else drawn at its training frequencies."""
        parts = []
        for k, (freqs, width) in enumerate(zip(self.cond_freqs, self.cond_dims, strict=True)):
            if k in fixed:
                level = torch.full((n,), fixed[k], dtype=torch.long)
            else:
                level = torch.multinomial(freqs, n, replacement=True, generator=generator)
            parts.append(torch.nn.functional.one_hot(level, width).to(torch.float32))
        return torch.cat(parts, dim=1).to(self.sigma.device)

    @torch.no_grad()
    def generate(
        self, n: int, generator: torch.Generator, fixed: dict[int, int] | None = None
    ) -> torch.Tensor:
        """``n`` rows from the prior, values from their Gaussians (clipped to [-1, 1]) and levels
        from their softmax: (n, dim) in the transformer's order. With conditions, each row's
        condition levels are drawn first (``fixed``: condition index -> level, for asked values),
        read by the decoder and carried by the row."""
        device, nv = self.sigma.device, self.spans.n_values
        out = []
        for start in range(0, n, GENERATE_CHUNK):
            size = min(GENERATE_CHUNK, n - start)
            z = torch.randn(size, self.embedding_dim, generator=generator, device=device)
            c = self.draw_conditions(size, generator, fixed or {}) if self.conditions else None
            raw = self.decoder(z if c is None else torch.cat([z, c], dim=1))
            noise = torch.randn(size, nv, generator=generator, device=device)
            values = (torch.tanh(raw[:, :nv]) + noise * self.sigma).clamp(-1.0, 1.0)
            levels = self.spans.sample_onehot(raw[:, nv:], generator)
            rows = self.spans.restore(torch.cat([values, levels], dim=1))
            if c is not None:
                rows.index_copy_(1, self.cond_index, c)
            out.append(rows)
        return torch.cat(out) if out else torch.zeros(0, self.spans.dim, device=device)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """One group with the config's weight decay and Adam's default betas (as TVAE); the loop's
        ``weight_decay`` (meant for transformer matrices) is not used."""
        return [{"params": list(self.parameters()), "weight_decay": self.weight_decay, "betas": (0.9, 0.999)}]


def _core(model: nn.Module) -> TabularVAE:
    """The TabularVAE inside a DDP or compiled wrapper."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


@MODELS.register("tabular_vae")
class TabularVAEFamily(TabularFamily):
    """TVAE (Xu et al. 2019): a VAE over the mode-normalised rows, Gaussian values with learned
    per-column sigma, categorical levels, ``loss_factor`` x reconstruction + KL. Conditions are met
    by rejection when sampling. With ``privacy``, every step is DP-SGD (the encoder sees real rows)."""

    name = "tabular_vae"

    def plan_entries(self, cfg: Any, data: TabularData) -> dict[str, Any]:
        """The network's shape, loss weight and condition columns (their one-hot span and training
        frequencies)."""
        transformer = data.transformer
        conditions = []
        for column in cfg.condition_on:
            span = next((s for s in transformer.spans if s.column == column and s.role == "category"), None)
            if span is None:
                raise ConfigError(
                    f"train.model.condition_on: {column!r} is not a categorical column of this table",
                    hint=f"categorical columns: {', '.join(transformer.discrete_columns) or 'none'}",
                )
            freqs = [float(f) for f in transformer.level_frequencies(column)]
            conditions.append({"column": column, "start": span.start, "dim": span.dim, "frequencies": freqs})
        return {
            "conditions": conditions,
            "embedding_dim": cfg.embedding_dim,
            "compress_dims": list(cfg.compress_dims),
            "decompress_dims": list(cfg.decompress_dims),
            "loss_factor": cfg.loss_factor,
            "weight_decay": cfg.weight_decay,
        }

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        """The VAE of a plan (float32: the model is small, autocast would not pay)."""
        m = plan.model
        return TabularVAE(
            m["spans"],
            int(m["dim"]),
            int(m["embedding_dim"]),
            list(m["compress_dims"]),
            list(m["decompress_dims"]),
            float(m["loss_factor"]),
            float(m["weight_decay"]),
            list(m.get("conditions", [])),
        ).to(device)

    def train_step(
        self,
        model: nn.Module,
        batches: RowBatches,
        opt: torch.optim.Optimizer,
        plan: TrainPlan,
        step: int,
        cfg: Any,
    ) -> dict[str, float]:
        """One Adam step on a batch: the weighted negative ELBO (DP-SGD with privacy), then sigma clamped."""
        vae = _core(model)
        device = vae.sigma.device
        (x,) = batches.batch(step)
        x = x.to(device, non_blocking=True)
        g = step_generator(batches.seed, step, device)
        eps = torch.randn(x.shape[0], vae.embedding_dim, generator=g, device=device)
        privacy = privacy_plan(plan)
        if privacy is None:
            opt.zero_grad(set_to_none=True)
            rec, kl = model(x, eps)
            loss = (vae.loss_factor * rec + kl).mean()
            loss.backward()
            parts = torch.stack([loss.detach(), rec.detach().mean(), kl.detach().mean()])
        else:

            def row_losses(rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
                rec, kl = vae(x, eps, rows["sigma"])
                return vae.loss_factor * rec + kl, torch.stack([rec, kl], dim=1)

            # with several processes each adds its own share of the noise (sigma / sqrt(world), from
            # a generator of its rank) to its clipped sum; averaged, the step carries sigma in all
            world = world_size()
            noise_g = (
                g if world == 1 else step_generator(step_seed(batches.seed, 1 + batches.rank), step, device)
            )
            sigma = privacy.noise_multiplier / math.sqrt(world)
            losses, aux = ghost_dp_step(
                vae, row_losses, {"sigma": vae.sigma}, x.shape[0], privacy.max_grad_norm, sigma, noise_g
            )
            average_gradients(vae)
            parts = torch.cat([losses.mean()[None], aux.mean(0)])
        opt.step()
        with torch.no_grad():
            vae.sigma.clamp_(SIGMA_MIN, SIGMA_MAX)
        loss_v, rec_v, kl_v = parts.tolist()
        return {"loss": loss_v, "reconstruction": rec_v, "kl": kl_v}

    def generate(self, model: nn.Module, n: int, cond: dict[str, Any] | None, seed: int) -> np.ndarray:
        """``n`` rows from the prior. An asked value of a condition column is given to the decoder;
        every other condition is left to rejection."""
        vae = _core(model)
        g = step_generator(seed, 0, vae.sigma.device)
        fixed = {}
        if cond and vae.transformer is not None:
            for k, column in enumerate(vae.conditions):
                if column in cond:
                    fixed[k] = int(vae.transformer.category_index(column, cond[column]))
        was_training = vae.training
        vae.eval()
        try:
            return vae.generate(n, g, fixed).cpu().numpy().astype(np.float32)
        finally:
            vae.train(was_training)
