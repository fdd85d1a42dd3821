"""A conditional recurrent sequence VAE for multivariate windows: the fast, stable baseline of the
series families (a variational autoencoder, Kingma and Welling 2014, over whole windows as in
TimeVAE, Desai et al. 2021, with recurrent layers and an autoregressive Gaussian decoder).

A window x (T, C) in [0, 1] with its observed-value mask m and its condition c (one-hot of the
static attributes) is encoded by a GRU over [x * m, m, c] into a Gaussian posterior q(z | x, c)
over ``latent_dim`` latents (read at the window's last step). The decoder is a GRU started from
tanh(W [z, c]); at step t it reads [z, c, x_{t-1}] (teacher forcing during training) and gives
the mean of a Gaussian over x_t, with a learned standard deviation per channel. The loss is the
negative ELBO per window, the reconstruction counted on observed values only:

    loss = sum_{t, ch: m=1} -log N(x_t | mu_t, sigma^2) + kl_weight * KL(q(z | x, c) || N(0, I))

Sampling draws z ~ N(0, I) and unrolls the decoder on its own outputs, each step drawn from its
Gaussian (``step_noise``) or its mean, clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genloom.core.registry import MODELS
from genloom.models.base import TrainPlan
from genloom.models.series import SeriesBatches, SeriesData, SeriesFamily, core, step_generator, step_mask

LOG_SIGMA_MIN, LOG_SIGMA_MAX = math.log(0.005), math.log(0.5)


class SeriesVAE(nn.Module):
    """Encoder GRU -> q(z | x, c); decoder GRU over [z, c, x_{t-1}] -> N(mu_t, sigma^2)."""

    def __init__(
        self, channels: int, cond_dim: int, hidden: int, layers: int, latent: int, kl_weight: float,
        step_noise: bool, sigma_init: list[float] | None = None, temperature: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.channels, self.latent, self.layers, self.hidden = channels, latent, layers, hidden
        self.kl_weight, self.step_noise, self.temperature = kl_weight, step_noise, temperature
        self.encoder = nn.GRU(2 * channels + cond_dim, hidden, num_layers=layers, batch_first=True)
        self.posterior = nn.Linear(hidden, 2 * latent)  # mu and log-variance
        self.init = nn.Linear(latent + cond_dim, layers * hidden)  # the decoder's first hidden state
        # the decoder reads x_{t-1} and a flag that is 1 at the first step (where there is no x_{t-1})
        self.decoder = nn.GRU(latent + cond_dim + channels + 1, hidden, num_layers=layers, batch_first=True)
        # per step and channel: the Gaussian's mean and an offset of its log standard deviation from
        # the channel's (heteroscedastic: a calm hour and a rainy one do not have the same noise)
        self.head = nn.Linear(hidden, 2 * channels)
        with torch.no_grad():
            self.head.weight[channels:].mul_(0.1)
            self.head.bias[channels:].zero_()
        # the step noise starts at the data's own one-step change (a random walk of 0.1 steps would
        # take Adam thousands of steps to calm down): sigma_init from the plan, per channel
        init = torch.tensor(sigma_init if sigma_init else [0.1] * channels, dtype=torch.float32)
        self.log_sigma = nn.Parameter(init.clamp(math.exp(LOG_SIGMA_MIN), math.exp(LOG_SIGMA_MAX)).log())

    def encode(
        self, x: torch.Tensor, m: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, latent), of windows x (B, T, C) with masks m and conditions c (B, K)."""
        t = x.shape[1]
        inp = torch.cat([x * m, m, c[:, None, :].expand(-1, t, -1)], dim=-1)  # (B, T, 2C + K)
        out, _ = self.encoder(inp)  # (B, T, H)
        last = out[torch.arange(len(x)), (lengths - 1).clamp_min(0)]  # (B, H) at each window's end
        mu, logvar = self.posterior(last).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def start(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The decoder's first hidden state (layers, B, H)."""
        h = torch.tanh(self.init(torch.cat([z, c], dim=-1)))  # (B, layers * H)
        return h.view(len(z), self.layers, self.hidden).transpose(0, 1).contiguous()

    def gaussian(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder states (B, T, H) -> the steps' means (B, T, C) in [0, 1] and log standard
        deviations (B, T, C), kept within [log 0.005, log 0.5]."""
        mean, offset = self.head(out).chunk(2, dim=-1)
        return torch.sigmoid(mean), (self.log_sigma + offset).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def decode_teacher(
        self, z: torch.Tensor, c: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, log standard deviations), each (B, T, C), of every step given the true previous
        steps (teacher forcing)."""
        b, t, _ = x.shape
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # x_{t-1}, zeros at t = 0
        first = torch.zeros(b, t, 1, device=x.device)
        first[:, 0] = 1.0
        zc = torch.cat([z, c], dim=-1)[:, None, :].expand(-1, t, -1)
        out, _ = self.decoder(torch.cat([zc, prev, first], dim=-1), self.start(z, c))  # (B, T, H)
        return self.gaussian(out)

    def losses(
        self, x: torch.Tensor, m: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window (reconstruction NLL on observed values, KL): both (B,)."""
        mu, logvar = self.encode(x, m, c, lengths)
        z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation trick
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        mean, log_sigma = self.decode_teacher(z, c, x)  # (B, T, C) each
        nll = 0.5 * ((x - mean) / log_sigma.exp()).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)
        return (nll * m).sum((1, 2)), kl

    def validation_loss(
        self, x: torch.Tensor, m: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor, seed: int = 0
    ) -> float:
        """The negative ELBO (KL unweighted) per observed value of the windows, posterior noise from ``seed``."""
        g = step_generator(seed, 0, x.device)
        eps = torch.randn(len(x), self.latent, generator=g, device=x.device)
        rec, kl = self.losses(x, m, c, lengths, eps)
        return float(((rec + kl).sum() / m.sum().clamp_min(1.0)).detach())

    @torch.no_grad()
    def generate(self, c: torch.Tensor, t: int, generator: torch.Generator) -> torch.Tensor:
        """Windows (n, t, C) in [0, 1] from the prior, the decoder unrolled on its own draws."""
        n, device = len(c), c.device
        z = torch.randn(n, self.latent, generator=generator, device=device)
        h = self.start(z, c)
        prev = torch.zeros(n, 1, self.channels, device=device)
        zc = torch.cat([z, c], dim=-1)[:, None, :]
        steps = []
        for k in range(t):
            first = torch.full((n, 1, 1), 1.0 if k == 0 else 0.0, device=device)
            out, h = self.decoder(torch.cat([zc, prev, first], dim=-1), h)
            mean, log_sigma = self.gaussian(out)  # (n, 1, C) each
            if self.step_noise and self.temperature > 0:
                noise = torch.randn(mean.shape, generator=generator, device=device)
                mean = mean + self.temperature * log_sigma.exp() * noise
            prev = mean.clamp(0.0, 1.0)
            steps.append(prev)
        return torch.cat(steps, dim=1) if steps else torch.zeros(n, 0, self.channels, device=device)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The networks, Adam's default betas, no weight decay; the log standard deviations with 10x
        the learning rate (one number per channel, moving in log space)."""
        nets = [p for n, p in self.named_parameters() if n != "log_sigma"]
        return [
            {"params": nets, "weight_decay": 0.0, "betas": (0.9, 0.999)},
            {"params": [self.log_sigma], "weight_decay": 0.0, "betas": (0.9, 0.999), "lr_scale": 10.0},
        ]


@MODELS.register("series_vae")
class SeriesVAEFamily(SeriesFamily):
    """A conditional recurrent VAE over series windows: GRU encoder, autoregressive GRU decoder with
    Gaussian steps, masked reconstruction + ``kl_weight`` x KL. Conditions enter the encoder, the
    decoder's first state and every decoder step."""

    name = "series_vae"

    def plan_entries(self, cfg: Any, data: SeriesData) -> dict[str, Any]:
        """Latent size, KL weight, sampling noise, and the step noise's start: per channel, the std
        of the observed one-step changes of (up to 4,096) training windows."""
        x = np.asarray(data.train["values"][:4096], np.float64)
        m = np.asarray(data.train["mask"][:4096], bool)
        both = m[:, 1:] & m[:, :-1]
        diff = x[:, 1:] - x[:, :-1]
        sigma = [
            float(diff[..., c][both[..., c]].std()) if both[..., c].any() else 0.1 for c in range(x.shape[-1])
        ]
        return {
            "latent_dim": cfg.latent_dim,
            "kl_weight": cfg.kl_weight,
            "step_noise": cfg.step_noise,
            "temperature": cfg.temperature,
            "sigma_init": sigma,
        }

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        """The VAE of a plan (float32: the model is small)."""
        m = plan.model
        return SeriesVAE(
            int(m["channels"]),
            int(m["cond_dim"]),
            int(m["hidden_dim"]),
            int(m["num_layers"]),
            int(m["latent_dim"]),
            float(m["kl_weight"]),
            bool(m["step_noise"]),
            m.get("sigma_init"),
            float(m.get("temperature", 1.0)),
        ).to(device)

    def train_step(
        self,
        model: nn.Module,
        batches: SeriesBatches,  # type: ignore[override]
        opt: torch.optim.Optimizer,
        plan: TrainPlan,
        step: int,
        cfg: Any,
    ) -> dict[str, float]:
        """One Adam step on a batch's negative ELBO per observed value."""
        vae: SeriesVAE = core(model)  # type: ignore[assignment]
        device = vae.log_sigma.device
        x, m, c, lengths = (t.to(device) for t in batches.batch(step))
        g = step_generator(batches.seed, step, device)
        eps = torch.randn(len(x), vae.latent, generator=g, device=device)
        opt.zero_grad(set_to_none=True)
        rec, kl = vae.losses(x, m, c, lengths, eps)
        observed = m.sum().clamp_min(1.0)
        loss = (rec.sum() + vae.kl_weight * kl.sum()) / observed
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            parts = torch.stack([loss, rec.sum() / observed, kl.mean()]).detach().tolist()
        return {"loss": parts[0], "reconstruction": parts[1], "kl": parts[2]}

    def generate(self, model: nn.Module, cond: torch.Tensor, lengths: torch.Tensor, seed: int) -> np.ndarray:
        """Windows from the prior under ``cond``, as long as the longest asked length."""
        vae: SeriesVAE = core(model)  # type: ignore[assignment]
        t = int(lengths.max()) if len(lengths) else 0
        out = vae.eval().generate(cond, t, step_generator(seed, 0))
        x = out.cpu().numpy().astype(np.float32)
        x = x * step_mask(lengths, t).numpy()
        return x
