"""The one training loop: AdamW, warmup + cosine or WSD schedule, accumulation, clipping, eval, checkpoints.

``train()`` is what the pipeline's train stage calls. It resolves the config into a *plan* (model
shape, batch, steps, learning rate), saved with every checkpoint so that a resumed run follows the
same plan exactly; the batch of a step depends only on (seed, step), so resuming after ``kill -9``
reproduces the uninterrupted loss curve. Under ``torchrun`` each process trains on its own batches
and DistributedDataParallel averages the gradients.
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

import numpy as np
import torch
import torch.nn as nn

from genloom.core.errors import ConfigError
from genloom.models.base import family
from genloom.models.text import autocast, evaluate_loss
from genloom.models.tokens import load_tokens, read_sidecar
from genloom.train import checkpoint as ckpt_io
from genloom.train.config import TrainConfig, parse_duration
from genloom.train.data import TokenBatches
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
    """Trains (or resumes training) the model of ``cfg`` on packed tokens; writes the model into ``out_dir``.

    ``probe``: the machine's measured matmul speeds, which decide the precisions (default:
    ``probe_machine()``, measured once per machine and cached in the user's cache folder).
    """
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

    train_data, val_data = load_tokens(train_bin), load_tokens(val_bin)
    vocab_size = _vocab_size(cfg, out_dir)
    latest = ckpt_io.latest_checkpoint(out_dir)
    resumed_state = ckpt_io.read_state(latest) if latest else None
    probe_source = lazy_probe(probe)
    if resumed_state:
        # precisions follow this machine, not the one that started the run: a checkpoint moved to
        # a CPU without fast bf16 would otherwise train in emulated bf16 (the same machine
        # resolves the same values from its cached probe, so resuming stays exact)
        plan = {**resumed_state["plan"], **resolve_precisions(cfg, device, probe_source)}
    else:
        plan = make_plan(cfg, vocab_size, len(train_data), device, probe_source)
    torch.manual_seed(cfg.seed)
    model = build_model(plan, cfg, device)
    packed_vocab = read_sidecar(train_bin).get("vocab_size")
    if vocab_size and packed_vocab and packed_vocab > vocab_size:
        raise ConfigError(
            "the token file was packed with a larger vocabulary than tokenizer.json",
            path="train",
            hint="re-pack the data with the tokenizer in the output folder",
        )

    sized_here = plan["max_steps"] is None
    if sized_here:  # time budget: measure the step time, then size the schedule
        left = parse_duration(cfg.time_budget or "5m") - (time.monotonic() - t_start)
        plan["max_steps"] = _steps_for_budget(model, plan, cfg, train_data, device, left)
        if world > 1:  # every rank must run the same number of steps: rank 0 decides
            import torch.distributed as dist

            n = torch.tensor([plan["max_steps"]], device=device)
            dist.broadcast(n, src=0)
            plan["max_steps"] = int(n.item())
        auto_dropout(plan, cfg, len(train_data))
        torch.manual_seed(cfg.seed)
        model = build_model(plan, cfg, device)
    plan = finish_plan(plan, cfg) if "warmup_steps" not in plan else plan

    opt = build_optimizer(
        model,
        cfg.optimizer,
        plan["lr"],
        cfg.weight_decay,
        (cfg.beta1, plan.get("beta2") or 0.95),
        fused=device.type in ("cpu", "cuda"),
        ns_dtype=dtype_of(plan.get("muon_precision", "bf16")),
    )
    step, tokens_seen, best_val, bad_evals, elapsed_before = 0, 0, float("inf"), 0, 0.0
    history: list[dict[str, Any]] = []
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    if latest is not None:
        st = ckpt_io.load_checkpoint(latest, model, opt)
        if ema is not None:
            ema.load_state_tensors(st["extra"])
        step, tokens_seen, best_val = st["step"], st["tokens"], st["best_val"]
        bad_evals, elapsed_before, history = st["bad_evals"], st["elapsed_s"], st["history"]

    train_model: nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)  # type: ignore[assignment]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = TokenBatches(
        train_data, plan["batch_size"], plan["block_size"], cfg.seed, rank, world, cfg.grad_accum
    )
    tokens_per_step = plan["batch_size"] * plan["block_size"] * cfg.grad_accum * world
    n_steps = plan["max_steps"]
    eval_batch = max(1, plan["batch_size"])
    budget = parse_duration(cfg.time_budget) if cfg.time_budget else None

    def run_eval() -> float:
        with ema.swapped() if ema is not None else contextlib.nullcontext():
            loss, _ = evaluate_loss(
                model, val_data, plan["block_size"], cfg.eval_tokens, eval_batch, plan["precision"], device
            )
        return loss

    def checkpoint(step_done: int) -> None:
        if rank == 0:
            state = {
                "tokens": tokens_seen,
                "best_val": best_val,
                "bad_evals": bad_evals,
                "plan": plan,
                "elapsed_s": elapsed_before + time.monotonic() - t_start,
                "history": history,
            }
            extra = ema.state_tensors() if ema is not None else None
            ckpt_io.save_checkpoint(out_dir, model, opt, step_done, state, extra)

    # a budget's first estimate comes from 6 cold steps: re-measure on real steps early in warmup,
    # then once more over the steps up to the first evaluation or checkpoint (so the plan a
    # checkpoint saves is final): a 2-core VM measured here ran its first 15 seconds 20% faster than
    # the sustained pace, and a schedule sized on steps 10-40 alone overran 5 minutes by 47 s
    calibrate = (10, 40) if sized_here and budget is not None else None
    if calibrate and min(plan["eval_interval"], plan["checkpoint_interval"], n_steps // 4) <= calibrate[1]:
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
            g["lr"] = lr
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            x, y = batches.batch(step, micro)
            x, y = x.to(device), y.to(device)
            sync = (
                contextlib.nullcontext()
                if world == 1 or micro == cfg.grad_accum - 1
                else train_model.no_sync()
            )  # type: ignore[operator]
            with sync:  # DDP: all-reduce the gradients only after the last micro-batch
                with autocast(plan["precision"], device):
                    _, loss = train_model(x, y)
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
            n_steps = _resize_for_budget(
                plan, cfg, budget or 0.0, time.monotonic() - t_start, step, step_s, len(val_data)
            )
            if world > 1:  # every rank must run the same number of steps: rank 0 decides
                import torch.distributed as dist

                n = torch.tensor([n_steps], device=device)
                dist.broadcast(n, src=0)
                n_steps = plan["max_steps"] = int(n.item())
            second = min(plan["eval_interval"], plan["checkpoint_interval"], n_steps // 4) - 1
            calibrate = (step, second) if not measured_twice and second - step >= 50 else None
            measured_twice, t_cal = True, time.monotonic()
        loss_val = loss_sum
        if step % cfg.log_interval == 0:
            history.append({"step": step, "loss": round(loss_sum, 6)})
        if not math.isfinite(loss_sum):
            raise ConfigError(
                f"the loss became {loss_sum} at step {step}", path="train.lr", hint="lower the learning rate"
            )

        info: dict[str, Any] = {}
        if step % plan["eval_interval"] == 0 or step == n_steps:
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
            info.update(
                loss=loss_sum,
                lr=lr,
                tokens_per_s=tps,
                tokens=tokens_seen,
                eta_s=(n_steps - step) * tokens_per_step / max(tps, 1e-9),
            )
            if progress is not None and rank == 0:
                progress(step, n_steps, info)
        if step % plan["checkpoint_interval"] == 0 and step < n_steps and not stopped:
            checkpoint(step)
        if budget is not None and elapsed_before + time.monotonic() - t_start > 1.5 * budget:
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
        "tokens": tokens_seen,
        "wall_s": wall,
        "tokens_per_s": tokens_seen / max(wall, 1e-9),
        "stopped": stopped or "max_steps",
        "precision": plan["precision"],
        **({"muon_precision": plan["muon_precision"]} if "muon_precision" in plan else {}),
        "threads": threads,
        "world_size": world,
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
    }
    val_meta = read_sidecar(val_bin)
    if val_meta.get("n_chars"):
        metrics["val_bpc"] = final_val / math.log(2) * val_meta["n_tokens"] / val_meta["n_chars"]
    if rank == 0:
        checkpoint(step)  # before save_model, which may merge LoRA adapters into the weights
        save_model(model, plan, cfg, out_dir, metrics)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return metrics


def _vocab_size(cfg: TrainConfig, out_dir: Path) -> int:
    return family(cfg.model.type).vocab_size(out_dir)


def _steps_for_budget(
    model: nn.Module,
    plan: dict[str, Any],
    cfg: TrainConfig,
    data: np.ndarray,
    device: torch.device,
    budget_s: float,
) -> int:
    """How many steps fit in ``budget_s``: a few timed steps on a throwaway optimizer of the same kind."""
    opt = build_optimizer(
        model,
        cfg.optimizer,
        1e-9,
        0.0,
        (0.9, 0.99),
        fused=device.type in ("cpu", "cuda"),
        ns_dtype=dtype_of(plan.get("muon_precision", "bf16")),
    )
    batches = TokenBatches(data, plan["batch_size"], plan["block_size"], cfg.seed, grad_accum=cfg.grad_accum)
    times = []
    for i in range(6):
        t0 = time.monotonic()
        for micro in range(cfg.grad_accum):
            x, y = batches.batch(i, micro)
            with autocast(plan["precision"], device):
                _, loss = model(x.to(device), y.to(device))
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.monotonic() - t0)
    step_s = float(np.median(times[2:]))
    # evals cost about a third of a training step per token; keep 10% for them and the final save
    return max(10, int(0.9 * budget_s / step_s))


def _resize_for_budget(
    plan: dict[str, Any],
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
    tokens_per_step = plan["batch_size"] * plan["block_size"] * cfg.grad_accum
    evals = plan["max_steps"] // plan["eval_interval"] + 1
    eval_s = evals * min(cfg.eval_tokens, val_tokens) / tokens_per_step * step_s / 3
    n = step + max(1, int((0.96 * budget_s - elapsed_s - eval_s) / step_s))
    plan.setdefault("first_estimate_steps", plan["max_steps"])
    plan["max_steps"], plan["measured_step_s"] = n, step_s
    if cfg.eval_interval is None:
        plan["eval_interval"] = max(1, n // 10)
    if cfg.checkpoint_interval is None:
        plan["checkpoint_interval"] = plan["eval_interval"]
    return n


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(ckpt_io.trainable_state(model), str(path))


def save_model(
    model: nn.Module, plan: dict[str, Any], cfg: TrainConfig, out_dir: Path, metrics: dict[str, Any]
) -> None:
    """Writes the final model: the family's weights + config.json (model and train config) + metrics.json."""
    out_dir = Path(out_dir)
    extra = family(plan["type"]).save(model, plan, out_dir)
    config = {
        "format": "genloom",
        "model_type": plan["type"],
        "plan": plan,
        "train": cfg.model_dump(mode="json"),
        **extra,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
