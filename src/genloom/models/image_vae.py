"""A convolutional conditional VAE for images (Kingma & Welling 2014, "Auto-Encoding Variational
Bayes"; the conditional form of Sohn et al. 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models"), with a calibrated Gaussian decoder (Rybkin et al.
2021, "Simple and Effective VAE Training with Calibrated Decoders": one learned standard deviation
per channel instead of a fixed one, so the balance between reconstruction and KL is learned).

    encoder  q(z | x, y):  [x ; one-hot y as C maps] -> conv 3x3 -> (conv 4x4 / 2) x n -> (mu, log var)
    decoder  p(x | z, y):  [z ; one-hot y] -> linear -> 4 x 4 maps -> (deconv 4x4 x 2) x n -> conv 3x3 -> tanh

with n = log2(size / 4) halvings (8 x 8: one, 64 x 64: four) and the feature maps doubling at each.
The loss is the negative ELBO, per pixel value:

    loss = [ sum_pixels (x - mu)^2 / (2 sigma_c^2) + log sigma_c ] + kl_weight * KL(q(z|x,y) || N(0, I))

Sampling draws z ~ N(0, I) and shows the decoder's mean for the asked label (the common practice:
the per-pixel noise of the Gaussian would only add grain).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.registry import MODELS
from genloom.models.base import TrainPlan
from genloom.models.image_data import ImageBatches, ImageFamily, core, step_generator

LOG_SIGMA_MIN = math.log(1e-3)  # the calibrated sigma's floor (a pixel level is 2/255 wide)
GENERATE_CHUNK = 1024  # images decoded at once when sampling (bounded memory)


def halvings(size: int) -> int:
    """How many stride-2 layers take ``size`` down to 4 x 4."""
    return int(round(math.log2(size // 4)))


class Encoder(nn.Module):
    """q(z | x, y): (B, C + K, S, S) -> mu, log var (B, Z) each."""

    def __init__(self, channels: int, n_labels: int, size: int, width: int, latent_dim: int) -> None:
        super().__init__()
        n = halvings(size)
        layers: list[nn.Module] = [nn.Conv2d(channels + n_labels, width, 3, 1, 1), nn.SiLU()]
        c = width
        for _ in range(n):  # S -> S/2 ... -> 4, feature maps doubling
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.SiLU()]
            c *= 2
        self.convs = nn.Sequential(*layers)
        self.posterior = nn.Linear(c * 4 * 4, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)  # (B, c * 16)
        mu, logvar = self.posterior(h).chunk(2, dim=-1)  # (B, Z) each
        return mu, logvar


class Decoder(nn.Module):
    """p(x | z, y): (B, Z + K) -> the mean image (B, C, S, S) in [-1, 1]."""

    def __init__(self, channels: int, n_labels: int, size: int, width: int, latent_dim: int) -> None:
        super().__init__()
        n = halvings(size)
        self.c0 = width * 2**n
        self.project = nn.Linear(latent_dim + n_labels, self.c0 * 4 * 4)
        layers: list[nn.Module] = []
        c = self.c0
        for _ in range(n):  # 4 -> 8 ... -> S, feature maps halving
            layers += [nn.SiLU(), nn.ConvTranspose2d(c, c // 2, 4, 2, 1)]
            c //= 2
        layers += [nn.SiLU(), nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, zy: torch.Tensor) -> torch.Tensor:
        h = self.project(zy).view(-1, self.c0, 4, 4)  # (B, c0, 4, 4)
        return self.deconvs(h)  # (B, C, S, S)


class ImageVAE(nn.Module):
    """Encoder, decoder and the learned per-channel log sigma of the Gaussian decoder."""

    def __init__(
        self, channels: int, n_labels: int, size: int, width: int, latent_dim: int, kl_weight: float
    ) -> None:
        super().__init__()
        self.channels, self.n_labels, self.size = channels, n_labels, size
        self.latent_dim, self.kl_weight = latent_dim, kl_weight
        self.encoder = Encoder(channels, n_labels, size, width, latent_dim)
        self.decoder = Decoder(channels, n_labels, size, width, latent_dim)
        self.log_sigma = nn.Parameter(torch.zeros(channels))  # calibrated decoder: sigma per channel

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) label indices -> (B, K) one-hot (K = 0: unconditional)."""
        return F.one_hot(y, self.n_labels).float() if self.n_labels else y.new_zeros(len(y), 0).float()

    def losses(
        self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image (reconstruction NLL, KL), both (B,) in nats per pixel value, for images x
        (B, C, S, S), labels y (B,) and posterior noise eps (B, Z)."""
        B, C, S, _ = x.shape
        yh = self.onehot(y)  # (B, K)
        maps = yh[:, :, None, None].expand(B, self.n_labels, S, S)  # the label as K constant maps
        mu, logvar = self.encoder(torch.cat([x, maps], dim=1))
        z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation trick
        mean = self.decoder(torch.cat([z, yh], dim=1))  # (B, C, S, S)
        log_sigma = self.log_sigma.clamp_min(LOG_SIGMA_MIN)[None, :, None, None]
        nll = (x - mean).pow(2) / (2 * torch.exp(2 * log_sigma)) + log_sigma + 0.5 * math.log(2 * math.pi)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        pixels = C * S * S
        return nll.flatten(1).sum(-1) / pixels, kl / pixels

    @torch.no_grad()
    def generate(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The decoder's mean image for z ~ N(0, I) under labels y (n,): (n, C, S, S)."""
        device = self.log_sigma.device
        out = []
        for chunk in torch.split(y, GENERATE_CHUNK):
            z = torch.randn(len(chunk), self.latent_dim, generator=generator, device=device)
            out.append(self.decoder(torch.cat([z, self.onehot(chunk.to(device))], dim=1)))
        return torch.cat(out) if out else torch.zeros(0, self.channels, self.size, self.size)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """One group, Adam's default betas, no weight decay."""
        return [{"params": list(self.parameters()), "weight_decay": 0.0, "betas": (0.9, 0.999)}]


@MODELS.register("image_vae")
class ImageVAEFamily(ImageFamily):
    """A convolutional conditional VAE (the label as input maps of the encoder and a one-hot
    input of the decoder) with a calibrated Gaussian decoder; ``sample`` shows decoder means."""

    name = "image_vae"
    custom_step = True

    def plan_entries(self, cfg: Any, data: Any) -> dict[str, Any]:
        return {"width": cfg.width, "latent_dim": cfg.latent_dim, "kl_weight": cfg.kl_weight}

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        """The VAE of a plan (float32: the model is small)."""
        m = plan.model
        return ImageVAE(
            int(m["channels"]), int(m["n_labels"]), int(m["size"]), int(m["width"]),
            int(m["latent_dim"]), float(m["kl_weight"]),
        ).to(device)  # fmt: skip

    def train_step(
        self,
        model: nn.Module,
        batches: ImageBatches,  # type: ignore[override]
        opt: torch.optim.Optimizer,
        plan: TrainPlan,
        step: int,
        cfg: Any,
    ) -> dict[str, float]:
        """One Adam step on the weighted negative ELBO of a batch."""
        vae: ImageVAE = core(model)  # type: ignore[assignment]
        device = vae.log_sigma.device
        x, y = (t.to(device, non_blocking=True) for t in batches.batch(step))
        eps = torch.randn(
            len(x), vae.latent_dim, generator=step_generator(batches.seed, step, device), device=device
        )
        opt.zero_grad(set_to_none=True)
        rec, kl = vae.losses(x, y, eps)
        loss = (rec + vae.kl_weight * kl).mean()
        loss.backward()
        opt.step()
        loss_v, rec_v, kl_v = torch.stack([loss.detach(), rec.detach().mean(), kl.detach().mean()]).tolist()
        return {"loss": loss_v, "reconstruction": rec_v, "kl": kl_v}

    def validation_loss(
        self, model: nn.Module, x: np.ndarray, labels: np.ndarray, device: torch.device
    ) -> float:
        """The negative ELBO per pixel value (nats) of the images, posterior noise from a fixed seed."""
        vae: ImageVAE = core(model)  # type: ignore[assignment]
        g = step_generator(0, 0, device)
        total = 0.0
        for start in range(0, len(x), GENERATE_CHUNK):
            xb = torch.from_numpy(x[start : start + GENERATE_CHUNK]).to(device)
            yb = torch.from_numpy(labels[start : start + GENERATE_CHUNK]).to(device)
            eps = torch.randn(len(xb), vae.latent_dim, generator=g, device=device)
            rec, kl = vae.losses(xb, yb, eps)
            total += float((rec + kl).sum())
        return total / max(1, len(x))

    def generate(self, model: nn.Module, labels: np.ndarray, seed: int) -> np.ndarray:
        vae: ImageVAE = core(model)  # type: ignore[assignment]
        was_training = vae.training
        vae.eval()
        try:
            g = step_generator(seed, 0, vae.log_sigma.device)
            return vae.generate(torch.from_numpy(np.asarray(labels, np.int64)), g).cpu().numpy()
        finally:
            vae.train(was_training)
