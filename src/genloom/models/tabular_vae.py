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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

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

    def __init__(
        self,
        spans: list[dict[str, Any]],
        dim: int,
        embedding_dim: int,
        compress_dims: list[int],
        decompress_dims: list[int],
        loss_factor: float,
        weight_decay: float,
    ) -> None:
        super().__init__()
        self.embedding_dim, self.loss_factor, self.weight_decay = embedding_dim, loss_factor, weight_decay
        self.spans = SpanIndex(spans, dim)
        self.encoder = mlp([dim, *compress_dims])
        # mu and log-variance from one layer (TVAE's two heads, fused: one matmul instead of two)
        self.posterior = nn.Linear(([dim, *compress_dims])[-1], 2 * embedding_dim)
        self.decoder = nn.Sequential(
            mlp([embedding_dim, *decompress_dims]), nn.Linear(([embedding_dim, *decompress_dims])[-1], dim)
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

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` rows from the prior, values from their Gaussians (clipped to [-1, 1]) and levels
        from their softmax: (n, dim) in the transformer's order."""
        device, nv = self.sigma.device, self.spans.n_values
        out = []
        for start in range(0, n, GENERATE_CHUNK):
            size = min(GENERATE_CHUNK, n - start)
            raw = self.decoder(torch.randn(size, self.embedding_dim, generator=generator, device=device))
            noise = torch.randn(size, nv, generator=generator, device=device)
            values = (torch.tanh(raw[:, :nv]) + noise * self.sigma).clamp(-1.0, 1.0)
            levels = self.spans.sample_onehot(raw[:, nv:], generator)
            out.append(self.spans.restore(torch.cat([values, levels], dim=1)))
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
        """The network's shape and loss weight."""
        return {
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
        """``n`` rows from the prior; conditions are left to rejection (a VAE has no conditional input)."""
        vae = _core(model)
        g = step_generator(seed, 0, vae.sigma.device)
        was_training = vae.training
        vae.eval()
        try:
            return vae.generate(n, g).cpu().numpy().astype(np.float32)
        finally:
            vae.train(was_training)
