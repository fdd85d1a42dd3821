"""Synthetic sensor series: genloom's series_gan (TimeGAN) and series_vae against a block-bootstrap
baseline, by TimeGAN's discriminative and predictive scores (Yoon et al. 2019, section 5.2).

    python benchmarks/series_synth.py            # 3 seeds, the default schedule
    python benchmarks/series_synth.py --quick    # 1 seed, short schedules, fewer windows (< 2 min)
    python benchmarks/series_synth.py --seeds 0,1 --steps 2000 --datasets beijing
    python benchmarks/series_synth.py --split val   # tuning: score on the validation windows

Data (../shared/data/timeseries, or $GENLOOM_SHARED_DATA/timeseries):

- ``beijing``: beijing-pm25-pollution.csv, hourly, 7 channels (pm2.5, DEWP, TEMP, PRES, Iws,
  Is, Ir; the wind direction is a condition of the windows), 24-step windows (one day), a window
  every ``--stride`` hours, pm2.5's gaps interpolated for the model and masked;
- ``temperatures``: daily-min-temperatures.csv, daily, 1 channel, 24-step windows.

The windows are made by genloom's own ``prepare`` (``models/series_data.py``), split by time
into training (the first 60% of each series), validation (the next 20%) and test windows (the
last 20%; the benchmark sets ``val_fraction`` and ``test_fraction`` to 0.2 and asks for the test
part), scaled to [0, 1] per channel on the training windows. Each model trains through the one
loop (``train/loop.py``, ``--steps`` steps, batch 128) on the training windows and samples as
many windows as the scored split holds, under those windows' own conditions: Beijing's wind
direction and, from run 4, the calendar conditions of each window's start (``--calendar``;
Beijing month and hour; none for temperatures), with Beijing's VAE sampled at temperature 0.5
(``--vae``; both chosen on the validation windows, docs/series.md). The baseline is a
block bootstrap: each synthetic window is cut into blocks of 6 steps, each block copied from the
same position of a random training window, plus Gaussian noise of 5% of the channel's std.

Honest tuning: ``--split val`` scores against the validation windows, which is what choices of
models and settings were made on; the default, ``--split test``, scores against the test
windows, which nothing was tuned on. Scores, each on the [0, 1] scale, averaged over the seeds
(each seed retrains and resamples):

- discriminative: a 2-layer GRU (hidden: max(8, channels); TimeGAN's code: channels / 2) trained
  to tell the real windows of the scored split from as many synthetic ones on 80% of them;
  |accuracy - 0.5| on the other 20% (0 is best; TimeGAN's paper: 0.102 on Stocks and 0.236 on
  Energy, Diffusion-TS 0.067 and 0.122). The reference row scores real training windows against
  the split's: the floor that the split's later time (a drift of the climate, of the city) sets;
- predictive: a 1-layer GRU trained on the synthetic windows to predict every channel's next
  step; its mean absolute error on the scored split's real windows (lower is better), beside the
  same predictor trained on the real training windows.

The CPU, the threads and the load average are printed first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENLOOM_SHARED_DATA", REPO.parent / "shared" / "data")) / "timeseries"
DATASETS = {
    "beijing": {
        "file": "beijing-pm25-pollution.csv",
        "time": ["year", "month", "day", "hour"],
        "channels": ["pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir"],
        "conditions": ["cbwd"],
        "calendar": ["month", "hour"],
        # chosen on the validation windows (docs/series.md, run 4): with the calendar carrying
        # the season, smaller step draws are closer to the real days' smoothness
        "vae": {"temperature": 0.5},
        "step": "1h",
        "show": ["pm2.5", "TEMP", "PRES"],
    },
    "temperatures": {
        "file": "daily-min-temperatures.csv",
        "time": "Date",
        "channels": ["Temp"],
        "conditions": [],
        "calendar": [],  # month was tried on the validation windows: no clear gain (run 4)
        "vae": {},
        "step": "1d",
        "show": ["Temp"],
    },
}
BLOCK = 6
STRIDE = {"beijing": (12, 24), "temperatures": (2, 8)}  # steps between window starts: full, quick
NOISE = 0.05


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> list[str]:
    """The 1, 5 and 15-minute load averages."""
    return Path("/proc/loadavg").read_text().split()[:3]


def load_readings(name: str) -> Any:
    """The dataset's readings as genloom's sensor_files source reads them (one record per reading)."""
    from genloom.sources.sensor_files import SensorFilesSource

    spec = DATASETS[name]
    import pyarrow as pa

    src = SensorFilesSource(paths=[str(DATA / spec["file"])], time_field=spec["time"])
    tables = [t for p in src.partitions() for t in src.read(p) if isinstance(t, pa.Table)]
    return pa.concat_tables(tables, promote_options="default")


def model_config(name: str, stride: int, model_type: str, calendar: list[str] | None = None) -> Any:
    """The series model config of a dataset: 24-step windows, the dataset's channels and conditions
    (``calendar``: the calendar conditions of the windows' starts; None: the dataset's)."""
    from genloom.models.series_data import SeriesGANConfig, SeriesVAEConfig
    from genloom.sources._series import WindowConfig

    spec = DATASETS[name]
    window = WindowConfig(size=24, stride=stride, step=spec["step"], fill="linear", channels=spec["channels"])
    common = {
        "window": window,
        "conditions": spec["conditions"],
        "calendar": spec["calendar"] if calendar is None else calendar,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "batch_size": 128,
    }
    return SeriesGANConfig(**common) if model_type == "series_gan" else SeriesVAEConfig(**common)


def prepare(table: Any, cfg: Any, out: Path) -> None:
    """genloom's prepare of a series family on the readings (split by time, scaler on train)."""
    from genloom.models.base import PrepareInput, family

    inp = PrepareInput(
        batches=lambda cols: iter([table]),
        columns=table.column_names,
        split=lambda b: ["train"] * b.num_rows,
        resolve=str,
        test=True,
    )

    class _Train:  # what prepare reads of the train config
        model = cfg

    family(cfg.type).prepare(inp, _Train(), out)


def train_and_sample(
    model_type: str, cfg: Any, prepared: Path, work: Path, steps: int, seed: int, held: dict[str, np.ndarray]
) -> tuple[np.ndarray, float]:
    """Trains through the one loop, samples windows in [0, 1] under the conditions and lengths of
    the ``held`` windows (one per held-out window)."""
    import shutil

    import torch

    from genloom.models.base import family
    from genloom.train.config import TrainConfig
    from genloom.train.loop import train_prepared

    fam = family(model_type)
    work.mkdir(parents=True, exist_ok=True)
    for f in fam.model_files:
        shutil.copy2(prepared / f, work / f)
    tcfg = TrainConfig().model_copy(
        update={
            "model": cfg,
            "max_steps": steps,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "log_interval": 50,
            "precision": "fp32",
        }
    )
    t0 = time.monotonic()
    with warnings.catch_warnings():
        # without the series configs in models/config.py's ModelConfig union, dumping the train
        # config into config.json warns that the model is not one of the union's types
        warnings.filterwarnings("ignore", message="Pydantic serializer warnings")
        train_prepared(tcfg, prepared, work)
    fit_s = time.monotonic() - t0
    from genloom.models.text import read_model_config

    model, layout = fam.load(work, read_model_config(work))
    codes, lengths = np.asarray(held["cond"]), np.asarray(held["lengths"])
    return fam.generate_windows(model, layout, codes, lengths, seed), fit_s


def block_bootstrap(train: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Windows of blocks copied from random training windows at the same positions, plus noise."""
    rng = np.random.default_rng(seed)
    t = train.shape[1]
    out = np.empty((n, *train.shape[1:]), np.float32)
    for a in range(0, t, BLOCK):
        pick = rng.integers(0, len(train), size=n)
        out[:, a : a + BLOCK] = train[pick, a : a + BLOCK]
    std = train.reshape(-1, train.shape[-1]).std(0)
    out += rng.normal(0.0, 1.0, out.shape).astype(np.float32) * (NOISE * std)
    return np.clip(out, 0.0, 1.0)


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot(path: Path, panels: dict[str, np.ndarray], channels: list[str], show: list[int], n: int = 8) -> None:
    """A PNG grid (Pillow, no plotting library): a row per source (real, each model), a column per
    shown channel, ``n`` windows per panel as lines on the [0, 1] scale."""
    from PIL import Image, ImageDraw

    w, h, pad, top = 260, 130, 8, 18
    img = Image.new("RGB", (110 + len(show) * (w + pad), top + len(panels) * (h + pad)), "white")
    draw = ImageDraw.Draw(img)
    for j, c in enumerate(show):
        draw.text((110 + j * (w + pad) + 4, 2), channels[c], fill="black")
    for i, (name, x) in enumerate(panels.items()):
        y0 = top + i * (h + pad)
        draw.text((4, y0 + h // 2 - 6), name, fill="black")
        rng = np.random.default_rng(0)
        pick = rng.choice(len(x), size=min(n, len(x)), replace=False)
        for j, c in enumerate(show):
            x0 = 110 + j * (w + pad)
            draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(180, 180, 180))
            for k, win in enumerate(pick):
                series = x[win, :, c]
                pts = [
                    (x0 + 2 + t * (w - 4) / max(1, len(series) - 1), y0 + h - 2 - float(v) * (h - 4))
                    for t, v in enumerate(series)
                ]
                draw.line(pts, fill=COLOURS[k % len(COLOURS)], width=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="1 seed, short schedules, fewer windows (< 2 minutes)"
    )
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick: 0)")
    ap.add_argument(
        "--steps", type=int, default=None, help="training steps of series_vae (default 1000; quick: 60)"
    )
    ap.add_argument(
        "--score-steps",
        type=int,
        default=None,
        help="training steps of the score networks (default 500; quick: 100)",
    )
    ap.add_argument(
        "--stride",
        type=int,
        default=None,
        help="steps between window starts (default beijing 12, temperatures 2; quick 24, 8)",
    )
    ap.add_argument(
        "--gan-layers", type=int, default=2, help="GRU layers of each TimeGAN network (the paper: 3)"
    )
    ap.add_argument(
        "--gan-steps", type=int, default=None, help="TimeGAN's training steps (default 150; quick: 30)"
    )
    ap.add_argument("--datasets", default="beijing,temperatures")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--plot",
        default=None,
        help="write real vs synthetic windows (first seed) as PNG files: PATH_<dataset>.png",
    )
    ap.add_argument("--models", default="series_gan,series_vae,block_bootstrap")
    ap.add_argument(
        "--calendar",
        default=None,
        help="calendar conditions of the windows' starts, comma-separated (month, weekday, hour), or"
        " none (default: beijing month,hour; temperatures none)",
    )
    ap.add_argument(
        "--vae",
        default=None,
        help="series_vae config keys as a JSON object (a variant), e.g. '{\"kl_weight\": 0.25}'"
        ' (default: beijing {"temperature": 0.5}, temperatures {})',
    )
    ap.add_argument(
        "--score-seeds",
        type=int,
        default=1,
        help="classifier seeds per model seed of the discriminative score, averaged (default 1: seed = model seed)",
    )
    ap.add_argument(
        "--split",
        choices=["val", "test"],
        default="test",
        help="the held-out windows the scores compare with: val (for tuning) or test (default: the report)",
    )
    args = ap.parse_args()
    import torch

    from genloom.models.series import discriminative_score, load_arrays, predictive_score

    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    steps = args.steps or (60 if args.quick else 1000)
    gan_steps = args.gan_steps or (30 if args.quick else 150)
    score_steps = args.score_steps or (100 if args.quick else 500)
    strides = {k: args.stride or v[1 if args.quick else 0] for k, v in STRIDE.items()}
    calendar = None if args.calendar is None else [c for c in args.calendar.split(",") if c and c != "none"]

    def score(real: np.ndarray, synth: np.ndarray, seed: int) -> float:
        """The discriminative score, averaged over ``--score-seeds`` classifier seeds (the first: ``seed``)."""
        return float(
            np.mean(
                [
                    discriminative_score(real, synth, seed=seed + 1000 * k, steps=score_steps)
                    for k in range(args.score_seeds)
                ]
            )
        )

    # measured: 2 threads beside other work ran TimeGAN's small GRUs 3x slower than 1
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"cpu: {cpu_name()}  cores: {os.cpu_count()}  torch threads: {threads}")
    print(f"load average at start: {load()}")
    print(
        f"seeds {seeds}  steps {steps} (TimeGAN {gan_steps})  score steps {score_steps}  strides {strides}"
        f"  scored on the {args.split} windows"
    )
    if not DATA.exists():
        print(json.dumps({"skipped": f"{DATA} is absent"}))
        return
    results: dict[str, Any] = {}
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="genloom-series-bench-") as tmp:
        for name in args.datasets.split(","):
            table = load_readings(name)
            results[name] = {}
            prepared = Path(tmp) / name / "prepared"
            prepared.mkdir(parents=True)
            stride = strides[name]
            panels: dict[str, np.ndarray] = {}
            # the windows: the same for every model
            prepare(table, model_config(name, stride, "series_vae", calendar), prepared)
            train = np.asarray(load_arrays(prepared, "train")["values"], np.float32)
            held = load_arrays(prepared, args.split)
            real_test, real_mask = (
                np.asarray(held["values"], np.float32),
                np.asarray(held["mask"], np.float32),
            )
            for model in args.models.split(","):
                cfg = model_config(name, stride, model, calendar) if model != "block_bootstrap" else None
                if model == "series_gan":
                    cfg = cfg.model_copy(update={"num_layers": args.gan_layers})
                if model == "series_vae":
                    keys = DATASETS[name]["vae"] if args.vae is None else json.loads(args.vae)
                    cfg = type(cfg).model_validate({**cfg.model_dump(), **keys})
                rows: list[dict[str, float]] = []
                panels.setdefault("real", train)
                for seed in seeds:
                    t0 = time.monotonic()
                    if model == "block_bootstrap":
                        synth, fit_s = block_bootstrap(train, len(real_test), seed), 0.0
                    else:
                        work = Path(tmp) / name / model / f"seed{seed}"
                        n_steps = gan_steps if model == "series_gan" else steps
                        synth, fit_s = train_and_sample(model, cfg, prepared, work, n_steps, seed, held)
                    panels.setdefault(model, synth)
                    d = score(real_test, synth, seed)
                    p = predictive_score(synth, real_test, real_mask, seed=seed, steps=score_steps)
                    rows.append({"discriminative": d, "predictive": p, "fit_s": fit_s})
                    print(
                        f"{name:12s} {model:16s} seed {seed}: discriminative {d:.3f}  predictive {p:.4f}"
                        f"  fit {fit_s:.0f}s  ({time.monotonic() - t0:.0f}s)  load {load()[0]}",
                        flush=True,
                    )
                results[name][model] = {
                    k: float(np.mean([r[k] for r in rows])) for k in ("discriminative", "predictive", "fit_s")
                } | {
                    "discriminative_std": float(np.std([r["discriminative"] for r in rows])),
                    "seeds": len(rows),
                }
            if args.plot:
                show = [DATASETS[name]["channels"].index(c) for c in DATASETS[name]["show"]]
                plot(Path(f"{args.plot}_{name}.png"), panels, DATASETS[name]["channels"], show)
            # the reference: real training windows (as many as the split's, at random) in place of synthetic ones
            pick = [np.random.default_rng(s).permutation(len(train))[: len(real_test)] for s in seeds]
            results[name]["real_discriminative"] = float(
                np.mean([score(real_test, train[p], s) for s, p in zip(seeds, pick, strict=True)])
            )
            results[name]["real_predictive"] = float(
                np.mean(
                    [predictive_score(train, real_test, real_mask, seed=s, steps=score_steps) for s in seeds]
                )
            )
            results[name]["windows"] = {
                "train": int(len(train)),
                args.split: int(len(real_test)),
                "channels": int(train.shape[-1]),
            }
    print("\n" + f"{'dataset':12s} {'model':16s} {'discriminative':>15s} {'predictive':>11s}")
    for name, r in results.items():
        for model, v in r.items():
            if isinstance(v, dict) and "discriminative" in v:
                print(f"{name:12s} {model:16s} {v['discriminative']:15.3f} {v['predictive']:11.4f}")
        print(
            f"{name:12s} {'real (reference)':16s} {r['real_discriminative']:15.3f} {r['real_predictive']:11.4f}"
        )
    results["settings"] = {
        "seeds": seeds,
        "split": args.split,
        "steps": steps,
        "gan_steps": gan_steps,
        "score_steps": score_steps,
        "strides": strides,
        "gan_layers": args.gan_layers,
        "calendar": calendar if calendar is not None else {k: v["calendar"] for k, v in DATASETS.items()},
        "vae": {k: v["vae"] for k, v in DATASETS.items()} if args.vae is None else json.loads(args.vae),
        "score_seeds": args.score_seeds,
        "threads": threads,
    }
    results["wall_s"] = time.monotonic() - t_all
    results["load_average_end"] = load()
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
