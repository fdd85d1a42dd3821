"""The one training loop for every model family: AdamW (or Muon), warmup + cosine or WSD schedule,
accumulation, clipping, evaluation, early stopping, checkpoints, exact resume, DDP, progress.

``train_prepared()`` is what the pipeline's train stage calls: the family opens its prepared data
(``ModelFamily.open_data``) and the loop resolves the config into a ``TrainPlan`` (model shape,
batch, steps, learning rate), saved with every checkpoint so that a resumed run follows the same
plan exactly; the batch of a step depends only on (seed, step), so resuming after ``kill -9``
reproduces the uninterrupted loss curve. A family changes only its step: by default the loop runs
``model(*batch) -> (output, loss)`` with accumulation and clipping; a family with ``custom_step``
(a GAN's critic and generator updates) does the whole step in ``train_step``. Under ``torchrun``
each process trains on its own batches and DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genloom.core.errors import ConfigError
from genloom.models.base import TrainData, TrainPlan, family
from genloom.models.text import TextData, autocast
from genloom.train import checkpoint as ckpt_io
from genloom.train.budget import resize_for_budget, steps_for_budget
from genloom.train.config import TrainConfig, parse_duration
from genloom.train.distributed import ddp_init
from genloom.train.ema import WeightEMA
from genloom.train.optim import build_optimizer
from genloom.train.plan import (
    auto_dropout,
    build_model,
    finish_plan,
    lazy_probe,
    lr_at,
    make_plan,
    pick_device,
    pick_threads,
    resolve_precisions,
)
from genloom.train.precision import MachineProbe, dtype_of

Progress = Callable[[int, int | None, dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------
# the loop


def train(
    cfg: TrainConfig,
    train_bin: Path,
    val_bin: Path,
    out_dir: Path,
    progress: Progress | None = None,
    probe: MachineProbe | None = None,
) -> dict[str, Any]:
    """Trains (or resumes training) a text model of ``cfg`` on packed token files; writes the model
    into ``out_dir`` (which holds the tokenizer, for a family that trains one).

    ``probe``: the machine's measured matmul speeds, which decide the precisions (default:
    ``probe_machine()``, measured once per machine and cached in the user's cache folder).
    """
    vocab = family(cfg.model.type).vocab_size(Path(out_dir))
    return train_on(cfg, TextData(Path(train_bin), Path(val_bin), vocab), out_dir, progress, probe)


def train_prepared(
    cfg: TrainConfig,
    prepared_dir: Path,
    out_dir: Path,
    progress: Progress | None = None,
    probe: MachineProbe | None = None,
) -> dict[str, Any]:
    """Trains (or resumes) the model of ``cfg`` on what its family's ``prepare`` wrote in ``prepared_dir``."""
    data = family(cfg.model.type).open_data(Path(prepared_dir), Path(out_dir))
    return train_on(cfg, data, out_dir, progress, probe)


def train_on(
    cfg: TrainConfig,
    data: TrainData,
    out_dir: Path,
    progress: Progress | None = None,
    probe: MachineProbe | None = None,
) -> dict[str, Any]:
    """The loop itself, over a family's training data."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    device = pick_device()
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    rank, world = ddp_init(device)
    threads = pick_threads(cfg.threads)
    if world > 1 and device.type == "cpu" and cfg.threads is None:
        threads = max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", world)))  # share the cores
    torch.set_num_threads(threads)

    fam = family(cfg.model.type)
    latest = ckpt_io.latest_checkpoint(out_dir)
    resumed_state = ckpt_io.read_state(latest) if latest else None
    probe_source = lazy_probe(probe)
    if resumed_state:
        # precisions follow this machine, not the one that started the run: a checkpoint moved to
        # a CPU without fast bf16 would otherwise train in emulated bf16 (the same machine
        # resolves the same values from its cached probe, so resuming stays exact)
        plan = TrainPlan.from_dict(resumed_state["plan"])
        for k, v in resolve_precisions(cfg, device, probe_source).items():
            setattr(plan, k, v)
    else:
        plan = make_plan(cfg, data, device, probe_source)
    torch.manual_seed(cfg.seed)
    model = build_model(plan, cfg, device)

    sized_here = plan.max_steps is None
    if sized_here:  # time budget: measure the step time, then size the schedule
        left = parse_duration(cfg.time_budget or "5m") - (time.monotonic() - t_start)
        plan.max_steps = steps_for_budget(fam, model, plan, cfg, data, device, left)
        if world > 1:  # every rank must run the same number of steps: rank 0 decides
            import torch.distributed as dist

            n = torch.tensor([plan.max_steps], device=device)
            dist.broadcast(n, src=0)
            plan.max_steps = int(n.item())
        auto_dropout(plan, cfg, data.n_train)
        torch.manual_seed(cfg.seed)
        model = build_model(plan, cfg, device)
    plan = finish_plan(plan, cfg) if plan.eval_interval is None else plan
    assert plan.max_steps is not None and plan.eval_interval and plan.checkpoint_interval

    opt = _optimizer(model, plan, cfg, device)
    step, tokens_seen, best_val, bad_evals, elapsed_before = 0, 0, float("inf"), 0, 0.0
    history: list[dict[str, Any]] = []
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    if latest is not None:
        st = ckpt_io.load_checkpoint(latest, model, opt)
        if ema is not None:
            ema.load_state_tensors(st["extra"])
        fam.load_checkpoint_state(
            model, {k[7:]: v for k, v in st["extra"].items() if k.startswith("family.")}
        )
        step, tokens_seen, best_val = st["step"], st["tokens"], st["best_val"]
        bad_evals, elapsed_before, history = st["bad_evals"], st["elapsed_s"], st["history"]

    train_model: nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)  # type: ignore[assignment]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = data.batches(plan, cfg.seed, rank, world, cfg.grad_accum)
    tokens_per_step = plan.batch_size * plan.block_size * cfg.grad_accum * world
    n_steps = plan.max_steps
    budget = parse_duration(cfg.time_budget) if cfg.time_budget else None
    unit = data.unit  # "tokens" or "rows": the names of the figures the loop reports

    def run_eval() -> float:
        with ema.swapped() if ema is not None else contextlib.nullcontext():
            return data.val_loss(model, plan, cfg.eval_tokens, device)

    def checkpoint(step_done: int) -> None:
        if rank == 0:
            state = {
                "tokens": tokens_seen,
                "best_val": best_val,
                "bad_evals": bad_evals,
                "plan": plan.to_dict(),
                "elapsed_s": elapsed_before + time.monotonic() - t_start,
                "history": history,
            }
            extra = ema.state_tensors() if ema is not None else {}
            extra.update(
                {f"family.{k}": v.detach().cpu().contiguous() for k, v in fam.checkpoint_state(model).items()}
            )
            ckpt_io.save_checkpoint(out_dir, model, opt, step_done, state, extra or None)

    # a budget's first estimate comes from 6 cold steps: re-measure on real steps early in warmup,
    # then once more over the steps up to the first evaluation or checkpoint (so the plan a
    # checkpoint saves is final): a 2-core VM measured here ran its first 15 seconds 20% faster than
    # the sustained pace, and a schedule sized on steps 10-40 alone overran 5 minutes by 47 s
    calibrate = (10, 40) if sized_here and budget is not None else None
    if calibrate and min(plan.eval_interval, plan.checkpoint_interval, n_steps // 4) <= calibrate[1]:
        calibrate = None
    measured_twice = False
    t_cal = 0.0
    model.train()
    t_last, tok_last = time.monotonic(), tokens_seen
    loss_val = float("nan")
    stopped = ""
    while step < n_steps:
        lr = lr_at(step, plan, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        parts: dict[str, float] = {}
        if fam.custom_step:  # the family does its own backward passes and updates (a GAN)
            parts = fam.train_step(train_model, batches, opt, plan, step, cfg.model)
            loss_sum = float(parts["loss"])
        else:
            loss_sum = 0.0
            for micro in range(cfg.grad_accum):
                tensors = [t.to(device) for t in batches.batch(step, micro)]
                sync = (
                    contextlib.nullcontext()
                    if world == 1 or micro == cfg.grad_accum - 1
                    else train_model.no_sync()
                )  # type: ignore[operator]
                with sync:  # DDP: all-reduce the gradients only after the last micro-batch
                    with autocast(plan.precision, device):
                        _, loss = train_model(*tensors)
                        loss = loss / cfg.grad_accum
                    loss.backward()
                loss_sum += float(loss.detach())
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        step += 1
        tokens_seen += tokens_per_step
        if calibrate is not None and step == calibrate[0]:
            t_cal = time.monotonic()
        elif calibrate is not None and step == calibrate[1]:
            step_s = (time.monotonic() - t_cal) / (calibrate[1] - calibrate[0])
            n_steps = resize_for_budget(
                plan, cfg, budget or 0.0, time.monotonic() - t_start, step, step_s, data.n_val
            )
            if world > 1:  # every rank must run the same number of steps: rank 0 decides
                import torch.distributed as dist

                n = torch.tensor([n_steps], device=device)
                dist.broadcast(n, src=0)
                n_steps = plan.max_steps = int(n.item())
            assert plan.eval_interval and plan.checkpoint_interval
            second = min(plan.eval_interval, plan.checkpoint_interval, n_steps // 4) - 1
            calibrate = (step, second) if not measured_twice and second - step >= 50 else None
            measured_twice, t_cal = True, time.monotonic()
        if world > 1 and (step % cfg.log_interval == 0 or step == n_steps):
            import torch.distributed as dist  # the loss of the global batch, not of rank 0's slice

            t = torch.tensor([loss_sum], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            loss_sum = float(t.item()) / world
        loss_val = loss_sum
        if step % cfg.log_interval == 0:
            history.append({"step": step, "loss": round(loss_sum, 6)} | _rounded(parts))
        if not math.isfinite(loss_sum):
            raise ConfigError(
                f"the loss became {loss_sum} at step {step}", path="train.lr", hint="lower the learning rate"
            )

        info: dict[str, Any] = {}
        if step % plan.eval_interval == 0 or step == n_steps:
            val = run_eval()
            info["val_loss"] = val
            history.append({"step": step, "val_loss": round(val, 6)})
            if val < best_val - 1e-4:
                best_val, bad_evals = val, 0
                if cfg.early_stopping_patience and rank == 0:
                    with ema.swapped() if ema is not None else contextlib.nullcontext():
                        _save_weights(model, out_dir / "best.safetensors")
            else:
                bad_evals += 1
                if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                    stopped = "early_stopping"
        if step % cfg.log_interval == 0 or info or step == n_steps:
            now = time.monotonic()
            tps = (tokens_seen - tok_last) / max(1e-9, now - t_last)
            t_last, tok_last = now, tokens_seen
            info.update(parts)
            info.update(loss=loss_sum, lr=lr, eta_s=(n_steps - step) * tokens_per_step / max(tps, 1e-9))
            # "rows" is the reporters' own field (rows a stage wrote): rows trained on get their own name
            info[f"{unit}_per_s"], info[unit if unit != "rows" else "rows_trained"] = tps, tokens_seen
            if progress is not None and rank == 0:
                progress(step, n_steps, info)
        if step % plan.checkpoint_interval == 0 and step < n_steps and not stopped:
            checkpoint(step)
        if budget is not None:
            over = elapsed_before + time.monotonic() - t_start > 1.5 * budget
            if (
                world > 1
            ):  # ranks' clocks differ: rank 0 decides, or one rank would wait for the others forever
                import torch.distributed as dist

                flag = torch.tensor([int(over)], device=device)
                dist.broadcast(flag, src=0)
                over = bool(flag.item())
            if over:
                stopped = "time_budget"  # the machine got much slower than measured: stop rather than overrun
        if stopped:
            break

    if stopped == "early_stopping" and (out_dir / "best.safetensors").exists():
        from safetensors.torch import load_file

        ckpt_io.load_trainable_state(model, load_file(str(out_dir / "best.safetensors")))
        ema = None  # the best weights were saved averaged
    if ema is not None:  # from here on the model is the average
        ema.copy_to_model()
        ema = None
    final_val = run_eval()
    wall = elapsed_before + time.monotonic() - t_start
    metrics: dict[str, Any] = {
        "val_loss": final_val,
        "best_val_loss": min(best_val, final_val),
        "train_loss": loss_val,
        "steps": step,
        "max_steps": n_steps,
        unit: tokens_seen,
        "wall_s": wall,
        f"{unit}_per_s": tokens_seen / max(wall, 1e-9),
        "stopped": stopped or "max_steps",
        "precision": plan.precision,
        **({"muon_precision": plan.muon_precision} if plan.muon_precision else {}),
        "threads": threads,
        "world_size": world,
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
    }
    metrics.update(data.final_metrics(final_val))
    if rank == 0:
        checkpoint(step)  # before save_model, which may merge LoRA adapters into the weights
        save_model(model, plan, cfg, out_dir, metrics)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return metrics


def _rounded(parts: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in parts.items() if k != "loss"}


def _optimizer(model: nn.Module, plan: TrainPlan, cfg: TrainConfig, device: torch.device) -> Any:
    """AdamW (or Muon + AdamW) over the model's ``optimizer_groups``; a group may set its own
    lr (through ``lr_scale``), betas and weight decay."""
    return build_optimizer(
        model,
        cfg.optimizer,
        plan.lr,
        cfg.weight_decay,
        (cfg.beta1, plan.beta2 or 0.95),
        fused=device.type in ("cpu", "cuda"),
        ns_dtype=dtype_of(plan.muon_precision or "bf16"),
    )


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(ckpt_io.trainable_state(model), str(path))


def save_model(
    model: nn.Module, plan: TrainPlan, cfg: TrainConfig, out_dir: Path, metrics: dict[str, Any]
) -> None:
    """Writes the final model: the family's weights + config.json (model and train config) + metrics.json."""
    out_dir = Path(out_dir)
    extra = family(plan.type).save(model, plan, out_dir)
    config = {
        "format": "genloom",
        "model_type": plan.type,
        "plan": plan.to_dict(),
        "train": cfg.model_dump(mode="json"),
        **extra,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
