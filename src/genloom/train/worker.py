"""One rank of ``train.distributed``: ``torchrun ... -m genloom.train.worker [SPEC]`` (see ``launch``).

Node 0's ranks get the launch spec (train config, prepared data, model folder) as their argument;
the ranks of the other nodes are started without one and get it from rank 0 through torchrun's
rendezvous store, so a joining machine needs neither the pipeline file nor the data stages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from genloom.core.errors import GenloomError
from genloom.train.config import TrainConfig
from genloom.train.launch import PROGRESS

#: the key of the launch spec in torchrun's rendezvous store
SPEC_KEY = "genloom/launch-spec"
#: how long a rank of another node waits for rank 0 to publish the spec
SPEC_TIMEOUT = timedelta(minutes=10)


def main(spec_path: str | None) -> None:
    """Train this rank's share; rank 0 writes the metrics file that ``launch`` reads."""
    _die_with_torchrun()
    from genloom.train.loop import train_prepared

    rank = int(os.environ.get("RANK", "0"))
    spec = json.loads(Path(spec_path).read_text()) if spec_path else _spec_from_rank0()
    if spec_path and rank == 0 and spec.get("nnodes", 1) > 1:
        _store().set(SPEC_KEY, json.dumps(spec))
    cfg = TrainConfig.model_validate(spec["config"])
    world, dist = int(os.environ.get("WORLD_SIZE", "1")), cfg.distributed
    if dist is not None and world != dist.world_size:
        raise GenloomError(
            f"torchrun started {world} processes in all, but train.distributed asks for"
            f" {dist.nnodes} node(s) x {dist.nproc_per_node}: give every node's torchrun"
            f" --nnodes={dist.nnodes} --nproc-per-node={dist.nproc_per_node}"
        )
    for what in ("prepared", "out"):
        if not Path(spec[what]).is_dir():
            raise GenloomError(
                f"the {'prepared data' if what == 'prepared' else 'model'} folder {spec[what]} of node 0"
                " is not on this machine: train.distributed with nnodes > 1 needs the store on a"
                " filesystem that every node mounts at the same path"
            )

    def progress(step: int, total: int | None, info: dict[str, Any]) -> None:
        msg = {"step": step, "total": total, "info": info}
        print(PROGRESS + json.dumps(msg, default=float), flush=True)

    metrics = train_prepared(cfg, Path(spec["prepared"]), Path(spec["out"]), progress)
    if rank == 0:
        tmp = Path(spec["metrics"] + ".tmp")
        tmp.write_text(json.dumps(metrics, default=float))
        tmp.replace(spec["metrics"])


def _store() -> Any:
    """A client of torchrun's rendezvous store (node 0's agent hosts it at ``rdzv_endpoint``)."""
    from torch.distributed import TCPStore

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return TCPStore(host, port, is_master=False, timeout=SPEC_TIMEOUT)


def _spec_from_rank0() -> dict[str, Any]:
    """The launch spec that node 0's rank 0 published (a rank of another node has none of its own)."""
    if "MASTER_ADDR" not in os.environ:
        raise GenloomError(
            "genloom.train.worker without a spec joins a multi-node run: start it with torchrun"
            " --nnodes=N --node-rank=K --rdzv-backend=static --rdzv-endpoint=HOST:PORT (docs/models.md)"
        )
    return dict(json.loads(_store().get(SPEC_KEY)))


def _die_with_torchrun() -> None:
    """torchrun starts each rank in a session of its own, so a kill -9 of genloom run's process
    group (or of torchrun) would leave the ranks training and writing checkpoints beside a resumed
    run's: a rank gets SIGKILL when torchrun dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() == 1:  # torchrun died before the prctl took effect
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
