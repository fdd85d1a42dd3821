"""The TVAE family end to end on a small mixed table: it learns the marginals, samples under
conditions and constraints, filters rows too close to training rows, resumes exactly from a
checkpoint, and trains with differential privacy (per-sample clipping, spent epsilon).

``run_family`` drives a family the way ``train/loop.py`` does: open_data, plan, build, AdamW over
``optimizer_groups``, ``train_step`` per step, save (plus config.json as the loop writes it)."""

from __future__ import annotations

import io
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

from genloom.core.errors import GenloomError
from genloom.models.base import TrainPlan
from genloom.models.config import TabularVAEConfig
from genloom.models.tabular import TabularFamily, sample_report
from genloom.train.config import TrainConfig

pytest.importorskip("sklearn")
pytest.importorskip("genloom.models.tabular_data")

from tests.models.test_tabular_family import mixed_table, prepare_input  # noqa: E402

from genloom.models.tabular_vae import TabularVAEFamily  # noqa: E402

ADULT = Path("/work/shared/data/tabular/adult-train.csv")


# ----------------------------------------------------------------------------------------------
# the driver: what the training loop does, step by step


@dataclass
class Run:
    """One training run in progress."""

    fam: TabularFamily
    cfg: TrainConfig
    data: Any
    plan: TrainPlan
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    batches: Any


def start_run(fam: TabularFamily, prepared_dir: Path, model_dir: Path, cfg: TrainConfig, steps: int) -> Run:
    """The loop's set-up: model files copied in, data opened, plan resolved, model and AdamW built."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in fam.model_files:  # the train stage copies these before the loop starts
        shutil.copy2(prepared_dir / name, model_dir / name)
    device = torch.device("cpu")
    data = fam.open_data(prepared_dir, model_dir)
    entries, _ = fam.plan(cfg.model, data, None, device)
    plan = TrainPlan.from_dict({"type": cfg.model.type, **entries})
    plan.max_steps = steps  # as train.max_steps does
    torch.manual_seed(cfg.seed)
    model = fam.build(plan, cfg.model, device, torch.float32)
    opt = torch.optim.AdamW(
        model.optimizer_groups(cfg.weight_decay),
        lr=plan.lr,
        betas=(cfg.beta1, plan.beta2 or 0.95),
        fused=True,
    )
    return Run(fam, cfg, data, plan, model, opt, data.batches(plan, cfg.seed, 0, 1, cfg.grad_accum))


def run_steps(run: Run, start: int, stop: int) -> list[dict[str, float]]:
    """Steps ``start`` .. ``stop - 1`` with the constant schedule's learning rate."""
    run.model.train()
    out = []
    for step in range(start, stop):
        for g in run.opt.param_groups:
            g["lr"] = run.plan.lr * g.get("lr_scale", 1.0)
        out.append(run.fam.train_step(run.model, run.batches, run.opt, run.plan, step, run.cfg.model))
    return out


def finish_run(run: Run, model_dir: Path) -> None:
    """The family's save and the loop's config.json."""
    extra = run.fam.save(run.model, run.plan, model_dir)
    config = {
        "format": "genloom",
        "model_type": run.plan.type,
        "plan": run.plan.to_dict(),
        "train": run.cfg.model_dump(mode="json"),
        **extra,
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))


def run_family(fam: TabularFamily, prepared_dir: Path, model_dir: Path, cfg: TrainConfig, steps: int) -> Run:
    """Trains ``steps`` steps as the loop does and saves the model into ``model_dir``."""
    run = start_run(fam, prepared_dir, model_dir, cfg, steps)
    losses = run_steps(run, 0, steps)
    assert all(np.isfinite(v) for d in losses for v in d.values())
    assert list(losses[0])[0] == "loss"
    finish_run(run, model_dir)
    return run


def vae_config(**model: Any) -> TrainConfig:
    return TrainConfig(model=TabularVAEConfig(**{"batch_size": 200, "max_tries": 5, **model}), seed=11)


# ----------------------------------------------------------------------------------------------
# one trained model for the sampling tests


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    TabularVAEFamily().prepare(prepare_input(mixed_table(2000)), vae_config(), out)
    return out


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("model")
    t0 = time.monotonic()
    run_family(TabularVAEFamily(), prepared, model_dir, vae_config(), steps=600)  # 75 epochs of 1600 rows
    print(f"600 TVAE steps on 1600 rows: {time.monotonic() - t0:.1f}s")
    return model_dir


def with_config(model_dir: Path, tmp: Path, **changes: Any) -> Path:
    """A copy of a trained model whose config sets other constraints (sampling reads them there)."""
    out = tmp / "model"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config["train"]["model"].update(changes)
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_samples_follow_the_training_marginals(trained: Path, prepared: Path) -> None:
    fam = TabularVAEFamily()
    import pyarrow.parquet as pq

    real = pq.read_table(prepared / "train.parquet")
    synth = fam.sample(trained, 2000, seed=0)
    assert synth.num_rows == 2000
    assert synth.schema.names == ["x", "color", "count"]
    assert [str(t) for t in synth.schema.types] == ["double", "string", "int64"]

    def freqs(t: pa.Table) -> dict[str, float]:
        return {d["values"]: d["counts"] / t.num_rows for d in pc.value_counts(t.column("color")).to_pylist()}

    want, got = freqs(real), freqs(synth)
    for level, share in want.items():
        # measured here: red 0.27 / blue 0.48 / green 0.24 against 0.32 / 0.51 / 0.17. Decoded from
        # the training rows' posteriors the levels come out at 0.35 / 0.47 / 0.18: the gap is the
        # prior reaching latents between the posteriors, where the decoder mixes the levels and the
        # level both modes share (green) gains (a VAE's prior holes, TVAE's too)
        assert abs(got.get(level, 0.0) - share) < 0.08, (level, share, got)
    x = synth.column("x").to_numpy()
    assert abs(np.mean(x > 1.0) - np.mean(real.column("x").to_numpy() > 1.0)) < 0.06  # the two modes' weights
    assert abs(np.median(x[x > 1.0]) - 6.0) < 0.7 and abs(np.median(x[x < 1.0]) + 4.0) < 0.7
    assert np.mean(np.abs(x - 1.0) < 2.0) < 0.06  # little mass between the modes
    color = np.asarray(synth.column("color").to_pylist())
    # the level follows the mode: red rows are all high, blue ones nearly all low (0.4 / 0.6 if independent)
    assert np.mean(x[color == "red"] > 1.0) > 0.6 and np.mean(x[color == "blue"] < 1.0) > 0.75
    count = synth.column("count")
    assert abs(count.null_count / 2000 - real.column("count").null_count / real.num_rows) < 0.05
    values = count.drop_null().to_numpy()
    assert values.min() >= 0 and abs(values.mean() - 3.0) < 0.6
    report = sample_report(synth)
    assert report["requested"] == 2000 and report["kept"] == 2000 and report["drawn"] >= 2000
    assert fam.sample(trained, 50, seed=4).equals(fam.sample(trained, 50, seed=4))  # seeded


def test_conditions_are_met_by_rejection(trained: Path) -> None:
    from genloom.models.tabular_rules import parse_condition

    fam = TabularVAEFamily()
    red = fam.sample(trained, 300, conditions={"color": "red"}, seed=1)
    assert red.num_rows == 300 and set(red.column("color").to_pylist()) == {"red"}
    assert sample_report(red)["rejected"]["condition: color=red"] > 0
    column, ranged = parse_condition("x=4..8")
    high = fam.sample(trained, 100, conditions={column: ranged}, seed=2)
    assert pc.min(high.column("x")).as_py() >= 4 and pc.max(high.column("x")).as_py() <= 8
    with pytest.raises(GenloomError, match="color=purple"):
        fam.sample(trained, 50, conditions={"color": "purple"}, seed=3)


def test_constraints_and_rules(trained: Path, tmp_path: Path) -> None:
    fam = TabularVAEFamily()
    model_dir = with_config(
        trained,
        tmp_path,
        columns={"x": {"min": -5.0, "max": 7.0, "round": 1}, "count": {"max": 5}},
        rules=["count >= 1"],
    )
    t = fam.sample(model_dir, 400, seed=5)
    x = t.column("x").to_numpy()
    assert x.min() >= -5.0 and x.max() <= 7.0
    assert np.allclose(x, np.round(x, 1))
    count = t.column("count").drop_null().to_numpy()
    assert count.min() >= 1 and count.max() <= 5
    rejected = sample_report(t)["rejected"]
    assert rejected["min: x"] > 0 and rejected["max: x"] > 0 and rejected["rule: count >= 1"] > 0

    unique = with_config(trained, tmp_path / "u", columns={"x": {"round": 1, "unique": True}})
    t = fam.sample(unique, 60, seed=6)
    assert len(set(t.column("x").to_pylist())) == 60


def test_rows_close_to_training_rows_are_rejected(trained: Path) -> None:
    from genloom.models.tabular import DistanceSpace, nearest_distances

    fam = TabularVAEFamily()
    space = DistanceSpace.from_json(json.loads((trained / "dcr_space.json").read_text()))
    reference = np.load(trained / "dcr_reference.npy")
    loose = fam.sample(trained, 300, seed=7, reject_closer_than=0)
    cut = float(np.median(nearest_distances(space.vectors(loose), reference)))
    t = fam.sample(trained, 300, seed=7, reject_closer_than=cut)
    assert sample_report(t)["rejected"]["dcr"] > 0
    assert nearest_distances(space.vectors(t), reference).min() >= cut
    with pytest.raises(GenloomError, match="dcr"):
        fam.sample(trained, 20, seed=8, reject_closer_than=1e9)


def test_evaluate_reports_fidelity_utility_privacy(trained: Path, prepared: Path) -> None:
    metrics = TabularVAEFamily().evaluate(trained, prepared, None)
    for name in ("quality", "column_shapes", "column_pair_trends", "tstr_accuracy", "tstr_f1"):
        assert metrics[name].direction == "max" and 0 <= metrics[name].value <= 1, name
    assert metrics["quality"].value > 0.75
    assert metrics["dcr_close_share"].direction == "min"
    assert metrics["membership_auc"].direction == "min" and 0 <= metrics["membership_auc"].value <= 1
    assert metrics["val_loss"].direction == "min" and np.isfinite(metrics["val_loss"].value)
    assert "dp_epsilon" not in metrics


def test_resume_from_a_checkpoint_is_exact(prepared: Path, tmp_path: Path) -> None:
    from genloom.train.checkpoint import load_checkpoint, save_checkpoint

    fam, cfg, n = TabularVAEFamily(), vae_config(), 12
    straight = start_run(fam, prepared, tmp_path / "a", cfg, 2 * n)
    run_steps(straight, 0, 2 * n)

    first = start_run(fam, prepared, tmp_path / "b", cfg, 2 * n)
    run_steps(first, 0, n)
    ckpt = save_checkpoint(tmp_path / "b", first.model, first.opt, n, {"plan": first.plan.to_dict()})
    torch.manual_seed(999)  # a different start: everything must come from the checkpoint
    resumed = start_run(fam, prepared, tmp_path / "c", cfg, 2 * n)
    state = load_checkpoint(ckpt, resumed.model, resumed.opt)
    assert state["step"] == n
    run_steps(resumed, n, 2 * n)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_conditioned_on_a_column(prepared: Path, tmp_path: Path) -> None:
    """``condition_on``: the decoder reads the column's one-hot (a conditional VAE). Sampling draws
    the level at its training frequency, an asked level needs no rejection, and the rest of the
    row follows the level; resume stays exact; a numeric column is refused."""
    import pyarrow.parquet as pq

    from genloom.core.errors import ConfigError
    from genloom.train.checkpoint import load_checkpoint, save_checkpoint

    fam, cfg = TabularVAEFamily(), vae_config(condition_on=["color"])
    model_dir = tmp_path / "model"
    run = run_family(fam, prepared, model_dir, cfg, steps=400)
    assert run.plan.model["conditions"][0]["column"] == "color"
    real = pq.read_table(prepared / "train.parquet")
    want = {
        d["values"]: d["counts"] / real.num_rows for d in pc.value_counts(real.column("color")).to_pylist()
    }
    synth = fam.sample(model_dir, 3000, seed=0)
    got = {d["values"]: d["counts"] / 3000 for d in pc.value_counts(synth.column("color")).to_pylist()}
    for level, share in want.items():  # drawn at the training frequencies: sampling noise only
        assert abs(got.get(level, 0.0) - share) < 0.03, (level, share, got)
    red = fam.sample(model_dir, 300, conditions={"color": "red"}, seed=1)
    assert set(red.column("color").to_pylist()) == {"red"}
    assert "condition: color=red" not in sample_report(red)["rejected"]  # given to the decoder
    assert sample_report(red)["drawn"] < 2 * 300  # at most the privacy filter's redraws
    blue = fam.sample(model_dir, 300, conditions={"color": "blue"}, seed=1)
    # red rows are high (x ~ 6), blue ones low (x ~ -4) in the training table
    assert (
        np.mean(red.column("x").to_numpy() > 1.0) > 0.7 and np.mean(blue.column("x").to_numpy() < 1.0) > 0.8
    )

    straight = start_run(fam, prepared, tmp_path / "a", cfg, 20)
    run_steps(straight, 0, 20)
    first = start_run(fam, prepared, tmp_path / "b", cfg, 20)
    run_steps(first, 0, 10)
    ckpt = save_checkpoint(tmp_path / "b", first.model, first.opt, 10, {"plan": first.plan.to_dict()})
    resumed = start_run(fam, prepared, tmp_path / "c", cfg, 20)
    load_checkpoint(ckpt, resumed.model, resumed.opt)
    run_steps(resumed, 10, 20)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ConfigError, match="not a categorical column"):
        start_run(fam, prepared, tmp_path / "d", vae_config(condition_on=["x"]), 5)


def test_learning_rate_schedule(prepared: Path) -> None:
    """``schedule``: constant by default (the papers'), cosine decays to train.min_lr_ratio."""
    from genloom.train.plan import lr_at

    fam = TabularVAEFamily()
    data = fam.open_data(prepared, prepared)
    for schedule, last in (("constant", 1e-3), ("cosine", 1e-4)):
        cfg = vae_config(schedule=schedule, lr=1e-3) if schedule != "constant" else vae_config(lr=1e-3)
        entries, _ = fam.plan(cfg.model, data, None, torch.device("cpu"))
        plan = TrainPlan.from_dict({"type": "tabular_vae", **entries})
        assert entries["schedule"] == schedule
        assert lr_at(0, plan, cfg) == pytest.approx(1e-3)
        assert lr_at(plan.max_steps, plan, cfg) == pytest.approx(last)


def test_reparameterisation_has_the_exact_gradient() -> None:
    from genloom.models.tabular_vae import Reparameterise

    mu, logvar = (torch.randn(5, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    eps = torch.randn(5, 3, dtype=torch.float64)
    z, kl = Reparameterise.apply(mu, logvar, eps)
    assert torch.allclose(z, mu + eps * torch.exp(0.5 * logvar))
    assert torch.allclose(kl, -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1))
    assert torch.autograd.gradcheck(lambda m, lv: Reparameterise.apply(m, lv, eps), (mu, logvar))


def test_save_and_load_round_trip(trained: Path) -> None:
    fam = TabularVAEFamily()
    config = json.loads((trained / "config.json").read_text())
    model, transformer = fam.load(trained, config)
    again, _ = fam.load(trained, config)
    assert not model.training and transformer.dim == config["tabular"]["dim"]
    assert np.array_equal(fam.generate(model, 5, None, 3), fam.generate(again, 5, None, 3))
    assert fam.generate(model, 5, None, 3).shape == (5, transformer.dim)


# ----------------------------------------------------------------------------------------------
# differential privacy


SMALL = {"embedding_dim": 16, "compress_dims": [32], "decompress_dims": [32]}


@pytest.mark.parametrize("condition_on", [[], ["color"]])
def test_private_training_spends_at_most_epsilon(
    prepared: Path, tmp_path: Path, condition_on: list[str]
) -> None:
    fam = TabularVAEFamily()
    cfg = vae_config(privacy={"epsilon": 3.0}, condition_on=condition_on, **SMALL)
    run = run_family(fam, prepared, tmp_path, cfg, steps=15)
    privacy = json.loads((tmp_path / "config.json").read_text())["privacy"]
    assert privacy["noise_multiplier"] > 0 and privacy["target_epsilon"] == 3.0
    assert 0 < privacy["epsilon"] <= 3.0 + 0.01
    assert privacy["sample_rate"] == pytest.approx(200 / run.data.n_train)
    metrics = fam.evaluate(tmp_path, prepared, None)
    assert metrics["dp_epsilon"].value == pytest.approx(privacy["epsilon"])


class OneBatch:
    """Batches that always give the same rows (for comparing two steps' gradients)."""

    seed = 0

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, ...]:
        return (self.x,)


def test_private_step_clips_each_row(prepared: Path, tmp_path: Path) -> None:
    fam = TabularVAEFamily()
    cfg = vae_config(privacy={"epsilon": 3.0, "max_grad_norm": 0.5}, **SMALL)
    run = start_run(fam, prepared, tmp_path, cfg, 15)
    x = torch.from_numpy(np.array(run.data.train[:64], dtype=np.float32))
    outlier = x.clone()
    outlier[0, run.model.spans.order[: run.model.spans.n_values]] = (
        50.0  # a row far outside the encoded range
    )

    def summed_grad(rows: torch.Tensor) -> torch.Tensor:
        sgd = torch.optim.SGD(run.model.parameters(), lr=0.0)  # keeps .grad, moves nothing
        fam.train_step(run.model, OneBatch(rows), sgd, run.plan, 0, cfg.model)
        return torch.cat([p.grad.flatten() for p in run.model.parameters()]) * len(rows)

    # the same step seed draws the same posterior and DP noise: only row 0's clipped gradient differs
    difference = summed_grad(outlier) - summed_grad(x)
    assert float(difference.norm()) <= 2 * 0.5 * 1.001

    run.model.zero_grad(set_to_none=True)
    rec, kl = run.model(outlier[:1], torch.zeros(1, run.model.embedding_dim))
    (2 * rec + kl).sum().backward()
    raw = torch.cat([p.grad.flatten() for p in run.model.parameters()]).norm()
    assert float(raw) > 20 * 0.5  # unclipped, the outlier alone would have moved the sum far more


# ----------------------------------------------------------------------------------------------
# the real thing


@pytest.mark.slow
def test_adult_fit_time_and_quality(tmp_path: Path) -> None:
    if not ADULT.exists():
        pytest.skip(f"{ADULT} is absent (the shared tabular data)")
    import pyarrow.csv as pcsv

    names = [
        "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
        "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
        "income",
    ]  # fmt: skip
    raw = ADULT.read_bytes().replace(b", ", b",")  # values follow ", "
    table = pcsv.read_csv(
        io.BytesIO(raw),
        read_options=pcsv.ReadOptions(column_names=names),
        convert_options=pcsv.ConvertOptions(null_values=["?"], strings_can_be_null=True),
    )
    n = table.num_rows
    table = table.append_column("id", pa.array([f"r{i}" for i in range(n)]))
    fam, cfg = TabularVAEFamily(), TrainConfig(model=TabularVAEConfig(epochs=10), seed=0)
    prepared = tmp_path / "prepared"
    fam.prepare(prepare_input(table, val_every=10), cfg, prepared)
    run = start_run(fam, prepared, tmp_path / "model", cfg, steps=1)
    steps = 10 * int(np.ceil(run.data.n_train / run.plan.batch_size))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the loop's setting on this 2-core machine
    try:
        t0 = time.monotonic()
        run_steps(run, 0, steps)
        seconds = time.monotonic() - t0
    finally:
        torch.set_num_threads(threads)
    print(f"adult: {steps} steps, {seconds:.1f}s, {1000 * seconds / steps:.2f} ms/step")
    finish_run(run, tmp_path / "model")
    metrics = fam.evaluate(tmp_path / "model", prepared, None)
    print({k: round(v.value, 4) for k, v in metrics.items() if v.value is not None})
    assert metrics["quality"].value > 0.75
