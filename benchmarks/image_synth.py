"""Class-conditional images: genloom's image_vae and image_gan on scikit-learn's digits, judged by a
classifier trained on real digits.

    python benchmarks/image_synth.py            # VAE 200 epochs, GAN 100 epochs
    python benchmarks/image_synth.py --quick    # VAE 20, GAN 15 epochs
    python benchmarks/image_synth.py --models image_vae --vae-epochs 100

Data: the 1,797 digits (8 x 8, 17 grey levels) split 75/25, stratified with seed 0: 1,347 to
train the generators and the classifier, 450 to test. genloom is used as a user would: the
training digits are written as PNG files into class folders (``train/7/0012.png``), a pipeline
file reads them with the ``image_folder`` source (10% held out by genloom's own split),
``Pipeline.from_file(...).run()`` trains, ``Pipeline.sample(n, {"label": k}, seed=0)`` draws 100
images of each digit.

The judge: scikit-learn's MLPClassifier (one hidden layer of 128 ReLU units, seed 0) trained on
the real training digits (pixels / 255), its accuracy on the real test digits printed beside.

- sample accuracy: the share of samples that the judge assigns the digit they were asked for;
- Fréchet distance: between Gaussians fitted to the judge's hidden-layer activations (its
  penultimate features) of the samples and of the real test digits; next to it the same distance
  between the real training digits (a class-balanced draw of as many) and the test digits, the
  floor a perfect generator would reach at this sample size;
- samples/s: images per second of one ``Pipeline.sample`` call of 1,000 images (model loading
  included), and the fit seconds of the prepare + train stages.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 100  # samples drawn per digit


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): uint8 (N, 8, 8) as the digits source writes them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    pixels = np.uint8(np.round(d.images * 255.0 / 16.0))
    xtr, xte, ytr, yte = train_test_split(pixels, d.target, test_size=0.25, stratify=d.target, random_state=0)
    return xtr, ytr, xte, yte


def write_folders(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(int(lab))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")


class Judge:
    """An MLP trained on real digits: its predictions and its hidden-layer features."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=0)
        self.clf.fit(self.flat(x), y)

    @staticmethod
    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64) / 255.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.clf.predict(self.flat(x))

    def features(self, x: np.ndarray) -> np.ndarray:
        """The hidden layer's ReLU activations (N, 128): the penultimate features."""
        h = self.flat(x) @ self.clf.coefs_[0] + self.clf.intercepts_[0]
        return np.maximum(h, 0.0)


def decode(table: Any) -> np.ndarray:
    import io

    from PIL import Image

    return np.stack(
        [np.asarray(Image.open(io.BytesIO(b)).convert("L")) for b in table.column("image").to_pylist()]
    )


def run_model(
    model: str, epochs: int, width: int, train_dir: Path, work: Path, threads: int
) -> dict[str, Any]:
    """Trains ``model`` through a pipeline file on the PNG folders; samples PER_CLASS of each digit."""
    from genloom.pipeline import Pipeline

    folder = work / model
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(
        f"""name: digits-{model}
store: {{path: .genloom/artifacts}}
catalog: {{url: "sqlite:///.genloom/catalog.db"}}
executor: {{type: local, workers: 1}}
sources:
  - type: image_folder
    paths: [{train_dir}]
split: {{val_fraction: 0.1, seed: 0}}
train:
  threads: {threads}
  model: {{type: {model}, size: 8, width: {width}, epochs: {epochs}, batch_size: 64}}
"""
    )
    pipe = Pipeline.from_file(folder / "pipeline.yaml")
    t0 = time.perf_counter()
    summary = pipe.run()
    wall = time.perf_counter() - t0
    stages = {s.stage: s for s in summary.stages} if hasattr(summary, "stages") else {}
    fit_s = sum(float(getattr(stages.get(k), "seconds", 0.0) or 0.0) for k in ("prepare", "train")) or None
    version = summary.model["version"] if summary.model else None
    samples, labels = [], []
    for k in range(10):
        t = pipe.sample(PER_CLASS, {"label": str(k)}, seed=k, version=version)
        samples.append(decode(t))
        labels += [k] * PER_CLASS
    t0 = time.perf_counter()
    pipe.sample(1000, seed=123, version=version)
    per_s = 1000 / (time.perf_counter() - t0)
    return {
        "samples": np.concatenate(samples),
        "labels": np.array(labels),
        "fit_s": fit_s,
        "run_s": wall,
        "samples_per_s": per_s,
        "pipe": pipe,
        "version": version,
    }


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from genloom.models.image_data import frechet_distance

    return frechet_distance(a, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs: under 2 minutes")
    ap.add_argument("--models", default="image_vae,image_gan")
    ap.add_argument("--vae-epochs", type=int, default=None)
    ap.add_argument(
        "--width", type=int, default=32, help="feature maps of both models' full-resolution layer"
    )
    ap.add_argument("--gan-epochs", type=int, default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="training threads (on a shared 2-core machine 2 threads measured 4x slower than 1)",
    )
    ap.add_argument(
        "--grid", type=Path, default=None, help="write each model's grid of samples per class here (PNG)"
    )
    args = ap.parse_args()
    epochs = {
        "image_vae": args.vae_epochs or (20 if args.quick else 200),
        "image_gan": args.gan_epochs or (15 if args.quick else 100),
    }
    print(
        f"cpu: {cpu_name()}, {os.cpu_count()} cores; load before: {Path('/proc/loadavg').read_text().strip()}"
    )
    xtr, ytr, xte, yte = load_split()
    judge = Judge(xtr, ytr)
    real_acc = float((judge.predict(xte) == yte).mean())
    f_test = judge.features(xte)
    rng = np.random.default_rng(0)
    ref_idx = np.concatenate(
        [
            rng.choice(np.nonzero(ytr == k)[0], size=min(PER_CLASS, int((ytr == k).sum())), replace=False)
            for k in range(10)
        ]
    )
    real_fd = frechet(judge.features(xtr[ref_idx]), f_test)
    print(
        f"judge: MLPClassifier(128) on {len(xtr)} real digits, real test accuracy {real_acc:.4f} on {len(xte)}"
    )
    print(f"Fréchet distance real train ({len(ref_idx)}) vs real test: {real_fd:.3f}")
    result: dict[str, Any] = {
        "quick": args.quick,
        "judge_real_test_accuracy": real_acc,
        "real_train_vs_test_frechet": real_fd,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="genloom-image-bench-") as tmp:
        work = Path(tmp)
        write_folders(work / "train", xtr, ytr)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            r = run_model(model, epochs[model], args.width, work / "train", work, args.threads)
            acc = float((judge.predict(r["samples"]) == r["labels"]).mean())
            per_class = [
                float((judge.predict(r["samples"][r["labels"] == k]) == k).mean()) for k in range(10)
            ]
            fd = frechet(judge.features(r["samples"]), f_test)
            row = {
                "epochs": epochs[model],
                "sample_accuracy": acc,
                "per_class_accuracy": per_class,
                "frechet": fd,
                "fit_s": r["fit_s"],
                "run_s": r["run_s"],
                "samples_per_s": r["samples_per_s"],
            }
            result["models"][model] = row
            print(
                f"{model:10s} epochs {epochs[model]:4d}  sample accuracy {acc:.4f}  Fréchet {fd:.3f}"
                f" (real {real_fd:.3f})  fit {r['fit_s'] or 0:.1f}s  run {r['run_s']:.1f}s"
                f"  {r['samples_per_s']:.0f} samples/s"
            )
            if args.grid is not None:
                from genloom.models.image_data import encode_png, image_grid

                order = np.argsort(r["labels"], kind="stable")
                tiles = r["samples"][order].reshape(10, PER_CLASS, 8, 8)[:, :12].reshape(-1, 1, 8, 8)
                args.grid.mkdir(parents=True, exist_ok=True)
                (args.grid / f"digits_{model}.png").write_bytes(
                    encode_png(image_grid(tiles, 12, pad=4, scale=6))
                )
        real_tiles = np.concatenate([xte[yte == k][:12] for k in range(10)]).reshape(-1, 1, 8, 8)
        if args.grid is not None:
            (args.grid / "digits_real.png").write_bytes(
                encode_png(image_grid(real_tiles, 12, pad=4, scale=6))
            )
    best = max(result["models"].items(), key=lambda kv: kv[1]["sample_accuracy"], default=(None, {}))
    result["best_model"] = best[0]
    result["target_met"] = bool(best[1]) and best[1]["sample_accuracy"] >= 0.95
    result["load_after"] = Path("/proc/loadavg").read_text().strip()
    print(f"load after: {result['load_after']}")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
