"""What the two series families (``series_gan``, ``series_vae``) share: preparing windows, their
training batches, sampling under conditions, and the evaluation (TimeGAN's discriminative and
predictive scores, Yoon et al. 2019, section 5).

A family subclasses ``SeriesFamily`` and writes its network, ``plan_entries``, ``build``,
``train_step`` and one sampling hook, ``generate(model, cond, lengths, seed)`` -> (n, T, C) in
[0, 1]; the base class owns everything around them. The windows a model sees are the ones of
``models/series_data.py``: values in [0, 1] per channel, a mask of the observed values, the
condition levels (one-hot), the lengths.

Sampling returns one row per window: the condition columns, ``length``, ``values`` (T x C lists
of float32 in the channels' units, ``list<list<float32>>`` as the series feature steps read)
and ``mask`` (true up to the window's length); ``format="long"`` gives one row per step instead
(``window``, ``step``, the conditions, one column per channel). The channels are in the
schema's metadata (``b"genloom"``: channels, step, seed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from genloom.core.errors import ConfigError, StageError
from genloom.models.base import Metric, ModelFamily, Prepared, PrepareInput, TrainPlan
from genloom.models.tabular import step_generator, step_seed

if TYPE_CHECKING:
    import pyarrow as pa

    from genloom.models.series_data import SeriesLayout

EVAL_SEED = 20_240_101  # evaluation samples with a fixed seed: the same model scores the same
SPLITS = ("train", "val", "test")
ARRAYS = ("values", "mask", "cond", "lengths")


# ----------------------------------------------------------------------------------------------
# shared layers


def step_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B,) lengths -> (B, T, 1) float, 1 on a window's steps, 0 on its padding."""
    return (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).float().unsqueeze(-1)


def with_condition(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """(B, T, D) steps and a (B, K) condition -> (B, T, D + K): the condition repeated at every step."""
    return torch.cat([x, cond[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)


class RecurrentNet(nn.Module):
    """A stacked GRU and a per-step linear head with an optional activation: TimeGAN's building
    block (every one of its five networks is one)."""

    def __init__(
        self, d_in: int, hidden: int, d_out: int, layers: int, activation: str | None = "sigmoid"
    ) -> None:
        super().__init__()
        self.rnn = nn.GRU(d_in, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, d_out)
        self.activation = activation

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d_in) -> (B, T, d_out)."""
        out, _ = self.rnn(x, h0)
        y = self.head(out)
        return torch.sigmoid(y) if self.activation == "sigmoid" else y


def core(model: nn.Module) -> nn.Module:
    """The module inside a DDP or compiled wrapper."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


# ----------------------------------------------------------------------------------------------
# training data


class SeriesBatches:
    """Fixed-size batches of windows, a fresh shuffle per epoch; the batch of a step depends only on
    (seed, step, micro, rank), so a resumed run sees the same windows (as ``RowBatches``)."""

    def __init__(
        self, arrays: dict[str, np.ndarray], layout: SeriesLayout, batch_size: int, seed: int,
        rank: int = 0, world: int = 1, grad_accum: int = 1,
    ) -> None:  # fmt: skip
        self.arrays, self.layout, self.seed = arrays, layout, seed
        self.rank, self.world, self.grad_accum = rank, world, grad_accum
        self.n = len(arrays["lengths"])
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = max(1, self.n // self.batch_size)
        self._epoch: tuple[int, np.ndarray] | None = None

    def indices(self, step: int, micro: int = 0) -> np.ndarray:
        """Window numbers of micro-batch ``micro`` of ``step``."""
        k = (step * self.grad_accum + micro) * self.world + self.rank
        epoch, i = divmod(k, self.per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._epoch[1][i * self.batch_size : (i + 1) * self.batch_size]

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, ...]:
        """(values (B, T, C), mask (B, T, C), condition one-hot (B, K), lengths (B,))."""
        return tensors(self.arrays, self.layout, np.sort(self.indices(step, micro)))


def tensors(
    arrays: dict[str, np.ndarray], layout: SeriesLayout, idx: np.ndarray | slice
) -> tuple[torch.Tensor, ...]:
    """The windows ``idx`` of prepared arrays as tensors (values, mask, one-hot condition, lengths)."""
    return (
        torch.from_numpy(
            np.array(arrays["values"][idx], np.float32)
        ),  # a copy: the arrays are read-only maps
        torch.from_numpy(np.array(arrays["mask"][idx], np.float32)),
        torch.from_numpy(layout.onehot(np.asarray(arrays["cond"][idx]))),
        torch.from_numpy(np.array(arrays["lengths"][idx], np.int64)),
    )


def load_arrays(folder: Path, split: str) -> dict[str, np.ndarray]:
    """The prepared arrays of one split (memory-mapped)."""
    return {k: np.load(Path(folder) / f"{split}_{k}.npy", mmap_mode="r") for k in ARRAYS}


class SeriesData:
    """Prepared windows as the training loop sees it: train and validation arrays, the layout."""

    unit = "rows"  # a window is the unit a step counts
    vocab_size = 0

    def __init__(self, prepared_dir: Path) -> None:
        from genloom.models.series_data import SeriesLayout

        self.prepared_dir = Path(prepared_dir)
        self.layout = SeriesLayout.from_json(json.loads((self.prepared_dir / "series.json").read_text()))
        self.train = load_arrays(self.prepared_dir, "train")
        self.val = load_arrays(self.prepared_dir, "val")
        self.n_train, self.n_val = len(self.train["lengths"]), len(self.val["lengths"])

    def batches(self, plan: TrainPlan, seed: int, rank: int, world: int, grad_accum: int) -> SeriesBatches:
        """Shuffled fixed-size batches of the training windows."""
        return SeriesBatches(self.train, self.layout, plan.batch_size, seed, rank, world, grad_accum)

    def val_loss(self, model: nn.Module, plan: TrainPlan, max_units: int, device: torch.device) -> float:
        """The model's ``validation_loss`` on the first ``max_units`` validation windows (fixed seed)."""
        batch = [t.to(device) for t in tensors(self.val, self.layout, slice(0, max_units))]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(core(model).validation_loss(*batch, seed=0))  # type: ignore[operator]
        finally:
            model.train(was_training)

    def final_metrics(self, val_loss: float) -> dict[str, Any]:
        """No figures beyond the validation loss."""
        return {}


# ----------------------------------------------------------------------------------------------
# TimeGAN's scores (Yoon et al. 2019, section 5.2)


def _fit(
    net: nn.Module, loss_fn: Callable[[np.ndarray], torch.Tensor], n: int, steps: int, batch: int, seed: int
) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(n, size=min(batch, n), replace=False)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(idx)
        loss.backward()
        opt.step()


class _GRUHead(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int, layers: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(d_in, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out)  # (B, T, d_out)


def discriminative_score(
    real: np.ndarray, synth: np.ndarray, seed: int = 0, steps: int = 1000, batch: int = 128,
    hidden: int | None = None,
) -> float:  # fmt: skip
    """|accuracy - 0.5| of a 2-layer GRU classifier trained to tell real windows from synthetic
    ones on 80% of each, on the other 20% (TimeGAN's post-hoc discriminator; 0 is best). Both
    (N, T, C) in the same scale. Its width (``hidden``) defaults to max(8, C): TimeGAN's code uses
    C / 2, which for a few channels is a classifier too small to tell much apart (measured here:
    4 units after 150 steps scored a barely trained TimeGAN 0.004 on Beijing)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        n = min(len(real), len(synth))
        x = np.concatenate([real[rng.permutation(len(real))[:n]], synth[rng.permutation(len(synth))[:n]]])
        y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
        order = rng.permutation(2 * n)
        x, y = torch.from_numpy(np.array(x[order], np.float32)), torch.from_numpy(y[order])
        cut = int(0.8 * 2 * n)
        c = x.shape[-1]
        net = _GRUHead(c, hidden or max(8, c), 1, 2)
        bce = nn.BCEWithLogitsLoss()
        _fit(net, lambda i: bce(net(x[i])[:, -1, 0], y[i]), cut, steps, batch, seed)
        with torch.no_grad():
            pred = (net(x[cut:])[:, -1, 0] > 0).float()
        acc = float((pred == y[cut:]).float().mean()) if len(pred) else 0.5
    return abs(acc - 0.5)


def predictive_score(
    train: np.ndarray, real: np.ndarray, real_mask: np.ndarray | None = None, seed: int = 0,
    steps: int = 1000, batch: int = 128, hidden: int | None = None,
) -> float:  # fmt: skip
    """Mean absolute error on ``real`` windows of a GRU trained on ``train`` windows (synthetic:
    train on synthetic, test on real) to predict every channel of the next step from the steps
    so far (TimeGAN's predictive score, for all channels rather than the last one; lower is
    better). ``real_mask``: only observed targets count."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xt = torch.from_numpy(np.array(train, np.float32))  # copies: the inputs may be read-only maps
        xr = torch.from_numpy(np.array(real, np.float32))
        c = xt.shape[-1]
        net = _GRUHead(c, hidden or max(4, c // 2), c, 1)
        _fit(
            net,
            lambda i: (torch.sigmoid(net(xt[i, :-1])) - xt[i, 1:]).abs().mean(),
            len(xt),
            steps,
            batch,
            seed,
        )
        with torch.no_grad():
            err = (torch.sigmoid(net(xr[:, :-1])) - xr[:, 1:]).abs()
        if real_mask is not None:
            m = torch.from_numpy(np.array(real_mask[:, 1:], np.float32))
            return float((err * m).sum() / m.sum().clamp_min(1.0))
    return float(err.mean())


def autocorrelation(x: np.ndarray, lag: int = 1) -> np.ndarray:
    """Mean lag-``lag`` autocorrelation per channel of windows (N, T, C) -> (C,)."""
    a, b = x[:, :-lag], x[:, lag:]
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    num = (a * b).sum(1)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1)) + 1e-8
    return np.asarray((num / den).mean(0))


# ----------------------------------------------------------------------------------------------
# the family


class SeriesFamily(ModelFamily):
    """The part of a series family that does not depend on its network: prepare (windows, the
    time split, the scaler, the conditions), the data, sampling under conditions, evaluation.

    A subclass writes ``plan_entries``, ``build``, ``train_step`` and ``generate``; its module has
    ``validation_loss(values, mask, cond, lengths, seed)`` and ``optimizer_groups``."""

    model_files = ("series.json",)
    custom_step = True
    prepare_steps = 3

    # -- prepare --------------------------------------------------------------------------------

    def prepare_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        """The model config (windows, conditions, the time split)."""
        return {"model": train_cfg.model.model_dump(mode="json")}

    def prepare(self, inp: PrepareInput, train_cfg: Any, out_dir: Path) -> Prepared:
        """Windows from the records, split by time per series, the scaler and condition levels
        fitted on the training windows, the arrays of each split."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from genloom.models.series_data import (
            SeriesLayout,
            collect_windows,
            model_inputs,
            profile_windows,
            split_by_time,
        )

        cfg, out_dir = train_cfg.model, Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        windows = collect_windows(inp.batches(None), inp.columns, cfg)
        inp.advance()
        parts, dropped = split_by_time(windows, cfg.val_fraction, cfg.test_fraction if inp.test else None)
        for k, v in windows.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
        if not len(parts["train"]) or not len(parts["val"]):
            raise StageError(
                f"{len(windows)} windows make {len(parts['train'])} training and {len(parts['val'])} validation"
                " windows: add data, or make the windows smaller (train.model.window.size) or more"
                " (a smaller window.stride), or change train.model.val_fraction"
            )
        if inp.test and not len(parts.get("test", [])):
            raise StageError("the test split is empty: add data or raise train.model.test_fraction")
        layout = SeriesLayout.fit(windows.take(parts["train"]), cfg.max_levels)
        (out_dir / "series.json").write_text(json.dumps(layout.to_json()))
        inp.advance()
        for split, idx in parts.items():
            w = windows.take(idx)
            for k, arr in model_inputs(w, layout).items():
                np.save(out_dir / f"{split}_{k}.npy", arr)
            table = pa.table(
                {
                    "id": pa.array(w.ids, pa.string()),
                    "series": pa.array(w.series, pa.string()),
                    "start": pa.array(w.start.astype(np.int64) // 1000, pa.int64()).cast(
                        pa.timestamp("us", tz="UTC")
                    ),
                    "end": pa.array(w.end.astype(np.int64) // 1000, pa.int64()).cast(
                        pa.timestamp("us", tz="UTC")
                    ),
                    "length": pa.array(w.lengths, pa.int32()),
                    **{c: pa.array(v, pa.string()) for c, v in w.conditions.items()},
                }
            )
            pq.write_table(table, out_dir / f"{split}_windows.parquet")
        train_w = windows.take(parts["train"])
        (out_dir / "profile.json").write_text(json.dumps(profile_windows(train_w), indent=2))
        inp.advance()
        counts = {f"{k}_windows": len(v) for k, v in parts.items()}
        return Prepared(
            rows=len(parts["train"]),
            manifest={
                "channels": layout.channels,
                "window": layout.size,
                "step_ns": layout.step_ns,
                "conditions": layout.conditions,
                **counts,
                "dropped": dropped,
            },
            stats={
                "rows": len(parts["train"]),
                **counts,
                "channels": len(layout.channels),
                "window": layout.size,
                **{f"dropped.{k}": v for k, v in dropped.items()},
            },
        )

    def profile(self, prepared_dir: Path) -> dict[str, Any]:
        """The training windows' statistics (``profile.json``, written by ``profile_windows``: per
        channel moments, percentiles, lag-1 autocorrelation; window lengths; condition levels), the
        levels of each condition capped (artifacts prepared before the cap kept every level)."""
        from genloom.models.series_data import OTHER_LEVEL, PROFILE_LEVELS

        out = dict(json.loads((Path(prepared_dir) / "profile.json").read_text()))
        conditions = {}
        for name, levels in (out.get("conditions") or {}).items():
            ranked = sorted(levels.items(), key=lambda kv: (-kv[1], kv[0]))
            kept = dict(ranked[:PROFILE_LEVELS])
            rest = sum(c for _, c in ranked[PROFILE_LEVELS:])
            conditions[name] = {**kept, OTHER_LEVEL: kept.get(OTHER_LEVEL, 0) + rest} if rest else kept
        out["conditions"] = conditions
        return out

    # -- train ----------------------------------------------------------------------------------

    def open_data(self, prepared_dir: Path, model_dir: Path) -> SeriesData:
        """The prepared windows of ``prepared_dir``."""
        return SeriesData(prepared_dir)

    def plan(
        self, cfg: Any, data: SeriesData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        """Windows per step, learning rate and steps (``epochs`` passes; with ``train.time_budget``
        and no ``epochs`` given the loop sizes the steps), the layout's shape, the family's entries."""
        batch = min(cfg.batch_size, data.n_train)
        by_budget = budget_s is not None and "epochs" not in cfg.model_fields_set
        entries: dict[str, Any] = {
            "block_size": 1,
            "batch_size": batch,
            "lr": cfg.lr,
            "max_steps": None if by_budget else cfg.epochs * math.ceil(data.n_train / batch),
            "warmup_steps": 0,
            "schedule": "constant",
            "n_train": data.n_train,
            "channels": len(data.layout.channels),
            "cond_dim": data.layout.cond_dim,
            "window": data.layout.size,
            "hidden_dim": cfg.hidden_dim,
            "num_layers": cfg.num_layers,
        }
        entries.update(self.plan_entries(cfg, data))
        return entries, 0

    def plan_entries(self, cfg: Any, data: SeriesData) -> dict[str, Any]:
        """The family's own plan entries."""
        return {}

    def default_lr(self, cfg: Any, width: int) -> float:
        """The config's learning rate."""
        return float(cfg.lr)

    def save(self, model: nn.Module, plan: TrainPlan, out_dir: Path) -> dict[str, Any]:
        """Weights in ``model.safetensors``; config.json gets the plan's entries."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in core(model).state_dict().items()}
        save_file(state, str(Path(out_dir) / "model.safetensors"))
        return {"series": dict(plan.to_dict())}

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, SeriesLayout]:
        """The saved model (CPU, float32, eval mode) and its layout."""
        from safetensors.torch import load_file

        from genloom.models.series_data import SeriesLayout

        model_dir = Path(model_dir)
        plan = TrainPlan.from_dict(config["series"])
        model = self.build(plan, None, torch.device("cpu"), torch.float32)
        model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
        layout = SeriesLayout.from_json(json.loads((model_dir / "series.json").read_text()))
        return model.eval(), layout

    # -- use ------------------------------------------------------------------------------------

    def generate(self, model: nn.Module, cond: torch.Tensor, lengths: torch.Tensor, seed: int) -> np.ndarray:
        """(n, T, C) float32 windows in [0, 1] under the one-hot conditions ``cond`` (n, K)."""
        raise NotImplementedError

    def generate_windows(
        self,
        model: nn.Module,
        layout: SeriesLayout,
        codes: np.ndarray,
        lengths: np.ndarray,
        seed: int,
        chunk: int = 4096,
    ) -> np.ndarray:
        """``generate`` in chunks (bounded memory), padding past each length zeroed."""
        out = []
        for k, a in enumerate(range(0, len(codes), chunk)):
            cond = torch.from_numpy(layout.onehot(codes[a : a + chunk]))
            ln = torch.from_numpy(np.asarray(lengths[a : a + chunk], np.int64))
            with torch.no_grad():
                x = self.generate(model, cond, ln, step_seed(seed, k))
            pad = layout.size - x.shape[1]
            out.append(np.pad(x, ((0, 0), (0, pad), (0, 0))) if pad > 0 else x[:, : layout.size])
        x = np.concatenate(out) if out else np.zeros((0, layout.size, len(layout.channels)), np.float32)
        x[np.arange(x.shape[1])[None, :] >= np.asarray(lengths)[:, None]] = 0.0
        return x

    def sample(
        self,
        model_dir: Path,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> pa.Table:
        """``n`` synthetic windows under ``conditions`` (condition name -> level); the conditions
        not given are drawn as the training windows' combinations (those that agree with the given
        ones). Option ``format``: ``windows`` (default, one row per window) or ``long``."""
        from genloom.models.text import read_model_config

        model_dir = Path(model_dir)
        config = read_model_config(model_dir)
        model, layout = self.load(model_dir, config)
        seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        rng = np.random.default_rng(seed)
        codes = condition_codes(layout, n, conditions or {}, rng)
        p = np.asarray(layout.length_counts, np.float64)
        lengths = rng.choice(np.asarray(layout.lengths), size=n, p=p / p.sum())
        x = self.generate_windows(model, layout, codes, lengths, seed)
        return windows_table(
            layout, layout.unscale(x), codes, lengths, seed, str(options.get("format", "windows"))
        )

    def evaluate(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """TimeGAN's scores of as many synthetic windows as held-out ones (at most
        ``eval_windows``, generated under the held-out windows' own conditions and lengths, fixed
        seed): the discriminative score (|accuracy - 0.5| of a GRU classifier), the predictive
        score (train on synthetic, test on real: next-step MAE in [0, 1] units) beside the same
        predictor trained on the real training windows; differences of per-channel mean, std and
        lag-1 autocorrelation; the validation loss."""
        from genloom.models.text import read_model_config

        model_dir, prepared_dir = Path(model_dir), Path(prepared_dir)
        config = read_model_config(model_dir)
        model, layout = self.load(model_dir, config)
        m_cfg = config["train"]["model"]
        n_max = int(m_cfg.get("eval_windows", 1000))
        val = load_arrays(prepared_dir, "val")
        train = load_arrays(prepared_dir, "train")
        n = min(len(val["lengths"]), n_max)
        real = np.asarray(val["values"][:n], np.float32)
        real_mask = np.asarray(val["mask"][:n], np.float32)
        codes, lengths = np.asarray(val["cond"][:n]), np.asarray(val["lengths"][:n])
        synth = self.generate_windows(model, layout, codes, lengths, EVAL_SEED)
        steps = int(min(600, max(50, n)))  # the scores' training steps: more for more windows
        out: dict[str, Metric] = {
            "discriminative_score": Metric(discriminative_score(real, synth, seed=0, steps=steps), "min"),
            "predictive_score": Metric(predictive_score(synth, real, real_mask, seed=0, steps=steps), "min"),
            "predictive_score_real": Metric(
                predictive_score(
                    np.asarray(train["values"][:n_max], np.float32), real, real_mask, seed=0, steps=steps
                )
            ),
        }
        valid = real_mask > 0
        for name, f in (("mean", np.mean), ("std", np.std)):
            diffs = [
                abs(float(f(real[..., c][valid[..., c]])) - float(f(synth[..., c])))
                if valid[..., c].any()
                else 0.0
                for c in range(real.shape[-1])
            ]
            out[f"{name}_abs_diff"] = Metric(float(np.mean(diffs)), "min")
        out["autocorr_abs_diff"] = Metric(
            float(np.mean(np.abs(autocorrelation(real) - autocorrelation(synth)))), "min"
        )
        data = self.open_data(prepared_dir, model_dir)
        out["val_loss"] = Metric(
            data.val_loss(model, TrainPlan.from_dict(config["series"]), n_max, torch.device("cpu")), "min"
        )
        return out


def condition_codes(
    layout: SeriesLayout, n: int, conditions: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """(n, K) level indices: the given conditions as asked, the others drawn from the training
    windows' combinations that agree with them (by frequency; independently when none agree)."""
    names = list(layout.conditions)
    if not names and not conditions:
        return np.zeros((n, 0), np.int64)
    unknown = [c for c in conditions if c not in names]
    if unknown:
        raise ConfigError(
            f"no condition {', '.join(unknown)} in this model; conditions: {', '.join(names) or 'none'}",
            path="--where",
        )
    fixed: dict[int, int] = {}
    for name, value in conditions.items():
        text = getattr(value, "value", None)
        text = str(getattr(text, "text", text if text is not None else value))
        levels = layout.conditions[name]
        if text not in levels:
            raise ConfigError(
                f"{name}={text} was not seen in training; levels: {', '.join(levels[:20])}", path="--where"
            )
        fixed[names.index(name)] = levels.index(text)
    combos = np.asarray(layout.combos, np.int64).reshape(-1, len(names))
    counts = np.asarray(layout.combo_counts, np.float64)
    agree = (
        np.all([combos[:, k] == v for k, v in fixed.items()], axis=0) if fixed else np.ones(len(combos), bool)
    )
    if len(combos) and agree.any():
        pick = rng.choice(np.nonzero(agree)[0], size=n, p=counts[agree] / counts[agree].sum())
        codes = combos[pick].copy()
    else:
        codes = np.zeros((n, len(names)), np.int64)
        for k, name in enumerate(names):
            codes[:, k] = rng.integers(0, max(1, len(layout.conditions[name])), size=n)
    for k, v in fixed.items():
        codes[:, k] = v
    return codes


def windows_table(
    layout: SeriesLayout, values: np.ndarray, codes: np.ndarray, lengths: np.ndarray, seed: int, fmt: str
) -> pa.Table:
    """Generated windows (raw units) as Arrow: one row per window, or one per step (``long``)."""
    import pyarrow as pa

    n, t, c = values.shape
    names = list(layout.conditions)
    cond_cols = {
        name: pa.array([layout.conditions[name][i] if i >= 0 else None for i in codes[:, k]], pa.string())
        for k, name in enumerate(names)
    }
    meta = {
        b"genloom": json.dumps(
            {"channels": layout.channels, "step_ns": layout.step_ns, "seed": seed}
        ).encode()
    }
    if fmt == "long":
        win = np.repeat(np.arange(n), lengths)
        step = np.concatenate([np.arange(k) for k in lengths]) if n else np.zeros(0, np.int64)
        cols: dict[str, Any] = {"window": pa.array(win, pa.int32()), "step": pa.array(step, pa.int32())}
        cols.update({name: col.take(pa.array(win)) for name, col in cond_cols.items()})
        for j, ch in enumerate(layout.channels):
            cols[ch] = pa.array(values[win, step, j].astype(np.float32), pa.float32())
        return pa.table(cols).replace_schema_metadata(meta)
    if fmt != "windows":
        raise ConfigError(f"unknown series sample format {fmt!r}", path="format", hint="windows or long")
    lengths = np.asarray(lengths, np.int32)
    outer = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat_steps = values[
        np.repeat(np.arange(n), lengths), np.concatenate([np.arange(k) for k in lengths]) if n else []
    ]
    inner = pa.array(np.arange(0, len(flat_steps) * c + 1, c, dtype=np.int32))
    vals = pa.ListArray.from_arrays(
        outer, pa.ListArray.from_arrays(inner, pa.array(flat_steps.ravel().astype(np.float32)))
    )
    mask = pa.ListArray.from_arrays(
        outer, pa.ListArray.from_arrays(inner, pa.array(np.ones(flat_steps.size, bool)))
    )
    table = pa.table(
        {
            "window": pa.array(np.arange(n), pa.int32()),
            **cond_cols,
            "length": pa.array(lengths),
            "values": vals,
            "mask": mask,
        }
    )
    return table.replace_schema_metadata(meta)


__all__ = [
    "RecurrentNet",
    "SeriesBatches",
    "SeriesData",
    "SeriesFamily",
    "autocorrelation",
    "condition_codes",
    "core",
    "discriminative_score",
    "predictive_score",
    "step_generator",
    "step_mask",
    "windows_table",
    "with_condition",
]
