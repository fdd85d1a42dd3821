"""DCGAN for images (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks"), class-conditional.

    generator      G(z, y):  [z ; embed(y)] -> linear -> 4 x 4 maps -> (deconv 4x4 x 2, BN, ReLU) x n
                             -> conv 3x3 -> tanh                                    (B, C, S, S)
    discriminator  D(x, y):  x -> conv 3x3, LeakyReLU -> (conv 4x4 / 2, BN, LeakyReLU) x n -> phi(x)
                             score = w . phi(x) + <embed_D(y), phi(x)>      (projection)
                             or x joined by K one-hot label maps at the input (concat)

with n = log2(size / 4) (8 x 8: one, 64 x 64: four), the maps halving in G and doubling in D at
each step as in DCGAN (BatchNorm in both but at D's input and G's output, ReLU in G, LeakyReLU
0.2 in D, Adam at 2e-4 with beta1 0.5, weights from N(0, 0.02)). The projection discriminator is
Miyato & Koyama 2018 ("cGANs with Projection Discriminator"): the label enters as an inner product
with the features, which is what the log-likelihood ratio of a conditional model looks like; the
concatenation is the original cGAN of Mirza & Osindero 2014.

Training alternates one discriminator step and one generator step on the non-saturating loss:

    L_D = -log D(x, y) - log(1 - D(G(z, y), y))        L_G = -log D(G(z, y), y)

with fakes drawn for the labels of the real batch. The loop tracks (and early-stops on) the
Fréchet distance between samples and the validation images in a fixed feature map
(``image_data.pooled_features``): a GAN has no likelihood to validate.
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
from genloom.models.image_data import (
    ImageBatches,
    ImageFamily,
    core,
    frechet_distance,
    pooled_features,
    step_generator,
)

GENERATE_CHUNK = 1024  # images generated at once when sampling (bounded memory)
LABEL_EMBEDDING = 50  # the generator's label embedding width (as in conditional DCGAN examples)


def halvings(size: int) -> int:
    """How many stride-2 layers take ``size`` down to 4 x 4."""
    return int(round(math.log2(size // 4)))


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions and linears from N(0, 0.02), BatchNorm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)


class Generator(nn.Module):
    """G(z, y): noise (B, Z) and labels (B,) -> images (B, C, S, S) in [-1, 1]."""

    def __init__(self, channels: int, n_labels: int, size: int, width: int, latent_dim: int) -> None:
        super().__init__()
        n = halvings(size)
        self.c0 = width * 2**n
        e = LABEL_EMBEDDING if n_labels else 0
        self.embed = nn.Embedding(n_labels, e) if n_labels else None
        self.project = nn.Sequential(nn.Linear(latent_dim + e, self.c0 * 4 * 4, bias=False))
        self.bn0 = nn.BatchNorm2d(self.c0)
        layers: list[nn.Module] = []
        c = self.c0
        for _ in range(n):  # 4 -> 8 ... -> S, maps halving
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        zy = torch.cat([z, self.embed(y)], dim=1) if self.embed is not None else z  # (B, Z + E)
        h = F.relu(self.bn0(self.project(zy).view(-1, self.c0, 4, 4)))  # (B, c0, 4, 4)
        return self.deconvs(h)  # (B, C, S, S)


class Discriminator(nn.Module):
    """D(x, y): images (B, C, S, S) and labels (B,) -> logits (B,)."""

    def __init__(self, channels: int, n_labels: int, size: int, width: int, conditioning: str) -> None:
        super().__init__()
        n = halvings(size)
        self.n_labels, self.conditioning = n_labels, conditioning
        extra = n_labels if conditioning == "concat" else 0
        layers: list[nn.Module] = [nn.Conv2d(channels + extra, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(n):  # S -> S/2 ... -> 4, maps doubling
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        self.convs = nn.Sequential(*layers)
        features = c * 4 * 4
        self.score = nn.Linear(features, 1)
        self.project = nn.Embedding(n_labels, features) if n_labels and conditioning == "projection" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "concat" and self.n_labels:
            B, _, S, _ = x.shape
            maps = F.one_hot(y, self.n_labels).float()[:, :, None, None].expand(B, self.n_labels, S, S)
            x = torch.cat([x, maps], dim=1)  # the label as K constant input maps
        phi = self.convs(x).flatten(1)  # (B, F)
        out = self.score(phi).squeeze(1)  # (B,)
        if self.project is not None:
            out = out + (self.project(y) * phi).sum(1)  # the projection term <embed(y), phi(x)>
        return out


class ImageGAN(nn.Module):
    """The generator and the discriminator of one image layout."""

    def __init__(
        self,
        channels: int,
        n_labels: int,
        size: int,
        width: int,
        latent_dim: int,
        conditioning: str,
        beta1: float = 0.5,
    ) -> None:
        super().__init__()
        self.channels, self.n_labels, self.size, self.latent_dim = channels, n_labels, size, latent_dim
        self.beta1 = beta1
        self.generator = Generator(channels, n_labels, size, width, latent_dim)
        self.discriminator = Discriminator(channels, n_labels, size, width, conditioning)
        dcgan_init(self)

    @torch.no_grad()
    def generate(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images for labels y (n,), noise from ``generator``: (n, C, S, S) in [-1, 1]."""
        device = self.generator.bn0.weight.device
        out = []
        for chunk in torch.split(y, GENERATE_CHUNK):
            z = torch.randn(len(chunk), self.latent_dim, generator=generator, device=device)
            out.append(self.generator(z, chunk.to(device)))
        return torch.cat(out) if out else torch.zeros(0, self.channels, self.size, self.size)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Generator and discriminator, Adam betas (beta1, 0.999) as DCGAN, no weight decay."""
        betas = (self.beta1, 0.999)
        return [
            {"params": list(self.generator.parameters()), "betas": betas, "weight_decay": 0.0},
            {"params": list(self.discriminator.parameters()), "betas": betas, "weight_decay": 0.0},
        ]


@MODELS.register("image_gan")
class ImageGANFamily(ImageFamily):
    """DCGAN, class-conditional (a projection discriminator, or one-hot label maps at its input),
    trained with the non-saturating loss; the loop validates on the Fréchet distance of samples."""

    name = "image_gan"
    custom_step = True

    def plan_entries(self, cfg: Any, data: Any) -> dict[str, Any]:
        return {
            "width": cfg.width,
            "latent_dim": cfg.latent_dim,
            "conditioning": cfg.conditioning,
            "beta1": cfg.beta1,
        }

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        """The GAN of a plan (float32: the model is small)."""
        m = plan.model
        return ImageGAN(
            int(m["channels"]), int(m["n_labels"]), int(m["size"]), int(m["width"]),
            int(m["latent_dim"]), str(m["conditioning"]), float(m["beta1"]),
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
        """One discriminator update on a real batch and as many fakes of its labels, then one
        generator update on those fakes against the updated discriminator."""
        gan: ImageGAN = core(model)  # type: ignore[assignment]
        G, D = gan.generator, gan.discriminator
        device = gan.generator.bn0.weight.device
        real, y = (t.to(device, non_blocking=True) for t in batches.batch(step))
        g = step_generator(batches.seed, step, device)
        z = torch.randn(len(real), gan.latent_dim, generator=g, device=device)  # (B, Z)
        fake = G(z, y)  # (B, C, S, S)

        # the discriminator: real -> 1, fake -> 0 (real and fake batches apart, as DCGAN's BatchNorm)
        opt.zero_grad(set_to_none=True)
        d_real, d_fake = D(real, y), D(fake.detach(), y)
        d_loss = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        d_loss.backward()
        opt.step()

        # the generator: make the updated discriminator say 1 (non-saturating)
        opt.zero_grad(set_to_none=True)
        D.requires_grad_(False)  # input gradients only; Adam skips parameters without .grad
        try:
            d_gen = D(fake, y)
            g_loss = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            g_loss.backward()
        finally:
            D.requires_grad_(True)
        opt.step()
        with torch.no_grad():
            d_v, g_v, pr, pf = torch.stack(
                [d_loss, g_loss, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()]
            ).tolist()
        return {"loss": d_v + g_v, "discriminator": d_v, "generator": g_v, "d_real": pr, "d_fake": pf}

    def validation_loss(
        self, model: nn.Module, x: np.ndarray, labels: np.ndarray, device: torch.device
    ) -> float:
        """The Fréchet distance between samples of the validation labels (fixed seed) and the
        validation images, in the fixed feature map (8 x 8 average-pooled pixels)."""
        fake = self.generate(model, labels, 0)
        return frechet_distance(pooled_features(fake), pooled_features(x))

    def generate(self, model: nn.Module, labels: np.ndarray, seed: int) -> np.ndarray:
        """Images of the generator in eval mode (BatchNorm with its running statistics)."""
        gan: ImageGAN = core(model)  # type: ignore[assignment]
        was_training = gan.training
        gan.eval()
        try:
            g = step_generator(seed, 0, gan.generator.bn0.weight.device)
            return gan.generate(torch.from_numpy(np.asarray(labels, np.int64)), g).cpu().numpy()
        finally:
            gan.train(was_training)
