"""The shared table-family code: span index tensors, row batches, DP-SGD helpers, the DCR space,
conditions, and ``prepare`` on a small mixed table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.errors import StageError
from genloom.models.base import PrepareInput
from genloom.models.tabular import (
    DistanceSpace,
    RowBatches,
    SpanIndex,
    as_condition,
    dp_step,
    noise_multiplier,
    spent_epsilon,
    step_generator,
)

pytest.importorskip("sklearn")

SPANS = [
    {"column": "a", "start": 0, "dim": 1, "activation": "tanh", "role": "value"},
    {"column": "a", "start": 1, "dim": 3, "activation": "softmax", "role": "mode"},
    {"column": "b", "start": 4, "dim": 2, "activation": "softmax", "role": "category"},
    {"column": "c", "start": 6, "dim": 1, "activation": "tanh", "role": "value"},
    {"column": "c", "start": 7, "dim": 5, "activation": "softmax", "role": "mode"},
    {"column": "c", "start": 12, "dim": 2, "activation": "softmax", "role": "missing"},
    {"column": "d", "start": 14, "dim": 11, "activation": "softmax", "role": "category"},
]
DIM = 25


def onehot_rows(n: int, seed: int = 0) -> torch.Tensor:
    """Rows in the span layout: values in (-1, 1), one level set per softmax span."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, DIM)
    for s in SPANS:
        if s["activation"] == "tanh":
            x[:, s["start"]] = torch.rand(n, generator=g) * 2 - 1
        else:
            x[torch.arange(n), s["start"] + torch.randint(0, s["dim"], (n,), generator=g)] = 1.0
    return x


def softmax_spans() -> list[tuple[int, int]]:
    return [(s["start"], s["start"] + s["dim"]) for s in SPANS if s["activation"] == "softmax"]


def test_span_index_matches_a_loop_over_spans() -> None:
    idx = SpanIndex(SPANS, DIM)
    logits, x = torch.randn(64, DIM), onehot_rows(64)
    expected = sum(
        F.cross_entropy(logits[:, a:b], x[:, a:b].argmax(1), reduction="none") for a, b in softmax_spans()
    )
    lp, xp = idx.permute(logits), idx.permute(x)
    assert torch.equal(idx.restore(lp), logits)
    assert torch.allclose(
        idx.cross_entropy(lp[:, idx.n_values :], xp[:, idx.n_values :]), expected, atol=1e-5
    )
    act = idx.restore(idx.activate(lp))
    for s in SPANS:
        a, b = s["start"], s["start"] + s["dim"]
        want = torch.tanh(logits[:, a:b]) if s["activation"] == "tanh" else torch.softmax(logits[:, a:b], 1)
        assert torch.allclose(act[:, a:b], want, atol=1e-6), s
    gumbel = idx.restore(idx.activate(lp, tau=0.2, generator=torch.Generator().manual_seed(0)))
    for a, b in softmax_spans():
        assert torch.allclose(gumbel[:, a:b].sum(1), torch.ones(64), atol=1e-5)
    big = idx.permute(logits * 1000)  # stable far from zero
    assert torch.isfinite(idx.cross_entropy(big[:, idx.n_values :], xp[:, idx.n_values :])).all()


def test_span_cross_entropy_has_the_exact_gradient() -> None:
    idx = SpanIndex(SPANS, DIM).double()
    target = idx.permute(onehot_rows(6).double())[:, idx.n_values :]
    z = torch.randn(6, target.shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: idx.cross_entropy(z, target), (z,))


def test_sample_onehot_draws_levels_in_proportion() -> None:
    idx = SpanIndex(SPANS, DIM)
    logits = torch.zeros(20000, DIM)
    logits[:, 4:6] = torch.tensor([math.log(3.0), 0.0])  # column b: levels 3:1
    block = idx.sample_onehot(idx.permute(logits)[:, idx.n_values :], torch.Generator().manual_seed(1))
    rows = idx.restore(torch.cat([torch.zeros(20000, idx.n_values), block], dim=1))
    for a, b in softmax_spans():
        assert torch.all(rows[:, a:b].sum(1) == 1)
    assert abs(float(rows[:, 4].mean()) - 0.75) < 0.015


def test_row_batches_cover_each_epoch_and_repeat_exactly() -> None:
    rows = np.arange(103, dtype=np.float32)[:, None]
    b = RowBatches(rows, 10, seed=5)
    first_epoch = np.concatenate([b.indices(s) for s in range(b.per_epoch)])
    assert len(set(first_epoch.tolist())) == 100 and b.per_epoch == 10
    again = RowBatches(rows, 10, seed=5)
    assert np.array_equal(again.batch(37)[0].numpy(), b.batch(37)[0].numpy())  # no state: step 37 directly
    assert not np.array_equal(b.indices(0), b.indices(10))  # a fresh shuffle each epoch
    ranks = [RowBatches(rows, 10, seed=5, rank=r, world=2).indices(0) for r in (0, 1)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())


def test_step_generator_depends_only_on_seed_and_step() -> None:
    a = torch.randn(3, generator=step_generator(1, 7))
    assert torch.equal(a, torch.randn(3, generator=step_generator(1, 7)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(1, 8)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(2, 7)))


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _row_loss(net: nn.Module):
    from torch.func import functional_call

    def loss(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (functional_call(net, state, (x,)).squeeze(-1) - y).pow(2).sum()

    return loss


def test_dp_step_without_clipping_or_noise_is_the_mean_gradient() -> None:
    net = _tiny_net()
    x, y = torch.randn(16, 4), torch.randn(16)
    (net(x).squeeze(-1) - y).pow(2).mean().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    losses, _ = dp_step(net, _row_loss(net), (x, y), max_grad_norm=1e9, noise_multiplier=0.0, generator=None)
    assert losses.shape == (16,)
    for p, e in zip(net.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, e, atol=1e-5)


def test_dp_step_clips_each_sample_and_adds_noise() -> None:
    net = _tiny_net()
    x, y = torch.randn(8, 4), torch.randn(8)
    x[0], y[0] = 100.0, -100.0  # one outlier row with a huge gradient
    c = 0.5

    def summed_grad(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        dp_step(net, _row_loss(net), (xb, yb), max_grad_norm=c, noise_multiplier=0.0, generator=None)
        return torch.cat([p.grad.flatten() for p in net.parameters()]) * len(xb)

    outlier_part = summed_grad(x, y) - summed_grad(x[1:], y[1:])
    assert float(outlier_part.norm()) <= c * 1.001  # the outlier moves the sum by at most C
    assert float(outlier_part.norm()) > 0.9 * c  # and is clipped, not dropped
    net.zero_grad(set_to_none=True)
    dp_step(net, _row_loss(net), (x, y), c, noise_multiplier=1.0, generator=torch.Generator().manual_seed(0))
    noisy = torch.cat([p.grad.flatten() for p in net.parameters()]) * len(x)
    assert float((noisy - summed_grad(x, y)).std()) == pytest.approx(c, rel=0.35)  # N(0, (sigma C)^2)


def test_ghost_clipping_equals_per_sample_clipping_on_a_vae() -> None:
    """ghost_dp_step's clipped sum (norms from output gradients and inputs, no per-sample
    gradients) equals dp_step's (per-sample gradients by vmap) on a TVAE with its shared sigma,
    with a clip bound that clips some rows and not others."""
    from torch.func import functional_call

    from genloom.models.tabular import ghost_dp_step
    from genloom.models.tabular_vae import TabularVAE

    spans = [
        {"column": "a", "start": 0, "dim": 1, "activation": "tanh", "role": "value"},
        {"column": "a", "start": 1, "dim": 3, "activation": "softmax", "role": "mode"},
        {"column": "b", "start": 4, "dim": 1, "activation": "tanh", "role": "value"},
        {"column": "c", "start": 5, "dim": 4, "activation": "softmax", "role": "category"},
    ]
    torch.manual_seed(3)
    vae = TabularVAE(spans, 9, 4, [16, 16], [16, 16], 2.0, 1e-5)
    x = torch.rand(12, 9)
    x[:, 1:4] = torch.nn.functional.one_hot(torch.randint(0, 3, (12,)), 3).float()
    x[:, 5:9] = torch.nn.functional.one_hot(torch.randint(0, 4, (12,)), 4).float()
    eps = torch.randn(12, 4)

    def per_sample(state: dict[str, torch.Tensor], x1: torch.Tensor, eps1: torch.Tensor) -> Any:
        rec, kl = functional_call(vae, state, (x1, eps1))
        return (2.0 * rec + kl).sum(), torch.cat([rec, kl])

    def rows(per_row: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rec, kl = vae(x, eps, per_row["sigma"])
        return 2.0 * rec + kl, torch.stack([rec, kl], dim=1)

    norms = []
    for clip in (1e9, 2.0):  # no clipping, then clipping
        vae.zero_grad(set_to_none=True)
        want_losses, _ = dp_step(vae, per_sample, (x, eps), clip, 0.0, None)
        want = {n: p.grad.clone() for n, p in vae.named_parameters()}
        vae.zero_grad(set_to_none=True)
        losses, aux = ghost_dp_step(vae, rows, {"sigma": vae.sigma}, 12, clip, 0.0, None)
        assert torch.allclose(losses, want_losses, atol=1e-5) and aux.shape == (12, 2)
        for n, p in vae.named_parameters():
            assert torch.allclose(p.grad, want[n], rtol=1e-4, atol=1e-6), n
        norms.append(float(torch.cat([g.flatten() for g in want.values()]).norm()))
    assert norms[1] < norms[0]  # the bound of 2.0 did clip
    with pytest.raises(RuntimeError, match="ghost clipping covers"):  # a parameter it cannot see
        ghost_dp_step(vae, rows, {}, 12, 1.0, 0.0, None)


def test_noise_multiplier_spends_the_budget() -> None:
    q, steps = 500 / 32000, 3000
    sigma = noise_multiplier(3.0, 1e-5, q, steps)
    assert sigma > 0.3
    assert spent_epsilon(sigma, q, steps, 1e-5) <= 3.0 + 0.01
    assert spent_epsilon(sigma, q, steps // 2, 1e-5) < 3.0
    assert spent_epsilon(sigma, q, 0, 1e-5) == 0.0


def test_distance_space_puts_a_copy_at_zero() -> None:
    rows = pa.table(
        {
            "x": [1.0, 2.0, None, 4.0],
            "n": pa.array([1, 2, 3, 4], pa.int64()),
            "c": ["a", "b", "a", None],
        }
    )
    space = DistanceSpace.fit(rows, {"x": "numeric", "n": "integer", "c": "categorical"})
    v = space.vectors(rows)
    assert v.shape == (4, 1 + 1 + 1 + 3) and v.dtype == np.float32
    again = DistanceSpace.from_json(json.loads(json.dumps(space.to_json()))).vectors(rows)
    assert np.array_equal(v, again)
    other = space.vectors(pa.table({"x": [1.0], "n": pa.array([1], pa.int64()), "c": ["b"]}))
    assert np.linalg.norm(other[0] - v[0]) == pytest.approx(1.0)  # another level: one unit apart


def test_nearest_distances_is_the_float64_brute_force_minimum_in_small_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import genloom.models.tabular as tabular
    import genloom.models.tabular_rules as tabular_rules

    monkeypatch.setattr(tabular_rules, "DCR_WORKING_MIB", 1)  # 1 MiB of distances: 87 query rows a chunk
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(1500, 16)).astype(np.float32)
    query = np.vstack([reference[:5], rng.normal(size=(200, 16)).astype(np.float32)])
    expected = np.sqrt(
        ((query[:, None, :].astype(np.float64) - reference[None].astype(np.float64)) ** 2).sum(-1)
    ).min(1)
    distances = tabular.nearest_distances(query, reference)
    assert distances.dtype == np.float32 and distances.shape == (205,)
    assert np.allclose(distances, expected, atol=1e-5)
    assert np.all(distances[:5] < 1e-3)  # copies of a reference row
    assert tabular.nearest_distances(query[:0], reference).shape == (0,)
    with pytest.raises(ValueError, match="reference row"):
        tabular.nearest_distances(query, reference[:0])


def test_as_condition_makes_equalities_and_keeps_conditions() -> None:
    from genloom.models.tabular_rules import parse_condition

    cond = as_condition("color", "red")
    t = pa.table({"color": ["red", "blue", None]})
    assert cond.holds(t).tolist() == [True, False, False]
    _, ranged = parse_condition("age=30..40")
    assert as_condition("age", ranged) is ranged
    assert as_condition("n", 3).holds(pa.table({"n": [3, 4]})).tolist() == [True, False]


# ----------------------------------------------------------------------------------------------
# prepare


def mixed_table(n: int, seed: int = 0) -> pa.Table:
    """A bimodal number, a level correlated with it, an integer count with gaps, genloom's columns."""
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.4
    x = np.where(high, rng.normal(6.0, 1.0, n), rng.normal(-4.0, 1.0, n))
    color = np.where(
        high, np.where(rng.random(n) < 0.8, "red", "green"), np.where(rng.random(n) < 0.85, "blue", "green")
    )
    count = rng.poisson(3.0, n)
    count_missing = rng.random(n) < 0.15
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": [""] * n,
            "source": ["t.csv"] * n,
            "meta": ["{}"] * n,
            "x": x,
            "color": color,
            "count": pa.array(count, pa.int64(), mask=count_missing),
        }
    )


def prepare_input(table: pa.Table, val_every: int = 5) -> PrepareInput:
    """Records in batches of 500; every ``val_every``-th row in validation (0: none)."""

    def batches(columns=None):
        for start in range(0, table.num_rows, 500):
            yield table.slice(start, 500)

    def split(batch: pa.Table) -> list[str]:
        ids = [int(i[1:]) for i in batch.column("id").to_pylist()]
        return ["val" if val_every and i % val_every == 0 else "train" for i in ids]

    return PrepareInput(batches=batches, columns=table.column_names, split=split, resolve=str)


def test_prepare_writes_the_artifact(tmp_path: Path) -> None:
    pytest.importorskip("genloom.models.tabular_data")
    from genloom.models.config import TabularVAEConfig
    from genloom.models.tabular_vae import TabularVAEFamily
    from genloom.train.config import TrainConfig

    fam = TabularVAEFamily()
    cfg = TrainConfig(model=TabularVAEConfig(), seed=3)
    steps: list[int] = []
    inp = prepare_input(mixed_table(1000))
    inp.advance = lambda: steps.append(1)
    out = fam.prepare(inp, cfg, tmp_path)
    assert len(steps) == fam.prepare_steps
    for name in ("train.parquet", "val.parquet", "train.npy", "val.npy", "profile.json", *fam.model_files):
        assert (tmp_path / name).exists(), name
    assert out.rows == 800 and out.stats["val_rows"] == 200 and out.stats["columns"] == 3
    assert out.manifest["columns"] == ["x", "color", "count"]
    train = np.load(tmp_path / "train.npy")
    assert train.shape == (800, out.stats["encoded_dim"]) and train.dtype == np.float32
    assert fam.profile(tmp_path) == json.loads((tmp_path / "profile.json").read_text())
    assert json.loads((tmp_path / "dcr_space.json").read_text())["threshold"] > 0
    assert fam.prepare_key(cfg, lambda paths: {})["seed"] == 3


def test_prepare_refuses_an_empty_split(tmp_path: Path) -> None:
    pytest.importorskip("genloom.models.tabular_data")
    from genloom.models.config import TabularVAEConfig
    from genloom.models.tabular_vae import TabularVAEFamily
    from genloom.train.config import TrainConfig

    with pytest.raises(StageError, match="empty"):
        TabularVAEFamily().prepare(
            prepare_input(mixed_table(100), val_every=0), TrainConfig(model=TabularVAEConfig()), tmp_path
        )
