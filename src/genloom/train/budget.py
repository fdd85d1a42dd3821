"""A time budget (``train.time_budget``) turned into a number of steps: a first estimate from a
few timed throwaway steps, then re-sized by the loop from real steps early in warmup (a 2-core VM
measured here ran its first 15 seconds 20% faster than the sustained pace)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from genloom.models.base import Batches, ModelFamily, TrainData, TrainPlan
from genloom.models.text import autocast
from genloom.train.optim import build_optimizer
from genloom.train.precision import dtype_of

if TYPE_CHECKING:
    from genloom.train.config import TrainConfig


def steps_for_budget(
    fam: ModelFamily,
    model: nn.Module,
    plan: TrainPlan,
    cfg: TrainConfig,
    data: TrainData,
    device: torch.device,
    budget_s: float,
) -> int:
    """How many steps fit in ``budget_s``: a few timed steps on a throwaway optimizer of the same kind.

    What building that optimizer takes is charged to the budget too: torch's first optimizer of a
    process imports its compiler (``torch._dynamo``), measured here at 2 to 8 seconds."""
    t_setup = time.monotonic()
    opt = build_optimizer(
        model,
        cfg.optimizer,
        1e-9,
        0.0,
        (0.9, 0.99),
        fused=device.type in ("cpu", "cuda"),
        ns_dtype=dtype_of(plan.muon_precision or "bf16"),
    )
    batches: Batches = data.batches(plan, cfg.seed, 0, 1, cfg.grad_accum)
    budget_s -= time.monotonic() - t_setup
    times = []
    for i in range(6):
        t0 = time.monotonic()
        if fam.custom_step:
            fam.train_step(model, batches, opt, plan, i, cfg.model)
        else:
            for micro in range(cfg.grad_accum):
                tensors = [t.to(device) for t in batches.batch(i, micro)]
                with autocast(plan.precision, device):
                    _, loss = model(*tensors)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.monotonic() - t0)
    step_s = float(np.median(times[2:]))
    budget_s -= sum(times)
    # evals cost about a third of a training step per token; keep 10% for them and the final save
    return max(10, int(0.9 * budget_s / step_s))


def resize_for_budget(
    plan: TrainPlan,
    cfg: TrainConfig,
    budget_s: float,
    elapsed_s: float,
    step: int,
    step_s: float,
    val_tokens: int,
) -> int:
    """The schedule's length from the step time measured on real steps: the budget minus what has
    been spent, the evaluations (about a third of a training step per token, over the validation
    tokens there are, at most ``eval_tokens``) and 4% for the save."""
    assert plan.max_steps is not None and plan.eval_interval
    tokens_per_step = plan.batch_size * plan.block_size * cfg.grad_accum
    evals = plan.max_steps // plan.eval_interval + 1
    eval_s = evals * min(cfg.eval_tokens, val_tokens) / tokens_per_step * step_s / 3
    n = step + max(1, int((0.96 * budget_s - elapsed_s - eval_s) / step_s))
    if plan.first_estimate_steps is None:
        plan.first_estimate_steps = plan.max_steps
    plan.max_steps, plan.measured_step_s = n, step_s
    if cfg.eval_interval is None:
        plan.eval_interval = max(1, n // 10)
    if cfg.checkpoint_interval is None:
        plan.checkpoint_interval = plan.eval_interval
    return n
