"""``train.distributed``: the train stage in several processes under ``torchrun``.

``genloom run`` runs the data stages once, then launches ``torchrun`` with ``genloom.train.worker``:
``--standalone`` on one machine; with ``nnodes > 1``, as node 0 of a static rendezvous at
``rdzv_endpoint``, which each other machine joins with ``join_command``'s torchrun line (the
static rendezvous pins global rank 0 to node 0, the machine that reads rank 0's metrics and
progress; torchrun's c10d rendezvous would rank the nodes by their host names). Every rank opens
the prepared data and trains its own slice of each step's batches (``TrainData.batches(rank,
world)``), DDP averages the gradients, and rank 0 writes the checkpoints and the model, exactly as
one process does; the ranks of the other nodes get the launch spec from rank 0 through torchrun's
rendezvous store and read the same folders, which is why several machines need a store that every
node mounts at the same path. A rerun after a kill resumes from the last checkpoint, as without
torchrun. Rank 0's progress comes back on its standard output as JSON lines, which this module
hands to the run's reporter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genloom.core.errors import GenloomError
from genloom.train.config import TrainConfig

#: the prefix of a progress line on rank 0's standard output
PROGRESS = "\x1egenloom-progress "
#: what torchrun and its workers print, in the model folder
LOG_NAME = "torchrun.log"
#: the last line of a Python traceback in that log: the exception a rank raised
_RAISED = re.compile(r"^[\w.]+(Error|Exception): ")


def launch(
    cfg: TrainConfig,
    prepared: Path,
    out: Path,
    progress: Callable[[int, int | None, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` on ``prepared`` into ``out`` with ``cfg.distributed``'s processes (this machine's,
    as node 0 when there are several nodes); returns rank 0's metrics. Raises with the tail of
    torchrun's log when a rank fails."""
    dist = cfg.distributed
    assert dist is not None
    with tempfile.TemporaryDirectory(prefix="genloom-torchrun-") as tmp:
        spec = Path(tmp) / "spec.json"
        metrics_file = Path(tmp) / "metrics.json"
        spec.write_text(
            json.dumps(
                {
                    "config": cfg.model_dump(mode="json"),
                    "prepared": str(prepared),
                    "out": str(out),
                    "metrics": str(metrics_file),
                    "nnodes": dist.nnodes,
                }
            )
        )
        log_path = out / LOG_NAME
        cmd = [*torchrun_command(cfg, node_rank=0), str(spec)]
        with open(log_path, "w") as log:
            if dist.nnodes > 1:
                others = "\n".join(
                    f"  node {k}: {' '.join(join_command(cfg, k))}" for k in range(1, dist.nnodes)
                )
                log.write(f"node 0 of {dist.nnodes}; on each other node, run:\n{others}\n")
                log.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=_die_with_parent,
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith(PROGRESS) and progress is not None:
                        msg = json.loads(line[len(PROGRESS) :])
                        progress(msg["step"], msg["total"], msg["info"])
                    elif not line.startswith(PROGRESS):
                        log.write(line)
                rc = proc.wait()
            except BaseException:  # Ctrl-C or an error here: stop the ranks before leaving
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                if proc.poll() is None:
                    proc.kill()
                raise
        if rc != 0 or not metrics_file.exists():
            lines = log_path.read_text(errors="replace").splitlines(keepends=True)
            raised = [ln for ln in lines if _RAISED.match(ln) and "ChildFailedError" not in ln]
            cause = f"; a rank raised {raised[0].strip()}" if raised else ""
            raise GenloomError(
                f"distributed training (torchrun, {dist.world_size} processes on {dist.nnodes} node(s))"
                f" failed with exit code {rc}{cause}; "
                f"the full log is {log_path}; its end:\n{''.join(lines[-25:])}"
            )
        return dict(json.loads(metrics_file.read_text()))


def torchrun_command(cfg: TrainConfig, node_rank: int) -> list[str]:
    """The torchrun command line of node ``node_rank`` (without node 0's spec argument)."""
    dist = cfg.distributed
    assert dist is not None
    if dist.nnodes == 1:
        where = ["--standalone"]
    else:
        where = [
            f"--nnodes={dist.nnodes}",
            f"--node-rank={node_rank}",
            "--rdzv-backend=static",
            f"--rdzv-endpoint={dist.rdzv_endpoint}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        f"--nproc-per-node={dist.nproc_per_node}",
        "-m",
        "genloom.train.worker",
    ]


def join_command(cfg: TrainConfig, node_rank: int) -> list[str]:
    """What node ``node_rank`` (1..nnodes-1) runs to join node 0's training: ``torchrun`` with the
    worker and no spec (it comes from rank 0); ``torchrun`` is ``python -m torch.distributed.run``."""
    return ["torchrun", *torchrun_command(cfg, node_rank)[3:]]


def _die_with_parent() -> None:
    """torchrun gets SIGTERM (and stops its ranks) when genloom run dies, even by kill -9, so a
    resumed run never meets ranks of the old one still writing checkpoints (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
