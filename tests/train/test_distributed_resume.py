"""Exact resume under torchrun: `genloom run` with two gloo ranks, its whole process group killed
with SIGKILL after a checkpoint, then run again, ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tests.conftest import TINY_TRAIN, write_pipeline

from genloom.core.progress import Reporter
from genloom.pipeline import Pipeline
from genloom.train import checkpoint as ckpt_io

TRAIN = {
    **TINY_TRAIN,
    "max_steps": 24,
    "checkpoint_interval": 4,
    "eval_interval": 12,
    "log_interval": 1,
    "precision": "fp32",
    "distributed": {"nproc_per_node": 2},
}


def _cli(folder: Path, *args: str) -> subprocess.Popen[bytes]:
    """`genloom run --until train` in its own process group (to kill it whole); its errors in ``run.err``."""
    with open(folder / "run.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "genloom.cli", "run", "pipeline.yaml", "--until", "train", *args],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


class TrainSteps(Reporter):
    """The steps the train stage reports (every one, with log_interval 1)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def stage_advance(self, stage: str, done: int = 1, rows: int = 0, info: dict | None = None) -> None:
        if stage == "train" and info and "loss" in info:
            self.steps.append(int(info["step"]))


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (torchrun and its ranks, which torchrun starts in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _checkpoint_steps(out: Path) -> list[int]:
    return [int(p.name.split("_")[1]) for p in ckpt_io.complete_checkpoints(out)]


def _finished(out: Path) -> tuple[dict[str, object], list[dict[str, float]]]:
    """The final weights and the logged train losses of a finished model folder."""
    weights = load_file(str(out / "model.safetensors"))
    state = ckpt_io.read_state(ckpt_io.latest_checkpoint(out))
    return weights, [h for h in state["history"] if "loss" in h]


@pytest.mark.slow
def test_sigkill_of_the_process_group_resumes_from_the_last_checkpoint_exactly(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p", train=TRAIN)
    folder = path.parent

    # the reference: an uninterrupted run with two ranks
    summary = Pipeline.from_file(path).run(until="train")
    train = next(s for s in summary.stages if s.stage == "train")
    out = Path(Pipeline.from_file(path).store.artifact_dir("train", train.key))
    ref_weights, ref_losses = _finished(out)
    assert train.stats["world_size"] == 2 and train.stats["steps"] == 24

    # the same training from nothing (--force train deletes the folder first, the reference's
    # checkpoints of steps up to 24 with it), killed whole after its first checkpoint
    killed = _cli(folder, "--force", "train")
    deadline = time.time() + 180
    while time.time() < deadline and not 0 < max(_checkpoint_steps(out), default=24) < 24:
        assert killed.poll() is None, (folder / "run.err").read_text()
        time.sleep(0.05)
    ranks = _descendants(killed.pid)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    # torchrun dies with the group; its ranks (in sessions of their own) die with torchrun
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in ranks):
        time.sleep(0.1)
    assert len(ranks) >= 3 and not any(_alive(p) for p in ranks), "ranks outlived the kill"
    done = _checkpoint_steps(out)
    assert done and done[-1] < 24, "the kill came too late to test resume"
    assert not (out / "model.safetensors").exists()

    reporter = TrainSteps()
    resumed = Pipeline.from_file(path, reporter=reporter).run(until="train")
    status = {r.stage: r.status for r in resumed.stages}
    assert status["prepare"] == "cached" and status["train"] == "ran"
    # the loop reports every step (log_interval 1): the run went on from the last checkpoint, and
    # no finished step was trained again
    assert reporter.steps == list(range(done[-1] + 1, 25)), (done, reporter.steps)

    weights, losses = _finished(out)
    # exact: the batches of a step depend on (seed, step) only, the checkpoint holds the weights and
    # the optimizer state, and gloo's all-reduce of two ranks adds in the same order every run
    assert [h["step"] for h in losses] == [h["step"] for h in ref_losses] == list(range(1, 25))
    assert losses == ref_losses
    assert weights.keys() == ref_weights.keys()
    for name, tensor in weights.items():
        assert tensor.equal(ref_weights[name]), name


CHILD = (
    "import time\n"
    "from genloom.train.worker import _die_with_torchrun\n"
    "_die_with_torchrun()\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_rank_dies_with_its_torchrun_even_in_a_session_of_its_own() -> None:
    """The mechanism behind the test above, where a rank that outlived torchrun would go on writing
    checkpoints until its next progress line: torchrun starts each rank in its own session, so a
    kill -9 of genloom run's process group does not reach it; the parent-death signal does."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())  # the child writes to the same pipe
    try:
        assert parent.stdout.readline().strip() == "ready"  # past the prctl
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 30
        while time.time() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child), "the rank outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
