"""image_gan end to end on tiny digit sets: both conditionings train through the one loop and
their samples differ by label as the real classes do; a killed run resumes exactly, BatchNorm
statistics included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("sklearn")
pytest.importorskip("PIL")

from tests.models.image_fixtures import (  # noqa: E402
    class_means,
    decode_all,
    digit_records,
    needs_image_configs,
    prepare,
    train,
    train_config,
)

from genloom.models.image_gan import ImageGAN, ImageGANFamily  # noqa: E402

TINY = {"type": "image_gan", "size": 8, "width": 8, "latent_dim": 8, "batch_size": 32}


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_shapes_of_the_networks(conditioning: str) -> None:
    for size in (8, 16, 32, 64):
        gan = ImageGAN(channels=3, n_labels=4, size=size, width=4, latent_dim=5, conditioning=conditioning)
        y = torch.tensor([0, 3])
        fake = gan.generator(torch.randn(2, 5), y)
        assert fake.shape == (2, 3, size, size) and fake.abs().max() <= 1
        assert gan.discriminator(fake, y).shape == (2,)
    unconditional = ImageGAN(channels=1, n_labels=0, size=8, width=4, latent_dim=5, conditioning=conditioning)
    assert unconditional.generator(torch.randn(3, 5), torch.zeros(3, dtype=torch.long)).shape == (3, 1, 8, 8)


def test_the_projection_term_makes_the_label_matter() -> None:
    torch.manual_seed(0)
    gan = ImageGAN(channels=1, n_labels=2, size=8, width=4, latent_dim=5, conditioning="projection").eval()
    x = torch.randn(4, 1, 8, 8)
    a, b = (
        gan.discriminator(x, torch.zeros(4, dtype=torch.long)),
        gan.discriminator(x, torch.ones(4, dtype=torch.long)),
    )
    phi = gan.discriminator.convs(x).flatten(1)
    expected = ((gan.discriminator.project.weight[0] - gan.discriminator.project.weight[1]) * phi).sum(1)
    assert torch.allclose(a - b, expected, atol=1e-5)  # <embed(y), phi(x)> is the only label term


@needs_image_configs
@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_samples_differ_by_label_as_the_classes_do(conditioning: str, tmp_path: Path) -> None:
    fam = ImageGANFamily()
    cfg = train_config({**TINY, "conditioning": conditioning}, max_steps=150)
    prepared = prepare(fam, cfg, digit_records((0, 1)), tmp_path / "prep")
    metrics = train(fam, cfg, prepared, tmp_path / "model")
    assert metrics is not None and metrics["steps"] == 150
    real = np.load(prepared / "train.npy")[:, 0]
    means = class_means(real, [str(k) for k in np.load(prepared / "train_labels.npy")])
    fake = {
        k: decode_all(fam.sample(tmp_path / "model", 64, {"label": k}, seed=2)).astype(np.float64)
        for k in means
    }
    real_diff = (means["0"] - means["1"]).ravel()
    fake_diff = (fake["0"].mean(0) - fake["1"].mean(0)).ravel()
    # an unconditional generator would give the two labels the same mean image (correlation ~0)
    assert np.corrcoef(real_diff, fake_diff)[0, 1] > 0.5  # measured: 0.91 projection, 0.78 concat


@needs_image_configs
def test_a_killed_run_resumes_exactly_with_its_batchnorm_statistics(tmp_path: Path) -> None:
    fam = ImageGANFamily()
    cfg = train_config(TINY, max_steps=20, checkpoint_interval=10, eval_interval=10)
    prepared = prepare(fam, cfg, digit_records((0, 1), per_class=60), tmp_path / "prep")
    assert train(fam, cfg, prepared, tmp_path / "a") is not None
    assert train(fam, cfg, prepared, tmp_path / "b", stop_after=10) is None
    assert train(fam, cfg, prepared, tmp_path / "b") is not None
    a, b = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    assert any(k.endswith("running_mean") for k in a) and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    s1 = fam.sample(tmp_path / "a", 4, {"label": "1"}, seed=0)
    s2 = fam.sample(tmp_path / "b", 4, {"label": "1"}, seed=0)
    assert s1.column("image").to_pylist() == s2.column("image").to_pylist()
