"""`genloom run` with ``train.distributed``: the train stage under torchrun, data stages once; two
"nodes" on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import TINY_TRAIN, write_pipeline

from genloom.core.errors import ConfigError
from genloom.pipeline import Pipeline
from genloom.train import checkpoint as ckpt_io
from genloom.train.launch import join_command

TRAIN = {**TINY_TRAIN, "max_steps": 12, "eval_interval": 6, "log_interval": 2, "precision": "fp32"}


def _run(path: Path, overrides: list[str]) -> tuple[dict[str, str], list[dict[str, float]], dict]:
    pipe = Pipeline.from_file(path, overrides=overrides)
    summary = pipe.run(until="train")
    assert summary.status == "succeeded"
    statuses = {s.stage: s.status for s in summary.stages}
    train = next(s for s in summary.stages if s.stage == "train")
    out = Path(pipe.store.artifact_dir("train", train.key))
    state = ckpt_io.read_state(ckpt_io.latest_checkpoint(out))
    return statuses, [h for h in state["history"] if "loss" in h], train.stats


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, float]], dict]:
    """The reference: one process with 2 micro-batches of 4 windows per step (8 windows a step)."""
    path = write_pipeline(tmp_path_factory.mktemp("dist") / "proj", train=TRAIN)
    _, single, single_stats = _run(path, ["train.grad_accum=2"])
    return path, single, single_stats


def _same_curve(ddp: list[dict[str, float]], single: list[dict[str, float]]) -> None:
    """The same loss curve: DDP's all-reduced gradient mean equals the 2-micro-batch mean up to
    float rounding (tolerance 1e-4 on losses near 6 nats)."""
    assert [h["step"] for h in ddp] == [h["step"] for h in single] == list(range(2, 13, 2))
    for a, b in zip(ddp, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), (ddp, single)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    one_process: tuple[Path, list[dict[str, float]], dict],
) -> None:
    path, single, single_stats = one_process
    # two ranks: 4 windows each per step
    statuses, ddp, ddp_stats = _run(path, ["train.distributed.nproc_per_node=2"])
    # the data stages ran once (the first run): the distributed run found them cached
    assert all(v in ("cached", "skipped") for k, v in statuses.items() if k != "train"), statuses
    assert statuses["train"] == "ran"
    assert ddp_stats["world_size"] == 2 and single_stats["world_size"] == 1
    assert ddp_stats["tokens"] == single_stats["tokens"]  # the same global batch
    _same_curve(ddp, single)
    assert ddp_stats["val_loss"] == pytest.approx(single_stats["val_loss"], abs=1e-4)
    assert not list(path.parent.rglob("spec.json"))  # the launch spec lived in a temporary folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_process_with_the_same_global_batch(
    one_process: tuple[Path, list[dict[str, float]], dict], tmp_path: Path
) -> None:
    """Two "machines" as two torchrun launches on 127.0.0.1: node 0 is genloom run, node 1 joins with
    the command of the docs, started in a folder without the pipeline file (it gets the launch spec
    from rank 0 and reads the store folder, which both see at the same path here)."""
    path, single, single_stats = one_process
    overrides = [
        "train.distributed.nproc_per_node=1",
        "train.distributed.nnodes=2",
        f"train.distributed.rdzv_endpoint=127.0.0.1:{_free_port()}",
        "train.distributed.shared_filesystem=true",
    ]
    cfg = Pipeline.from_file(path, overrides=overrides).cfg.train
    node1_dir = tmp_path / "node1"
    node1_dir.mkdir()
    cmd = join_command(cfg, node_rank=1)
    assert cmd[0] == "torchrun" and "--node-rank=1" in cmd and "--rdzv-backend=static" in cmd
    with open(tmp_path / "node1.log", "w") as log:
        node1 = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *cmd[1:]], cwd=node1_dir, stdout=log, stderr=log
        )
        try:
            statuses, ddp, ddp_stats = _run(path, overrides)
            assert node1.wait(timeout=120) == 0, (tmp_path / "node1.log").read_text()[-3000:]
        finally:
            if node1.poll() is None:
                node1.kill()
                node1.wait()
    assert all(v in ("cached", "skipped") for k, v in statuses.items() if k != "train"), statuses
    assert ddp_stats["world_size"] == 2 and ddp_stats["tokens"] == single_stats["tokens"]
    _same_curve(ddp, single)
    assert ddp_stats["val_loss"] == pytest.approx(single_stats["val_loss"], abs=1e-4)
    assert not list(node1_dir.iterdir())  # node 1 wrote nothing of its own


def test_several_nodes_need_a_store_every_node_mounts(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "proj", train=TRAIN)
    nodes = ["train.distributed.nnodes=2", "train.distributed.rdzv_endpoint=127.0.0.1:29400"]
    with pytest.raises(ConfigError, match="train.distributed.shared_filesystem: .*same path on every node"):
        Pipeline.from_file(path, overrides=nodes).run(until="train")  # when planning
    assert not (tmp_path / "proj" / ".genloom" / "artifacts" / "artifacts").exists()
    with pytest.raises(ConfigError, match="store.path: .*cannot train from the object store"):
        Pipeline.from_file(path, overrides=[*nodes, "store.path=memory://genloom-test"]).plan()
    with pytest.raises(ConfigError, match="nnodes: 2 needs rdzv_endpoint"):
        Pipeline.from_file(path, overrides=["train.distributed.nnodes=2"])


def test_distributed_refuses_a_family_without_a_ddp_path(tmp_path: Path) -> None:
    from tests.test_tabular_e2e import write_pipeline as write_table_pipeline
    from tests.test_tabular_e2e import write_table

    from genloom.core.errors import ConfigError

    (tmp_path / "t").mkdir()
    write_table(tmp_path / "t" / "customers.csv", rows=200)
    path = write_table_pipeline(tmp_path / "t", "tabular_gan", epochs=1)
    pipe = Pipeline.from_file(path, overrides=["train.distributed.nproc_per_node=2"])
    with pytest.raises(ConfigError, match="train.distributed does not support tabular_gan"):
        pipe.run(until="train")  # when planning, before any stage runs
    assert not (tmp_path / "t" / ".genloom" / "artifacts" / "artifacts").exists()


def test_a_worker_refuses_a_torchrun_line_that_does_not_match_the_config(tmp_path: Path) -> None:
    """A node started with another --nproc-per-node would change the global batch: its ranks stop
    (and so does the whole run) with what to pass instead."""
    cfg = {"distributed": {"nproc_per_node": 1, "nnodes": 2, "rdzv_endpoint": "127.0.0.1:29400"}}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": cfg, "prepared": "", "out": "", "metrics": "", "nnodes": 2}))
    env = {**os.environ, "WORLD_SIZE": "3", "RANK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "genloom.train.worker", str(spec)], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "torchrun started 3 processes in all, but train.distributed asks for 2 node(s) x 1" in proc.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "WORLD_SIZE", "RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "genloom.train.worker"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "without a spec joins a multi-node run" in proc.stderr
