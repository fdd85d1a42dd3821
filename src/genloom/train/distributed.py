"""Several processes under ``torchrun``: each trains on its own batches, DDP averages the gradients."""

from __future__ import annotations

import os

import torch


def ddp_init(device: torch.device) -> tuple[int, int]:
    """(rank, world_size); joins the process group that torchrun describes in its environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's protocol, not a user setting
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()
