"""TimeGAN: a GAN for multivariate series in a learned latent space (Yoon, Jarrett and van der
Schaar, "Time-series Generative Adversarial Networks", NeurIPS 2019), conditional on static
attributes, with masks for gaps and variable lengths.

Five recurrent networks (each a stacked GRU and a per-step linear head, section 4):

- embedder   e: (x_{1:t}, c) -> h_t             the latent code of the real series (sigmoid)
- recovery   r: (h_{1:t}, c) -> x~_t            back to the data space (sigmoid: data in [0, 1])
- generator  g: (z_{1:t}, c) -> e^_t            noise z_t ~ U(0, 1) to latent codes
- supervisor s: (h_{1:t}, c) -> h^_{t+1}        the next latent step, from the ones so far
- discriminator d: (h_{1:t}, c) -> y_t          real or synthetic, per step (logits)

Losses (section 4, equations 7-9, and the authors' code):

- reconstruction  L_R = E || m * (x - r(e(x))) ||^2                       (observed values only)
- supervised      L_S = E || h_{t+1} - s(h)_t ||^2                      (teacher-forced next step)
- unsupervised    L_U = BCE(d(h), 1) + BCE(d(s(e^)), 0) + gamma BCE(d(e^), 0)
- moments         L_V = | std(x^) - std(x) | + | mean(x^) - mean(x) |   (per channel, x^ = r(s(e^)))

Training runs the paper's three phases over the steps of the one loop: embedding (e and r on
10 sqrt(L_R)) for ``embedding_fraction`` of the steps, supervised (s on L_S) for
``supervised_fraction``, then joint steps: two generator updates (g and s on the adversarial
loss + ``supervised_weight`` sqrt(L_S) + ``moment_weight`` L_V), each followed by an embedder
update (e and r on 10 sqrt(L_R) + 0.1 L_S), and a discriminator update while its loss is above
``discriminator_threshold``. The condition c (one-hot) is concatenated to every network's input
at every step. Steps past a window's length are left out of every loss; a gap counts in the
embedding's input (filled) but not in the reconstruction loss.

Sampling: z ~ U(0, 1) -> g -> s -> r, per step, under the asked condition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.registry import MODELS
from genloom.models.base import TrainPlan
from genloom.models.series import (
    RecurrentNet,
    SeriesBatches,
    SeriesData,
    SeriesFamily,
    core,
    step_generator,
    step_mask,
    with_condition,
)


def masked_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` weighted by ``w`` (broadcast to ``x``'s shape)."""
    w = w.expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1.0)


def masked_bce(logits: torch.Tensor, target: float, w: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of per-step logits (B, T, 1) against ``target``, over steps ``w``."""
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none")
    return masked_mean(loss, w)


class TimeGAN(nn.Module):
    """TimeGAN's five networks (see the module docstring)."""

    def __init__(self, channels: int, cond_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.channels, self.cond_dim, self.hidden = channels, cond_dim, hidden
        self.noise_dim = channels  # the paper's z has the data's dimension
        self.embedder = RecurrentNet(channels + cond_dim, hidden, hidden, layers)
        self.recovery = RecurrentNet(hidden + cond_dim, hidden, channels, layers)
        self.generator = RecurrentNet(self.noise_dim + cond_dim, hidden, hidden, layers)
        self.supervisor = RecurrentNet(hidden + cond_dim, hidden, hidden, max(1, layers - 1))
        self.discriminator = RecurrentNet(hidden + cond_dim, hidden, 1, layers, activation=None)

    # each network sees the condition at every step
    def embed(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.embedder(with_condition(x, c))  # (B, T, H)

    def recover(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.recovery(with_condition(h, c))  # (B, T, C)

    def generate_latent(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.generator(with_condition(z, c))  # (B, T, H)

    def supervise(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.supervisor(with_condition(h, c))  # (B, T, H): the prediction of h_{t+1} at t

    def discriminate(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.discriminator(with_condition(h, c))  # (B, T, 1) logits

    # the losses
    def reconstruction_loss(
        self, x: torch.Tensor, m: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_R over observed values, the embeddings h (B, T, H))."""
        h = self.embed(x, c)
        return masked_mean((self.recover(h, c) - x).pow(2), m), h

    def supervised_loss(self, h: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """L_S: the supervisor's next-step error on latent codes h, over the steps ``s`` (B, T, 1)."""
        return masked_mean((h[:, 1:] - self.supervise(h, c)[:, :-1]).pow(2), s[:, 1:])

    def fake(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(e^ = g(z), h^ = s(e^), x^ = r(h^)) of noise z (B, T, Z)."""
        e_hat = self.generate_latent(z, c)
        h_hat = self.supervise(e_hat, c)
        return e_hat, h_hat, self.recover(h_hat, c)

    def noise(self, b: int, t: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """z ~ U(0, 1), (B, T, Z)."""
        return torch.rand(b, t, self.noise_dim, generator=generator, device=device)

    def validation_loss(
        self, x: torch.Tensor, m: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor, seed: int = 0
    ) -> float:
        """L_R + L_S of the windows plus the moment gap L_V of as many synthetic ones (fixed noise):
        the autoencoder, the supervisor and the generator's first two moments in one figure."""
        s = step_mask(lengths, x.shape[1])
        rec, h = self.reconstruction_loss(x, m, c)
        sup = self.supervised_loss(h, c, s)
        z = self.noise(len(x), x.shape[1], step_generator(seed, 0, x.device), x.device)
        _, _, x_hat = self.fake(z, c)
        return float((rec + sup + moment_loss(x, x_hat, m * s)).detach())

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """One group, Adam's default betas (the authors' code), no weight decay."""
        return [{"params": list(self.parameters()), "weight_decay": 0.0, "betas": (0.9, 0.999)}]


def moment_loss(x: torch.Tensor, x_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L_V: per channel, |std(x^) - std(x)| + |mean(x^) - mean(x)| over the batch's steps ``w``."""
    w = w.expand_as(x)
    n = w.sum((0, 1)).clamp_min(1.0)  # (C,)
    mean_r, mean_f = (x * w).sum((0, 1)) / n, (x_hat * w).sum((0, 1)) / n
    var_r = ((x - mean_r).pow(2) * w).sum((0, 1)) / n
    var_f = ((x_hat - mean_f).pow(2) * w).sum((0, 1)) / n
    std_gap = (torch.sqrt(var_f + 1e-6) - torch.sqrt(var_r + 1e-6)).abs().mean()
    return std_gap + (mean_f - mean_r).abs().mean()


def update(
    opt: torch.optim.Optimizer, loss: torch.Tensor, nets: list[nn.Module], retain: bool = False
) -> None:
    """One optimizer step of ``loss`` on the parameters of ``nets`` only (the others get no
    gradient, so Adam leaves them and their moments untouched)."""
    params = [p for net in nets for p in net.parameters()]
    opt.zero_grad(set_to_none=True)
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


@MODELS.register("series_gan")
class SeriesGANFamily(SeriesFamily):
    """TimeGAN (Yoon et al. 2019): embedder/recovery autoencoder, generator and discriminator in its
    latent space, a supervisor's next-step loss; three training phases over the loop's steps;
    conditional on static attributes (one-hot at every step), masked for gaps and lengths."""

    name = "series_gan"

    def plan_entries(self, cfg: Any, data: SeriesData) -> dict[str, Any]:
        """Phase shares and loss weights."""
        return {
            "embedding_fraction": cfg.embedding_fraction,
            "supervised_fraction": cfg.supervised_fraction,
            "gamma": cfg.gamma,
            "supervised_weight": cfg.supervised_weight,
            "moment_weight": cfg.moment_weight,
            "discriminator_threshold": cfg.discriminator_threshold,
        }

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        """The five networks of a plan (float32)."""
        m = plan.model
        return TimeGAN(int(m["channels"]), int(m["cond_dim"]), int(m["hidden_dim"]), int(m["num_layers"])).to(
            device
        )

    @staticmethod
    def phase(plan: TrainPlan, step: int) -> str:
        """``embedding``, ``supervised`` or ``joint`` for ``step`` of the plan's schedule (joint while
        the schedule is still being measured for a time budget)."""
        if plan.max_steps is None:
            return "joint"
        n1 = int(plan.model["embedding_fraction"] * plan.max_steps)
        n2 = int(plan.model["supervised_fraction"] * plan.max_steps)
        return "embedding" if step < n1 else "supervised" if step < n1 + n2 else "joint"

    def train_step(
        self,
        model: nn.Module,
        batches: SeriesBatches,  # type: ignore[override]
        opt: torch.optim.Optimizer,
        plan: TrainPlan,
        step: int,
        cfg: Any,
    ) -> dict[str, float]:
        """One step of the phase ``step`` falls in (see the module docstring)."""
        gan: TimeGAN = core(model)  # type: ignore[assignment]
        m_ = plan.model
        device = next(gan.parameters()).device
        x, m, c, lengths = (t.to(device) for t in batches.batch(step))
        s = step_mask(lengths, x.shape[1])  # (B, T, 1)
        m = m * s
        phase = self.phase(plan, step)
        g = step_generator(batches.seed, step, device)
        if phase == "embedding":
            rec, _ = gan.reconstruction_loss(x, m, c)
            update(opt, 10 * torch.sqrt(rec), [gan.embedder, gan.recovery])
            value = float(rec.detach())
            return {"loss": value, "reconstruction": value}
        if phase == "supervised":
            with torch.no_grad():
                h = gan.embed(x, c)
            sup = gan.supervised_loss(h, c, s)
            update(opt, sup, [gan.supervisor])
            value = float(sup.detach())
            return {"loss": value, "supervised": value}

        gamma, w_s, w_v = float(m_["gamma"]), float(m_["supervised_weight"]), float(m_["moment_weight"])
        for _ in range(2):  # the paper's two generator updates per discriminator update
            z = gan.noise(len(x), x.shape[1], g, device)
            e_hat, h_hat, x_hat = gan.fake(z, c)
            h = gan.embed(x, c)
            adversarial = masked_bce(gan.discriminate(h_hat, c), 1.0, s) + gamma * masked_bce(
                gan.discriminate(e_hat, c), 1.0, s
            )
            sup = gan.supervised_loss(h, c, s)
            moments = moment_loss(x, x_hat, m)
            g_loss = adversarial + w_s * torch.sqrt(sup + 1e-8) + w_v * moments
            update(opt, g_loss, [gan.generator, gan.supervisor])
            # the embedder follows, helped by the supervised loss (the authors' E_loss)
            rec, h = gan.reconstruction_loss(x, m, c)
            e_loss = 10 * torch.sqrt(rec + 1e-8) + 0.1 * gan.supervised_loss(h, c, s)
            update(opt, e_loss, [gan.embedder, gan.recovery])
        with torch.no_grad():
            h = gan.embed(x, c)
        z = gan.noise(len(x), x.shape[1], g, device)
        with torch.no_grad():
            e_hat, h_hat, _ = gan.fake(z, c)
        d_loss = (
            masked_bce(gan.discriminate(h, c), 1.0, s)
            + masked_bce(gan.discriminate(h_hat, c), 0.0, s)
            + gamma * masked_bce(gan.discriminate(e_hat, c), 0.0, s)
        )
        if float(d_loss.detach()) > float(m_["discriminator_threshold"]):
            update(opt, d_loss, [gan.discriminator])
        with torch.no_grad():
            parts = torch.stack([g_loss, d_loss, rec, sup, moments]).detach().tolist()
        return {
            "loss": parts[0] + parts[1],
            "generator": parts[0],
            "discriminator": parts[1],
            "reconstruction": parts[2],
            "supervised": parts[3],
            "moments": parts[4],
        }

    def generate(self, model: nn.Module, cond: torch.Tensor, lengths: torch.Tensor, seed: int) -> np.ndarray:
        """z ~ U(0, 1) -> generator -> supervisor -> recovery, as long as the longest asked length."""
        gan: TimeGAN = core(model)  # type: ignore[assignment]
        t = int(lengths.max()) if len(lengths) else 0
        was_training = gan.training
        gan.eval()
        try:
            with torch.no_grad():
                z = gan.noise(len(cond), t, step_generator(seed, 0), torch.device("cpu"))
                _, _, x_hat = gan.fake(z, cond)
        finally:
            gan.train(was_training)
        return (x_hat * step_mask(lengths, t)).numpy().astype(np.float32)
