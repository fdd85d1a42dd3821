"""Optimizers of the training loop: AdamW, or Muon for the hidden matrices with AdamW for the rest.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks") takes
SGD-momentum's update of a weight matrix and replaces it with the nearest semi-orthogonal matrix,
computed by a few Newton-Schulz iterations, in bfloat16 where the machine computes it fast (the
loop decides from ``genloom.train.precision``'s probe; on a CPU that emulates bfloat16 they run
in float32, which there is many times faster). The update is scaled to AdamW's RMS
(``0.2 * sqrt(max(rows, cols))``, Liu et al. 2025, "Muon is scalable for LLM training"), so Muon
shares AdamW's learning rate, schedule and decoupled weight decay. Fused matrices (q, k, v in one
projection; gate and up in SwiGLU) are orthogonalized block by block, as if they were separate.
Embeddings, the output projection and norm gains stay with AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan's quintic: fast, not exact, convergence to ~[0.7, 1.2]


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The semi-orthogonal matrices nearest to ``g[..., :, :]`` (U V^T of the SVD), approximately, in ``dtype``."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


def orthogonalize_all(
    mats: list[torch.Tensor], steps: int = 5, dtype: torch.dtype = torch.bfloat16
) -> list[torch.Tensor]:
    """``orthogonalize`` of each matrix, batched by shape (one bmm chain per shape, not per matrix)."""
    wide = [m.mT if m.size(0) > m.size(1) else m for m in mats]  # a matrix and its transpose batch together
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(wide):
        by_shape.setdefault(tuple(m.shape), []).append(i)
    out: list[torch.Tensor] = [mats[0]] * len(mats)
    for idx in by_shape.values():
        for i, o in zip(
            idx, orthogonalize(torch.stack([wide[i] for i in idx]), steps, dtype).unbind(0), strict=True
        ):
            out[i] = o.mT if wide[i] is not mats[i] else o
    return out


class PlainOptimizer:
    """What the loop needs of an optimizer, without ``torch.optim``: ``param_groups`` (dicts as in
    torch), ``state`` per parameter, ``zero_grad`` and ``torch.optim.Optimizer``'s ``state_dict``
    layout (parameters numbered through the groups), so checkpoints written by either load into
    the other. In torch 2.13 creating or stepping any ``torch.optim.Optimizer`` imports
    ``torch._dynamo`` (its methods are wrapped in ``torch._disable_dynamo``): 827 more modules and
    about 70 MiB resident in every training process, for a compiler the loop does not use."""

    def __init__(self, groups: Any, defaults: dict[str, Any]) -> None:
        groups = list(groups)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            params = list(g["params"])
            group = {**g, "params": params}
            for k, v in defaults.items():
                group.setdefault(k, v)
            self.param_groups.append(group)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for q in group["params"]:
                if set_to_none:
                    q.grad = None
                elif q.grad is not None:
                    q.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for q in group["params"]:
                index.setdefault(id(q), len(index))
                ids.append(index[id(q)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        params = [q for g in self.param_groups for q in g["params"]]
        state = {index[id(q)]: dict(self.state[q]) for q in params if q in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        saved = sd["param_groups"]
        if len(saved) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(saved, self.param_groups, strict=True)
        ):
            raise ValueError("the optimizer state does not match the model's parameter groups")
        by_index = {
            i: q
            for g_saved, g in zip(saved, self.param_groups, strict=True)
            for i, q in zip(g_saved["params"], g["params"], strict=True)
        }
        self.state = {}
        for i, st in sd["state"].items():
            q = by_index[int(i)]
            self.state[q] = {  # copies: the updates are in place
                k: (
                    torch.as_tensor(v, dtype=torch.float32).to(q.device, copy=True)
                    if k == "step"
                    else v.to(device=q.device, dtype=q.dtype, copy=True)
                )
                for k, v in st.items()
            }
        for g_saved, g in zip(saved, self.param_groups, strict=True):
            g.update({k: v for k, v in g_saved.items() if k != "params"})


class Muon(PlainOptimizer):
    """Orthogonalized SGD-momentum for 2-D weights; a group's ``split`` lists row blocks of fused matrices.

    ``ns_dtype``: the dtype of the Newton-Schulz matmuls (bf16 as in Jordan et al. where it is
    fast; float32 on CPUs that emulate bf16).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, split=None))
        self.defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, split=None)
        self.ns_steps = ns_steps  # one value for all groups: their blocks are orthogonalized in one batch
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon takes 2-D weights, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        todo: list[tuple[torch.Tensor, dict[str, Any], int]] = []  # (param, group, number of blocks)
        blocks: list[torch.Tensor] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad)
                update = p.grad.add(buf, alpha=group["momentum"])  # Nesterov
                parts = update.split(group["split"] or [p.size(0)], dim=0)
                todo.append((p, group, len(parts)))
                blocks += parts
        if not todo:
            return
        ortho = iter(orthogonalize_all(blocks, self.ns_steps, self.ns_dtype))
        for p, group, n in todo:
            update = torch.cat([o * (0.2 * max(o.shape) ** 0.5) for o in (next(ortho) for _ in range(n))])
            p.mul_(1 - group["lr"] * group["weight_decay"])
            p.add_(update, alpha=-group["lr"])


class FusedAdamW(PlainOptimizer):
    """AdamW through PyTorch's fused kernel (``torch._fused_adamw_``), without ``torch.optim``.

    The same update, bit for bit, as ``torch.optim.AdamW(..., fused=True)`` (the kernel it calls,
    with the step counts incremented first, as it does), and the same ``state_dict``, so a
    checkpoint of either loads into the other (``PlainOptimizer``: why not ``torch.optim``).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "eps": 1e-8,
        "weight_decay": 1e-2,
        "amsgrad": False,
        "foreach": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
        "fused": True,
        "decoupled_weight_decay": True,
    }

    def __init__(self, groups: Any, lr: float, betas: tuple[float, float]) -> None:
        super().__init__(groups, {"lr": lr, "betas": betas, **self.DEFAULTS})
        for group in self.param_groups:
            for q in group["params"]:
                if q.device.type not in ("cpu", "cuda") or not q.is_floating_point():
                    raise ValueError(
                        f"the fused AdamW kernel takes floating-point cpu or cuda tensors, not {q.dtype} on {q.device}"
                    )

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
            for q in group["params"]:
                if q.grad is None:
                    continue
                st = self.state.get(q)
                if st is None:
                    st = self.state[q] = {
                        "step": torch.zeros((), dtype=torch.float32, device=q.device),
                        "exp_avg": torch.zeros_like(q, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(q, memory_format=torch.preserve_format),
                    }
                lists = buckets.setdefault((q.device, q.dtype), [[], [], [], [], []])
                for lst, t in zip(
                    lists, (q, q.grad, st["exp_avg"], st["exp_avg_sq"], st["step"]), strict=True
                ):
                    lst.append(t)
            beta1, beta2 = group["betas"]
            for params, grads, exp_avgs, exp_avg_sqs, steps in buckets.values():
                torch._foreach_add_(steps, 1)
                torch._fused_adamw_(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    [],
                    steps,
                    amsgrad=False,
                    lr=float(group["lr"]),
                    beta1=float(beta1),
                    beta2=float(beta2),
                    weight_decay=float(group["weight_decay"]),
                    eps=float(group["eps"]),
                    maximize=False,
                )


class OptimizerChain:
    """Several optimizers stepped as one, with one ``param_groups`` list and one state dict."""

    def __init__(self, *optimizers: Any) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every optimizer's groups (read anew: ``load_state_dict`` replaces the group dicts)."""
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' states with parameter indices numbered on through the chain."""
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for o in self.optimizers:
            sd = o.state_dict()
            state.update({i + offset: s for i, s in sd["state"].items()})
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        first_group, offset = 0, 0
        for o in self.optimizers:
            groups = sd["param_groups"][first_group : first_group + len(o.param_groups)]
            n = sum(len(g["params"]) for g in groups)
            o.load_state_dict(
                {
                    "state": {i - offset: s for i, s in sd["state"].items() if offset <= i < offset + n},
                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups],
                }
            )
            first_group, offset = first_group + len(groups), offset + n


def build_optimizer(
    model: torch.nn.Module,
    kind: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    fused: bool,
    ns_dtype: torch.dtype = torch.bfloat16,
) -> torch.optim.Optimizer | OptimizerChain:
    """AdamW over ``model.optimizer_groups``, or Muon over ``model.muon_groups`` chained with AdamW.

    ``ns_dtype``: Muon's Newton-Schulz dtype (the loop passes its plan's ``muon_precision``).
    """
    if kind == "adamw":
        groups = model.optimizer_groups(weight_decay)  # type: ignore[operator]
        if fused:
            return FusedAdamW(groups, lr=lr, betas=betas)  # type: ignore[return-value]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    muon_groups, adam_groups = model.muon_groups(weight_decay)  # type: ignore[operator]
    return OptimizerChain(
        Muon(muon_groups, lr=lr, weight_decay=weight_decay, ns_dtype=ns_dtype),
        FusedAdamW(adam_groups, lr=lr, betas=betas)
        if fused
        else torch.optim.AdamW(adam_groups, lr=lr, betas=betas),
    )
