"""A registered model version over a tiny records artifact, written the way the stages write them
(data shards + manifest, the prepare and train manifests with their ``input`` ingredients), without
training: the profile only reads the lineage and the records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from genloom.core.store import content_key
from genloom.pipeline import Pipeline
from tests.conftest import write_pipeline


def trained_model(
    folder: Path,
    columns: dict[str, list[Any]],
    model_type: str = "gpt",
    split: dict[str, Any] | None = None,
    shards: int = 2,
    promote: bool = True,
    catalog_url: str | None = None,
    chat: dict[str, Any] | None = None,
) -> tuple[Path, Pipeline, dict[str, Any]]:
    """(pipeline file, open pipeline, registered version) of a model "trained" on ``columns``
    (split over ``shards`` shards of the features stage), its catalog at ``catalog_url`` (default:
    the project's SQLite file)."""
    path = write_pipeline(folder, **({"catalog": {"url": catalog_url}} if catalog_url else {}))
    p = Pipeline.from_file(path)
    n = len(next(iter(columns.values())))
    table = pa.table({"id": [f"t:{i}" for i in range(n)], "source": ["t"] * n, "meta": ["{}"] * n, **columns})
    step = -(-n // shards)
    keys = []
    for i in range(shards):
        part = table.slice(i * step, step)
        key = content_key("shard", model_type, i, n)
        p.store.write_shard("features", key, part, [], [], {})
        keys.append(key)
    data_key = content_key("data", model_type, n, shards)
    p.store.write_manifest(
        "features", data_key, {"stage": "features", "key": data_key, "shards": keys, "rows": n}
    )
    p.catalog.add_artifact(data_key, "features", p.cfg.name, "dataset", "", "r", n, {}, [])
    prep_key = content_key("prepare", data_key)
    split = split if split is not None else {"val_fraction": 0.0, "seed": 0}
    p.store.write_manifest(
        "prepare",
        prep_key,
        {"stage": "prepare", "key": prep_key, "ingredients": {"input": data_key, "split": split}},
    )
    p.catalog.add_artifact(prep_key, "prepare", p.cfg.name, "prepared", "", "r", n, {}, [data_key])
    train_key = content_key("train", prep_key)
    train = {"model": {"type": model_type}, "chat": chat}
    p.store.write_manifest(
        "train",
        train_key,
        {
            "stage": "train",
            "key": train_key,
            "metrics": {},
            "ingredients": {"input": prep_key, "train": train},
        },
    )
    p.catalog.add_artifact(train_key, "train", p.cfg.name, "model", "", "r", None, {}, [prep_key])
    version = p.catalog.register_model(
        p.model_name, train_key, p.store.artifact_dir("train", train_key), {}, "r"
    )
    if promote:
        p.catalog.promote(p.model_name, version["version"])
        version = p.catalog.model_version(p.model_name, version["version"])
    return path, p, version
