"""The plan: every choice the training loop makes (model shape, batch, learning rate, precision,
steps), resolved once from the config, the data and the machine, and saved with every checkpoint
so that a resumed run follows it exactly."""

from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.nn as nn

from genloom.models.base import TrainData, TrainPlan, family
from genloom.train.config import TrainConfig, parse_duration
from genloom.train.precision import (
    MachineProbe,
    ProbeSource,
    choose_precision,
    dtype_of,
    fastest_precision,
    probe_machine,
)


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_threads(requested: int | None) -> int:
    """Requested threads, else the cores minus those other processes keep busy (1-minute load average)."""
    if requested:
        return requested
    cores = os.cpu_count() or 1
    with contextlib.suppress(OSError):
        busy = os.getloadavg()[0]
        return max(1, min(cores, round(cores - busy + 0.3)))
    return cores


def resolve_precisions(cfg: TrainConfig, device: torch.device, probe: ProbeSource) -> dict[str, str]:
    """The plan's precisions from the machine probe: ``precision`` (autocast; also the compute
    dtype of 4-bit quantized layers) and, for Muon, ``muon_precision`` (its Newton-Schulz matmuls,
    bf16 only where bf16 is measured fast: AVX2-only CPUs emulate it, over 50x slower than fp32)."""
    out = {"precision": choose_precision(cfg.precision, device, probe)}
    if cfg.optimizer == "muon":
        out["muon_precision"] = fastest_precision(device, probe)
    return out


def lazy_probe(probe: MachineProbe | None) -> ProbeSource:
    """A probe source that measures (or reads the cache) at most once, and only when asked."""
    found: list[MachineProbe] = [probe] if probe is not None else []

    def get() -> MachineProbe:
        if not found:
            found.append(probe_machine())
        return found[0]

    return get


def make_plan(
    cfg: TrainConfig,
    data: TrainData,
    device: torch.device,
    probe: ProbeSource | None = None,
) -> TrainPlan:
    """Resolves the config's automatic choices (steps come later, for a time budget).

    ``probe`` supplies the machine's measured matmul speeds for the precision choices (default:
    ``probe_machine()``, cached per machine); it is called only where a choice needs it. The
    family decides its shape and may decide the batch, learning rate and steps (a table family
    counts epochs); what it leaves open is chosen here for a token stream.
    """
    budget = parse_duration(cfg.time_budget) if cfg.time_budget else None
    fam = family(cfg.model.type)
    entries, width = fam.plan(cfg.model, data, budget, device)
    common = {k: entries.pop(k) for k in list(entries) if k in TrainPlan._COMMON}
    plan = TrainPlan(type=cfg.model.type, model=entries, block_size=int(common.pop("block_size", 1)))
    block = plan.block_size
    # tokens per micro-batch: small on CPU (more, cheaper steps learn more per token), big on GPUs
    plan.batch_size = (
        cfg.batch_size
        or common.pop("batch_size", 0)
        or max(4, (2048 if device.type == "cpu" else 16384) // block)
    )
    common.pop("batch_size", None)
    plan.lr = cfg.lr or common.pop("lr", 0.0) or fam.default_lr(cfg.model, width)
    common.pop("lr", None)
    plan.beta2 = cfg.beta2 or (0.99 if plan.batch_size * block * cfg.grad_accum < 8192 else 0.95)
    for k, v in resolve_precisions(cfg, device, probe or lazy_probe(None)).items():
        setattr(plan, k, v)
    epochs = plan.model.get("epochs")
    if cfg.max_steps is None and isinstance(epochs, int | float):  # a family that counts passes over its rows
        rows_per_step = plan.batch_size * cfg.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
        plan.max_steps = max(1, math.ceil(epochs * data.n_train / rows_per_step))
    else:
        plan.max_steps = cfg.max_steps or common.pop("max_steps", None)
    if cfg.warmup_steps is None and "warmup_steps" in common:
        plan.warmup_steps = common.pop("warmup_steps")
    if plan.max_steps is None and budget is None:
        tokens_per_step = plan.batch_size * cfg.grad_accum * block
        plan.max_steps = int(min(20000, max(50, data.n_train // tokens_per_step)))
    if plan.max_steps is not None:
        auto_dropout(plan, cfg, data.n_train)
    return plan


def auto_dropout(plan: TrainPlan, cfg: TrainConfig, n_train: int) -> None:
    """Lets the family set its regularisation from how often the schedule goes over the data."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    assert plan.max_steps is not None
    units = plan.max_steps * plan.batch_size * plan.block_size * cfg.grad_accum * world
    family(plan.type).set_dropout(plan, cfg.model, units / max(1, n_train))


def finish_plan(plan: TrainPlan, cfg: TrainConfig) -> TrainPlan:
    """Warmup, eval and checkpoint intervals, once the number of steps is known."""
    n = plan.max_steps
    assert n is not None
    if plan.warmup_steps is None:
        plan.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(200, max(1, n // 20))
    plan.eval_interval = cfg.eval_interval or max(1, n // 10)
    plan.checkpoint_interval = cfg.checkpoint_interval or plan.eval_interval
    return plan


def lr_at(step: int, plan: TrainPlan, cfg: TrainConfig) -> float:
    """Learning rate of ``step``: linear warmup, then cosine / wsd / constant down to min_lr_ratio * lr
    (the family's ``schedule`` entry, where it sets one, else ``train.schedule``)."""
    lr, n, warm = plan.lr, plan.max_steps or 1, plan.warmup_steps or 0
    if step < warm:
        return lr * (step + 1) / warm
    min_lr = lr * cfg.min_lr_ratio
    schedule = plan.model.get("schedule", cfg.schedule)
    if schedule == "constant":
        return lr
    if schedule == "wsd":
        decay_start = n - int(cfg.decay_fraction * n)
        if step < decay_start:
            return lr
        return lr + (min_lr - lr) * (step - decay_start) / max(1, n - decay_start)
    progress = (step - warm) / max(1, n - warm)
    return min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (lr - min_lr)


# ---------------------------------------------------------------------------------------------
# models


def build_model(plan: TrainPlan, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """The model of a plan, on ``device``."""
    return family(plan.type).build(plan, cfg.model, device, dtype_of(plan.precision))
