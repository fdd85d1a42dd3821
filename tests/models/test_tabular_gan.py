"""The CTGAN family: its parts on hand-encoded rows (shapes, training-by-sampling, the gradient
penalty on pac groups, DP clipping per group) and end to end on a small mixed table (a bimodal
number, a category with a 2% level tied to it, a boolean): the rare level survives training,
conditioning on a level works without rejection, resuming from a checkpoint is exact.

``start_run`` / ``run_steps`` drive the family the way ``train/loop.py`` does: open_data, plan,
build, one AdamW over ``optimizer_groups``, ``train_step`` per step, save."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from genloom.core.errors import ConfigError
from genloom.models.base import PrepareInput, TrainPlan
from genloom.models.config import TabularGANConfig
from genloom.models.tabular import PrivacyPlan, sample_report
from genloom.models.tabular_gan import (
    Critic,
    GANBatches,
    SpanLayout,
    TabularGAN,
    TabularGANFamily,
    TrainingSampler,
    gradient_penalty,
    private_critic_grads,
)
from genloom.train.config import TrainConfig

SMALL = {"embedding_dim": 16, "generator_dims": [64, 64], "critic_dims": [64, 64]}

# ----------------------------------------------------------------------------------------------
# hand-encoded rows: x (value + 2 modes), segment (3 levels, the last rare), flag (2 levels)

SPANS = [
    {"column": "x", "start": 0, "dim": 1, "activation": "tanh", "role": "value"},
    {"column": "x", "start": 1, "dim": 2, "activation": "softmax", "role": "mode"},
    {"column": "segment", "start": 3, "dim": 3, "activation": "softmax", "role": "category"},
    {"column": "flag", "start": 6, "dim": 2, "activation": "softmax", "role": "category"},
]
DIM = 8


def encoded_rows(n: int, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(n, 8) encoded rows and the plan's ``discrete`` entry; level 2 of segment is 2% of rows."""
    rng = np.random.default_rng(seed)
    seg = rng.choice(3, size=n, p=[0.6, 0.38, 0.02])
    mode = np.where(seg == 2, 1, rng.integers(2, size=n))
    flag = rng.integers(2, size=n)
    x = np.zeros((n, DIM), np.float32)
    x[:, 0] = rng.uniform(-0.5, 0.5, n)
    x[np.arange(n), 1 + mode] = 1
    x[np.arange(n), 3 + seg] = 1
    x[np.arange(n), 6 + flag] = 1
    discrete = [
        {
            "name": "segment",
            "start": 3,
            "dim": 3,
            "frequencies": (np.bincount(seg, minlength=3) / n).tolist(),
        },
        {"name": "flag", "start": 6, "dim": 2, "frequencies": (np.bincount(flag, minlength=2) / n).tolist()},
    ]
    return x, discrete


def hand_plan(discrete: list[dict[str, Any]], batch: int = 100, **model: Any) -> TrainPlan:
    entries: dict[str, Any] = {
        "spans": SPANS,
        "dim": DIM,
        "discrete": discrete,
        "pac": 10,
        "critic_steps": 1,
        "gp_weight": 10.0,
    }
    entries.update({"n_train": 2000, "privacy": None, "weight_decay": 1e-6, **SMALL, **model})
    return TrainPlan(type="tabular_gan", batch_size=batch, lr=2e-4, max_steps=100, model=entries)


def test_layout_puts_spans_of_one_width_together() -> None:
    _, discrete = encoded_rows(10)
    layout = SpanLayout.from_plan(SPANS, DIM, discrete)
    # scalars first, then the width-2 spans (x's modes, flag), then the width-3 span (segment)
    assert layout.order.tolist() == [0, 1, 2, 6, 7, 3, 4, 5]
    assert layout.cond_dim == 5 and layout.cond_starts.tolist() == [0, 3]
    assert layout.cond_columns.tolist() == [5, 6, 7, 3, 4]  # segment's levels, then flag's


def test_shapes_dtypes_and_activations() -> None:
    x, discrete = encoded_rows(500)
    plan = hand_plan(discrete)
    model = TabularGANFamily().build(plan, None, torch.device("cpu"), torch.float32)
    real, real_cond, cond, target = GANBatches(TrainingSampler(x, model.layout), 100, 0, 0, False).batch(0)
    assert real.shape == (100, DIM) and cond.shape == (100, 5) and target.shape == (100, DIM)
    assert all(t.dtype == torch.float32 for t in (real, cond, target)) and real_cond is cond
    raw, fake = model.fake(torch.randn(100, 16), cond)
    assert raw.shape == fake.shape == (100, DIM)
    assert model.critic(torch.cat([fake, cond], 1)).shape == (10, 1)  # one score per pac group
    rows = model.generate(300, seed=1)
    assert rows.shape == (300, DIM) and rows.dtype == np.float32
    assert np.all(np.abs(rows[:, 0]) < 1)
    for a, b in [(1, 3), (3, 6), (6, 8)]:
        assert np.allclose(rows[:, a:b].sum(1), 1, atol=1e-4)
    assert np.array_equal(rows, model.generate(300, seed=1))  # eval mode: seeded and repeatable
    assert model.training  # generate put the mode back


def test_training_by_sampling_pairs_rows_with_their_condition() -> None:
    x, discrete = encoded_rows(2000)
    layout = SpanLayout.from_plan(SPANS, DIM, discrete)
    batches = GANBatches(TrainingSampler(x, layout), 20_000, 3, 0, False)
    real, _, cond, target = (t.numpy() for t in batches.batch(5))
    restore = np.argsort(layout.order)
    enc = real[:, restore]  # back to encoded order
    col = np.where(cond[:, :3].any(1), 0, 1)
    seg_rows = col == 0
    assert np.array_equal(enc[seg_rows, 3:6].argmax(1), cond[seg_rows, :3].argmax(1))
    assert np.array_equal(enc[~seg_rows, 6:8].argmax(1), cond[~seg_rows, 3:].argmax(1))
    assert np.array_equal(target[:, restore][:, 3:8], cond)  # the target marks the same level
    # a column uniformly, its level by log-frequency: the 2% level is asked for ~1/2 * 21% of rows
    counts = np.bincount(cond[seg_rows, :3].argmax(1), minlength=3)
    logf = np.log1p(np.bincount(x[:, 3:6].argmax(1), minlength=3))
    assert np.allclose(counts / counts.sum(), logf / logf.sum(), atol=0.02)
    again = batches.batch(5)
    assert all(torch.equal(a, b) for a, b in zip(batches.batch(5), again, strict=True))
    assert not torch.equal(batches.batch(6)[0], again[0])


def test_a_table_without_discrete_columns_trains_unconditioned() -> None:
    x, _ = encoded_rows(300)
    plan = hand_plan([], spans=SPANS[:2], dim=3)
    fam = TabularGANFamily()
    model = fam.build(plan, None, torch.device("cpu"), torch.float32)
    assert model.layout.cond_dim == 0
    opt = torch.optim.AdamW(model.optimizer_groups(0.0), lr=1e-3, fused=True)
    batches = GANBatches(TrainingSampler(x[:, :3], model.layout), 100, 0, 0, False)
    losses = [fam.train_step(model, batches, opt, plan, step, None) for step in range(3)]
    assert all(np.isfinite(v) for d in losses for v in d.values()) and losses[-1]["conditional"] == 0
    assert model.generate(20, seed=0).shape == (20, 3)


def test_gradient_penalty_takes_the_norm_over_a_pac_group() -> None:
    critic = Critic(d_in=3, dims=[], pac=4)  # linear: the gradient is the weight, whatever the input
    real, fake = torch.randn(8, 3), torch.randn(8, 3)
    w = critic.score.weight.detach().flatten()  # (pac * 3,)
    expected = 10.0 * (w.norm() - 1) ** 2  # a per-row norm would see only a quarter of w
    assert torch.allclose(gradient_penalty(critic, real, fake, 10.0), expected, atol=1e-5)


def test_a_batch_that_pac_does_not_divide_is_a_config_error() -> None:
    _, discrete = encoded_rows(10)
    with pytest.raises(ConfigError, match="pac") as e:
        TabularGANFamily().build(hand_plan(discrete, batch=105), None, torch.device("cpu"), torch.float32)
    assert e.value.path == "train.model.pac"


def test_private_critic_clips_each_pac_group() -> None:
    x, discrete = encoded_rows(400)
    model = TabularGAN(SpanLayout.from_plan(SPANS, DIM, discrete), 16, [32], [32], pac=10)
    real, real_cond, cond, _ = GANBatches(TrainingSampler(x, model.layout), 100, 0, 0, True).batch(0)
    with torch.no_grad():
        fake = model.fake(torch.randn(100, 16), cond)[1]
    x_real, x_fake = torch.cat([real, real_cond], 1), torch.cat([fake, cond], 1)
    no_noise = PrivacyPlan(1.0, 1e-5, max_grad_norm=0.5, sample_rate=0.1, steps=10, noise_multiplier=0.0)

    def critic_grad(rows: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # the same interpolation weights and dropout masks
        model.critic.zero_grad(set_to_none=True)
        private_critic_grads(model, rows, x_fake, 10.0, no_noise)
        return torch.cat([p.grad.flatten() for p in model.critic.parameters()])

    plain = critic_grad(x_real)
    outlier = x_real.clone()
    outlier[3] *= 1e4  # one absurd row in group 0
    moved = critic_grad(outlier)
    # only group 0 changed, and each group's clipped gradient counts at most C / G in the mean
    assert (moved - plain).norm() <= 2 * 0.5 / 10 + 1e-5
    assert plain.norm() <= 0.5 + 1e-5


# ----------------------------------------------------------------------------------------------
# end to end on a small mixed table


def mixed_table(n: int, seed: int = 0) -> pa.Table:
    """A bimodal number, a segment whose level "vip" (2%) sits in the upper mode, a boolean."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(np.array(["basic", "plus", "vip"]), size=n, p=[0.6, 0.38, 0.02])
    upper = (segment == "vip") | (rng.random(n) < 0.35)
    amount = np.where(upper, rng.normal(80.0, 5.0, n), rng.normal(20.0, 4.0, n))
    amount = np.where(segment == "vip", rng.normal(95.0, 3.0, n), amount)
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": [""] * n,
            "source": ["t.csv"] * n,
            "meta": ["{}"] * n,
            "amount": amount,
            "segment": segment,
            "active": rng.random(n) < 0.7,
        }
    )


def prepare_input(table: pa.Table) -> PrepareInput:
    """The records in batches of 500, every fifth in validation."""

    def batches(columns: Any = None) -> Any:
        for start in range(0, table.num_rows, 500):
            yield table.slice(start, 500)

    def split(batch: pa.Table) -> list[str]:
        return ["val" if int(i[1:]) % 5 == 0 else "train" for i in batch.column("id").to_pylist()]

    return PrepareInput(batches=batches, columns=table.column_names, split=split, resolve=str)


def gan_config(**model: Any) -> TrainConfig:
    return TrainConfig(
        model=TabularGANConfig(**{"batch_size": 200, "max_tries": 10, **SMALL, **model}), seed=5
    )


@dataclass
class Run:
    """One training run in progress, as the loop holds it."""

    fam: TabularGANFamily
    cfg: TrainConfig
    plan: TrainPlan
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    batches: Any


def start_run(prepared: Path, model_dir: Path, cfg: TrainConfig, steps: int, precision: str = "fp32") -> Run:
    """The loop's set-up: model files copied in, data opened, plan resolved, model and AdamW built."""
    fam = TabularGANFamily()
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in fam.model_files:
        shutil.copy2(prepared / name, model_dir / name)
    device = torch.device("cpu")
    data = fam.open_data(prepared, model_dir)
    entries, _ = fam.plan(cfg.model, data, None, device)
    plan = TrainPlan.from_dict({"type": cfg.model.type, **entries})
    plan.max_steps = steps
    plan.precision = precision
    torch.manual_seed(cfg.seed)
    model = fam.build(plan, cfg.model, device, torch.float32)
    groups = model.optimizer_groups(cfg.model.weight_decay)
    opt = torch.optim.AdamW(groups, lr=plan.lr, betas=(cfg.beta1, plan.beta2 or 0.95), fused=True)
    return Run(fam, cfg, plan, model, opt, data.batches(plan, cfg.seed, 0, 1, cfg.grad_accum))


def run_steps(run: Run, start: int, stop: int) -> list[dict[str, float]]:
    run.model.train()
    out = []
    for step in range(start, stop):
        for g in run.opt.param_groups:
            g["lr"] = run.plan.lr * g.get("lr_scale", 1.0)
        out.append(run.fam.train_step(run.model, run.batches, run.opt, run.plan, step, run.cfg.model))
    return out


def finish_run(run: Run, model_dir: Path) -> None:
    """The family's save and the config.json the loop writes."""
    extra = run.fam.save(run.model, run.plan, model_dir)
    config = {"format": "genloom", "model_type": run.plan.type, "plan": run.plan.to_dict()}
    config.update({"train": run.cfg.model_dump(mode="json"), **extra})
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("prepared")
    TabularGANFamily().prepare(prepare_input(mixed_table(2000)), gan_config(), out)
    return out


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # networks this small gain nothing from a second thread
    t0 = time.monotonic()
    run = start_run(prepared, model_dir, gan_config(lr=1e-3), steps=600)
    losses = run_steps(run, 0, 600)  # 75 epochs of 1600 rows
    print(f"600 CTGAN steps of 200 rows: {time.monotonic() - t0:.1f}s")
    torch.set_num_threads(threads)
    assert list(losses[0])[0] == "loss" and all(np.isfinite(v) for d in losses for v in d.values())
    finish_run(run, model_dir)
    return model_dir


def test_the_rare_level_appears_at_its_rate(trained: Path) -> None:
    rows = TabularGANFamily().sample(trained, 4000, seed=1, reject_closer_than=0)
    share = pc.mean(pc.equal(rows.column("segment"), "vip")).as_py()
    print(f"vip share in samples: {share:.4f} (training: 0.02)")
    assert 0.005 <= share <= 0.06
    active = pc.mean(pc.cast(rows.column("active"), pa.float64())).as_py()
    assert abs(active - 0.7) < 0.1


def test_conditioning_on_a_level_needs_almost_no_rejection(trained: Path) -> None:
    fam = TabularGANFamily()
    model, transformer = fam.load(trained, json.loads((trained / "config.json").read_text()))
    span = transformer.category_span("segment")
    for level in ["vip", "plus", "basic"]:
        raw = fam.generate(model, 2000, {"segment": level}, 7)
        hit = float(
            (
                raw[:, span.start : span.start + span.dim].argmax(1)
                == transformer.category_index("segment", level)
            ).mean()
        )
        print(f"segment={level}: {hit:.3f} of rows have it before rejection")
        assert hit >= 0.9
    rows = fam.sample(trained, 300, {"segment": "vip"}, seed=2, reject_closer_than=0)
    assert rows.num_rows == 300 and set(rows.column("segment").to_pylist()) == {"vip"}
    report = sample_report(rows)
    assert report["rejected"].get("condition: segment=vip", 0) <= 0.1 * report["drawn"]
    # the condition carries the correlation: all vip rows are in the upper mode, 37% of all rows
    upper = float(np.mean(np.asarray(rows.column("amount")) > 50))
    print(f"vip rows in the upper mode: {upper:.2f}")
    assert upper >= 0.6


def test_save_and_load_round_trip(trained: Path) -> None:
    fam = TabularGANFamily()
    config = json.loads((trained / "config.json").read_text())
    model, transformer = fam.load(trained, config)
    again, _ = fam.load(trained, config)
    assert not model.training
    assert np.array_equal(fam.generate(model, 50, None, 3), fam.generate(again, 50, None, 3))
    rows = fam.sample(trained, 20, seed=4, reject_closer_than=0)
    assert rows.schema.names == transformer.schema.names and rows.num_rows == 20


def test_validation_loss_is_deterministic(trained: Path, prepared: Path) -> None:
    fam = TabularGANFamily()
    config = json.loads((trained / "config.json").read_text())
    model, _ = fam.load(trained, config)
    data = fam.open_data(prepared, trained)
    plan = TrainPlan.from_dict(config["tabular"])
    a = data.val_loss(model, plan, 1000, torch.device("cpu"))
    assert np.isfinite(a) and a == data.val_loss(model, plan, 1000, torch.device("cpu"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_from_a_checkpoint_is_exact(prepared: Path, tmp_path: Path, precision: str) -> None:
    from genloom.train.checkpoint import load_checkpoint, save_checkpoint

    cfg, n = gan_config(critic_steps=2), 8
    straight = start_run(prepared, tmp_path / "a", cfg, 2 * n, precision)
    run_steps(straight, 0, 2 * n)

    first = start_run(prepared, tmp_path / "b", cfg, 2 * n, precision)
    run_steps(first, 0, n)
    buffers = {f"buffer.{k}": v.clone() for k, v in first.model.named_buffers()}
    ckpt = save_checkpoint(tmp_path / "b", first.model, first.opt, n, {"plan": first.plan.to_dict()}, buffers)
    torch.manual_seed(999)  # a different start: everything must come from the checkpoint
    resumed = start_run(prepared, tmp_path / "c", cfg, 2 * n, precision)
    state = load_checkpoint(ckpt, resumed.model, resumed.opt)
    resumed.model.load_state_dict(
        {**resumed.model.state_dict(), **{k[7:]: v for k, v in state["extra"].items()}}
    )
    run_steps(resumed, n, 2 * n)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_bf16_plan_autocasts_the_networks_and_keeps_float32_weights(prepared: Path, tmp_path: Path) -> None:
    cfg = gan_config(critic_steps=2)
    fp32 = start_run(prepared, tmp_path / "a", cfg, 4)
    bf16 = start_run(prepared, tmp_path / "b", cfg, 4, "bf16")
    seen: list[torch.dtype] = []
    hook = bf16.model.critic.hidden[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = run_steps(bf16, 0, 4)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the critic's matmuls ran in bf16
    assert all(np.isfinite(v) for d in losses for v in d.values())
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    run_steps(fp32, 0, 4)
    a, b = fp32.model.state_dict(), bf16.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the same steps in another precision


def test_private_training_spends_at_most_epsilon(prepared: Path, tmp_path: Path) -> None:
    cfg = gan_config(
        privacy={"epsilon": 3.0}, critic_steps=2, embedding_dim=8, generator_dims=[16], critic_dims=[16]
    )
    run = start_run(prepared, tmp_path, cfg, steps=6)
    losses = run_steps(run, 0, 6)
    assert all(np.isfinite(v) for d in losses for v in d.values())
    assert int(run.model.dp_updates) == 12
    finish_run(run, tmp_path)
    privacy = json.loads((tmp_path / "config.json").read_text())["privacy"]
    assert privacy["steps"] == 12 and privacy["noise_multiplier"] > 0
    assert 0 < privacy["epsilon"] <= 3.0 + 0.01
