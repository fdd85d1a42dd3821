"""Checkpoints that survive ``kill -9``: safetensors weights and optimizer state, JSON for the rest.

A checkpoint is a folder ``checkpoints/step_00001234/`` holding ``model.safetensors`` (the trainable
parameters), ``optimizer.safetensors`` (AdamW moments, step counts and the torch RNG state) and
``state.json`` (step, tokens seen, the resolved plan, optimizer hyper-parameters). It is written
to a ``.partial`` folder and renamed when complete, so a half-written checkpoint is never read;
the latest complete one wins. No pickle anywhere: a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from genloom.models.weights import load_trainable_state, trainable_state

CKPT_DIR = "checkpoints"
KEEP = 2  # complete checkpoints kept on disk


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors = {
        f"state.{idx}.{key}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().cpu()
        for idx, st in sd["state"].items()
        for key, v in st.items()
    }
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("state."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    out_dir: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Writes the checkpoint of ``step`` atomically and prunes old ones; returns its folder.

    ``extra`` tensors (the weight average) are stored beside the optimizer state."""
    root = Path(out_dir) / CKPT_DIR
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    tensors, groups = _optimizer_tensors(opt)
    tensors.update(extra or {})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "param_groups": groups}, indent=2))
    for f in tmp.iterdir():  # durable before the rename makes it visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in complete_checkpoints(out_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step_")
        and not p.name.endswith(".partial")
        and (p / "state.json").exists()
    )


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``out_dir``, or None."""
    done = complete_checkpoints(out_dir)
    return done[-1] if done else None


def read_state(ckpt: Path) -> dict[str, Any]:
    """The JSON state of a checkpoint (step, tokens, plan...)."""
    return dict(json.loads((Path(ckpt) / "state.json").read_text()))


def load_checkpoint(ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restores weights, optimizer state and RNG from ``ckpt``; returns its JSON state.

    Tensors saved as ``extra`` come back under the state's ``"extra"`` key."""
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    load_trainable_state(model, load_file(str(ckpt / "model.safetensors")))
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    if opt is not None:
        opt.load_state_dict(_optimizer_state(tensors, state["param_groups"]))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    state["extra"] = {k: v for k, v in tensors.items() if not k.startswith(("state.", "rng."))}
    return state
