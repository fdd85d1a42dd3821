"""Shared by the image family tests: tiny digit sets, the config, a run of the one loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from genloom.models.base import PrepareInput


def image_configs_registered() -> bool:
    """Whether ``train.model`` accepts the image families (models/config.py's ModelConfig lists them)."""
    from pydantic import TypeAdapter, ValidationError

    from genloom.models.config import ModelConfig

    try:
        TypeAdapter(ModelConfig).validate_python({"type": "image_vae"})
    except ValidationError:
        return False
    return True


needs_image_configs = pytest.mark.skipif(
    not image_configs_registered(),
    reason="models/config.py's ModelConfig union does not list ImageGANConfig / ImageVAEConfig yet",
)


def digit_records(classes: tuple[int, ...] = (0, 1), per_class: int | None = None) -> pa.Table:
    """The digits of ``classes`` as image records (the digits source's own records)."""
    from genloom.sources.digits import DigitsSource

    table = next(DigitsSource().read(None))
    labels = np.asarray(table.column("label").to_pylist())
    keep = np.isin(labels, [str(c) for c in classes])
    if per_class is not None:
        for c in classes:
            idx = np.nonzero(labels == str(c))[0]
            keep[idx[per_class:]] = False
    return table.filter(pa.array(keep))


def prepare_input(table: pa.Table, val_every: int = 8) -> PrepareInput:
    """Batches of 256 records; every ``val_every``-th record (by its digit index) in validation."""

    def batches(columns=None):  # type: ignore[no-untyped-def]
        for start in range(0, table.num_rows, 256):
            t = table.slice(start, 256)
            yield t.select([c for c in columns if c in t.column_names]) if columns else t

    def split(batch: pa.Table) -> list[str]:
        return [
            "val" if int(i.split(":")[1]) % val_every == 0 else "train"
            for i in batch.column("id").to_pylist()
        ]

    return PrepareInput(batches=batches, columns=table.column_names, split=split, resolve=str)


def train_config(model: dict[str, Any], **train: Any) -> Any:
    from genloom.train.config import TrainConfig

    return TrainConfig(model=model, threads=1, log_interval=1, precision="fp32", **train)


def prepare(fam: Any, cfg: Any, table: pa.Table, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fam.prepare(prepare_input(table), cfg, out)
    return out


def train(
    fam: Any, cfg: Any, prepared: Path, out: Path, stop_after: int | None = None
) -> dict[str, Any] | None:
    """The one loop (``train_prepared``), as the train stage runs it; ``stop_after``: killed then."""
    from genloom.train.loop import train_prepared

    class Killed(Exception):
        pass

    out.mkdir(parents=True, exist_ok=True)
    for name in fam.model_files:
        (out / name).write_bytes((prepared / name).read_bytes())

    def progress(step: int, total: int | None, info: dict[str, Any]) -> None:
        if stop_after is not None and step > stop_after:
            raise Killed

    try:
        return train_prepared(cfg, prepared, out, progress)
    except Killed:
        return None


def class_means(pixels: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    lab = np.asarray(labels)
    return {k: pixels[lab == k].astype(np.float64).mean(0) for k in sorted(set(labels))}


def decode_all(table: pa.Table) -> np.ndarray:
    import io

    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in table.column("image").to_pylist()])
