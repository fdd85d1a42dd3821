"""What the two table families (``tabular_gan``, ``tabular_vae``) share: preparing a table, its
training rows, sampling under conditions, constraints and a privacy filter, the evaluation
report, and differentially private steps (DP-SGD).

A family subclasses ``TabularFamily`` and writes its network, ``plan_entries``, ``build``,
``train_step`` and one sampling hook, ``generate(model, n, cond, seed)`` (raw encoded rows); the
base class owns everything around them. The rows a model trains on are the data transformer's
encoding (``models/tabular_data.py``: CTGAN's mode-specific normalisation, Xu et al. 2019);
``SpanIndex`` turns its span layout into index tensors so that per-span losses and activations
are a few gathers, never a Python loop over the columns.

Sampling reports what it rejected: the table ``sample`` returns carries a JSON report in its
schema metadata under ``b"genloom"`` (read it with ``sample_report(table)``): rows requested,
drawn and kept, and the rejected rows counted by reason (``"condition: color=red"``,
``"min: age"``, ``"rule: end >= start"``, ``"unique: email"``, ``"dcr"``).

Privacy (``privacy: {epsilon, delta, max_grad_norm}``): the part of a model that sees real rows
trains with DP-SGD (Abadi et al. 2016): per-sample gradients (``torch.func``), each clipped to
``max_grad_norm``, summed, Gaussian noise of ``noise_multiplier * max_grad_norm`` added, divided
by the batch size. The noise multiplier is found for the whole schedule with Opacus' RDP
accountant. Batches are fixed-size slices of a fresh shuffle per epoch, which approximates the
Poisson sampling the accountant assumes (as Opacus does without its Poisson sampler); the
reported epsilon is the accountant's for that sampling rate over the planned steps (an upper
bound when training stops early). The guarantee covers the weights only: the transformer's
fitted modes and levels, the profile and the DCR filter (which keeps a normalised copy of the
training rows beside the model, ``dcr_reference.npy``) are computed from the real rows as they are.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from genloom.core.errors import GenloomError, MissingDependencyError, StageError
from genloom.models.base import Metric, ModelFamily, Prepared, PrepareInput, TrainPlan
from genloom.models.tabular_rules import nearest_distances

if TYPE_CHECKING:
    import pyarrow as pa

    from genloom.models.tabular_data import TableTransformer

GENLOOM_COLUMNS = ("id", "text", "source", "meta")  # the record's own fields, never modelled
NUMBER_KINDS = ("numeric", "integer", "datetime")
LEVEL_KINDS = ("categorical", "boolean")
EVAL_ROWS = 20_000  # evaluation samples as many rows as the validation split, at most this
EVAL_SEED = 20_240_101  # evaluation samples with a fixed seed: the same model scores the same
SAMPLE_BATCH_ROWS = 1_024  # rows a sampling call draws at a time (up to twice that when rows are rejected)
#: a sampling call trims the heap after every this many draws and at its end (``trim_heap``): on
#: Adult (32,561 rows, about 17 draws) the tabular_gan benchmark child peaked at 653 MB without,
#: 641 every 4 draws, 645 every 2, 644 every draw (noise about 5 MB); a trim costs the next draw
#: about 20 ms of page faults
TRIM_EVERY_DRAWS = 4


# ----------------------------------------------------------------------------------------------
# randomness of a step


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed drawn from (seed, step): the randomness of one step, independent of the others."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from (seed, step): a resumed run draws the same noise at every step."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step))


# ----------------------------------------------------------------------------------------------
# the span layout as index tensors


def span_dicts(transformer: TableTransformer) -> list[dict[str, Any]]:
    """The transformer's spans as JSON (saved in the plan, so a model builds without the transformer)."""
    return [
        {"column": s.column, "start": s.start, "dim": s.dim, "activation": s.activation, "role": s.role}
        for s in transformer.spans
    ]


class SpanCrossEntropy(torch.autograd.Function):
    """Per row, the sum over softmax spans of the cross-entropy of one-hot targets, with its
    gradient written out: (softmax - target) x the incoming gradient, one elementwise pass where
    autograd would chain back through the sums, the log, the membership matmul and the exp
    (measured: the span loss's backward was a third of the non-matmul time of a TVAE step).

    Inputs: logits z (B, n_soft), one-hot targets (B, n_soft), the (n_soft, S) membership matrix,
    each column's span (n_soft,), the padded (S, M) column index of the spans (see SpanIndex).
    """

    generate_vmap_rule = True  # per-sample gradients (DP-SGD) map it like any torch code

    @staticmethod
    def forward(
        z: torch.Tensor,
        onehot: torch.Tensor,
        member: torch.Tensor,
        span_of: torch.Tensor,
        padded: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shift = torch.index_select(z, -1, padded.flatten()).unflatten(-1, padded.shape).amax(-1)  # (B, S)
        e = torch.exp(z - torch.index_select(shift, -1, span_of))  # (B, n_soft), each span's max is 1
        sums = e @ member  # (B, S), each >= 1
        loss = (torch.log(sums) + shift).sum(-1) - (z * onehot).sum(-1)
        return loss, e, sums

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]) -> None:
        _, e, sums = output
        ctx.save_for_backward(e, sums, inputs[1], inputs[3])
        ctx.mark_non_differentiable(e, sums)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        e, sums, onehot, span_of = ctx.saved_tensors
        softmax = e / torch.index_select(sums, -1, span_of)
        return (softmax - onehot) * grad.unsqueeze(-1), None, None, None, None

    @classmethod
    def apply(cls, *args: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The loss (B,) alone."""
        return super().apply(*args)[0]


class SpanIndex(nn.Module):
    """The span layout as index tensors (non-persistent buffers: they move with the model and are
    not weights), so that per-span losses and activations are a few tensor ops, never a Python
    loop over the columns.

    A model works on the encoded columns reordered as ``[value columns | softmax spans]``
    (``permute`` / ``restore``): the value columns (tanh, one per numeric column) are then the
    slice ``[:, :n_values]`` and the softmax spans the contiguous block ``[:, n_values:]``. Over
    that block a per-span log-sum-exp is ``log(exp(z - shift) @ S) + shift`` with ``S`` the
    (columns, spans) membership matrix and ``shift`` the per-span maximum (detached; found with
    one gather over the spans padded to the widest, pads repeating a column of their own span).
    """

    def __init__(self, spans: list[dict[str, Any]], dim: int) -> None:
        super().__init__()
        self.dim = dim
        values = [s["start"] for s in spans if s["activation"] == "tanh"]
        soft = [s for s in spans if s["activation"] == "softmax"]
        self.n_values, self.n_spans = len(values), len(soft)
        order = values + [c for s in soft for c in range(s["start"], s["start"] + s["dim"])]
        order_t = torch.tensor(order, dtype=torch.long)
        self.register_buffer("order", order_t, persistent=False)
        self.register_buffer("inverse", torch.argsort(order_t), persistent=False)
        span_of = torch.tensor([i for i, s in enumerate(soft) for _ in range(s["dim"])], dtype=torch.long)
        self.register_buffer("span_of", span_of, persistent=False)
        member = torch.zeros(len(span_of), len(soft))
        member[torch.arange(len(span_of)), span_of] = 1.0
        self.register_buffer("member", member, persistent=False)
        width = max((s["dim"] for s in soft), default=1)
        starts = torch.tensor([0, *(s["dim"] for s in soft)][:-1], dtype=torch.long).cumsum(0)
        dims = torch.tensor([s["dim"] for s in soft], dtype=torch.long)
        padded = starts[:, None] + torch.minimum(torch.arange(width)[None, :], dims[:, None] - 1)  # (S, M)
        self.register_buffer("padded", padded, persistent=False)

    # index_select rather than x[..., idx]: advanced indexing measured 5-7x slower on CPU here

    def permute(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded rows (B, dim) -> the model's order [values | softmax spans]."""
        return torch.index_select(x, -1, self.order)

    def restore(self, xp: torch.Tensor) -> torch.Tensor:
        """The model's order -> encoded rows in the transformer's order."""
        return torch.index_select(xp, -1, self.inverse)

    def _per_column(self, s: torch.Tensor) -> torch.Tensor:
        """A per-span figure (B, S) repeated over each span's columns (B, n_soft)."""
        return torch.index_select(s, -1, self.span_of)

    def _shift(self, z: torch.Tensor) -> torch.Tensor:
        """Per-span maximum of softmax-block logits (B, n_soft) -> (B, S), no gradient."""
        with torch.no_grad():
            flat = torch.index_select(z, -1, self.padded.flatten())
            return flat.unflatten(-1, self.padded.shape).amax(-1)

    def logsumexp(self, z: torch.Tensor) -> torch.Tensor:
        """Per-span log-sum-exp of softmax-block logits: (B, n_soft) -> (B, S)."""
        shift = self._shift(z)
        return torch.log(torch.exp(z - self._per_column(shift)) @ self.member) + shift

    def cross_entropy(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Sum over softmax spans of the cross-entropy of one-hot targets, per row: (B, n_soft) x2 -> (B,).

        For a one-hot target CE = logsumexp(span) - the target's logit; summed over spans the
        second term is one dot product over the block. The gradient, softmax - target per span,
        is written out (``SpanCrossEntropy``)."""
        return SpanCrossEntropy.apply(z, onehot, self.member, self.span_of, self.padded)

    def softmax(self, z: torch.Tensor) -> torch.Tensor:
        """Softmax within each span of softmax-block logits: (B, n_soft) -> (B, n_soft)."""
        e = torch.exp(z - self._per_column(self._shift(z)))
        return e / self._per_column(e @ self.member)

    def gumbel(
        self, shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor
    ) -> torch.Tensor:
        """Standard Gumbel noise of ``shape`` from ``generator``."""
        u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
        return -torch.log(-torch.log(u.clamp_min(1e-10)))

    def activate(
        self, raw: torch.Tensor, tau: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """tanh on the value columns, softmax within each span; with ``tau``, Gumbel-softmax at that
        temperature (noise from ``generator``), as CTGAN's generator output. Model order in and out."""
        values, z = raw[..., : self.n_values], raw[..., self.n_values :]
        if tau is not None:
            z = (z + self.gumbel(z.shape, generator, z)) / tau
        return torch.cat([torch.tanh(values), self.softmax(z)], dim=-1)

    def sample_onehot(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One level per span drawn from softmax(z) (Gumbel-max), as one-hot: (B, n_soft) -> (B, n_soft)."""
        noisy = z + self.gumbel(z.shape, generator, z)
        return (noisy == self._per_column(self._shift(noisy))).to(z.dtype)


# ----------------------------------------------------------------------------------------------
# differential privacy


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: allocations from this size on get their own mapping, returned when freed: when sampling, and
#: when preparing and training (where the mixtures and a GAN step allocate hundreds of blocks of up
#: to 5 MB, which fresh mappings would make page-fault: +2.8 s of system time on 3 epochs of Adult
#: at 1 MiB)
RETURNED_FROM_BYTES = 2**20
TRAINING_RETURNED_FROM_BYTES = 32 * 2**20


def return_freed_memory(from_bytes: int = RETURNED_FROM_BYTES) -> bool:
    """Serve allocations of ``from_bytes`` and more from their own mappings, returned to the
    system when freed, and trim the heap above that much free (glibc; elsewhere a no-op, False).

    glibc raises its mmap threshold each time a large block is freed, after which such blocks come
    from the heap and stay in the process once freed: a table run's stages (the transformer's
    mixtures, the encoded rows, training, scoring, sampling with its distance search) then leave a
    peak that is the sum of what each left behind. A fixed threshold keeps it near the largest
    single stage's (measured on Adult, 3 epochs, 1 thread, whole run and two samplings of 32,561
    rows: tabular_vae 640 -> 610 MiB, tabular_gan 640 -> 635 MiB). Set by the tabular families only: the GPT allocates large
    tensors every step, where fresh mappings cost page faults.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, from_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, from_bytes)
        )
    except (OSError, AttributeError):
        return False


def trim_heap() -> None:
    """Give the free pages inside the heap back to the system (glibc's ``malloc_trim``; Arrow's
    pool releases what it keeps unused): between the parts of an evaluation and the draws of a
    sampling call, whose many blocks under ``return_freed_memory``'s threshold leave holes that
    only a trim returns. Instant itself; what it returned is faulted in again by the next part
    that needs it (about 20 ms after a draw of Adult's rows)."""
    import contextlib
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _opacus() -> Any:
    try:
        import opacus.accountants
        import opacus.accountants.utils
    except ImportError as e:
        raise MissingDependencyError("opacus (differential privacy)", "pip install 'genloom[tabular]'") from e
    return opacus.accountants


# Opacus' orders plus larger ones: weak noise over few steps is tightest at high orders
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 80, 96, 128, 192, 256, 512]


@functools.lru_cache(maxsize=32)
def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The Gaussian noise multiplier that spends ``epsilon`` over ``steps`` steps at ``sample_rate``
    (Opacus' RDP accountant, to 0.01 in epsilon; cached: the steps ask again and again)."""
    acc = _opacus()
    with warnings.catch_warnings():
        # the search tries extreme sigmas whose optimum lies at the edge of the orders; the bound
        # stays valid (only looser) and those trials are discarded anyway
        warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
        return float(
            acc.utils.get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
                alphas=RDP_ORDERS,
            )
        )


def spent_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The epsilon spent by ``steps`` DP-SGD steps at this noise and sampling rate (RDP accountant)."""
    if steps <= 0:
        return 0.0
    accountant = _opacus().RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Optimal order", category=UserWarning
        )  # still an upper bound
        return float(accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS))


def dp_step(
    module: nn.Module,
    per_sample_loss_fn: Callable[..., Any],
    batch: tuple[torch.Tensor, ...],
    max_grad_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, Any]:
    """Writes DP-SGD gradients into ``module``'s trainable parameters' ``.grad``; returns the
    per-sample losses (B,) and auxiliary outputs (B, ...).

    ``per_sample_loss_fn(state, *sample)`` computes one sample's loss with
    ``torch.func.functional_call(module, state, ...)``: ``state`` maps parameter and buffer names
    to tensors, each tensor of ``sample`` is one sample of ``batch`` with a leading dimension of 1
    (a row, or a PacGAN group). It returns a scalar, or (scalar, aux) where aux is a tensor or a
    dict of tensors. Randomness the loss needs (a VAE's reparameterisation noise) must come in
    ``batch``: the per-sample map cannot draw from a generator.

    Each sample's gradient is clipped to L2 norm ``max_grad_norm``; the clipped gradients are
    summed, noise N(0, (noise_multiplier * max_grad_norm)^2) from ``generator`` is added to every
    coordinate, and the sum is divided by the batch size.
    """
    from torch.func import grad_and_value, vmap

    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in module.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach() for n, b in module.named_buffers()}

    def one(p: dict[str, torch.Tensor], *sample: torch.Tensor) -> tuple[torch.Tensor, Any]:
        out = per_sample_loss_fn({**p, **frozen, **buffers}, *(t.unsqueeze(0) for t in sample))
        loss, aux = out if isinstance(out, tuple) else (out, {})
        return loss.reshape(()), aux

    grads, (losses, aux) = vmap(
        grad_and_value(one, has_aux=True), in_dims=(None, *([0] * len(batch))), randomness="error"
    )(params, *batch)
    b = batch[0].shape[0]
    # torch.linalg.vector_norm: Tensor.pow(2).sum(1) measured 40% of a private TVAE step here
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(b, -1), dim=1) for g in grads.values()])
    norms = torch.linalg.vector_norm(per_param, dim=0)  # (B,)
    scale = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    by_name = dict(module.named_parameters())
    for n in names:
        g = torch.einsum("b,b...->...", scale, grads[n])
        if noise_multiplier > 0:
            g = g + torch.normal(
                0.0,
                noise_multiplier * max_grad_norm,
                g.shape,
                generator=generator,
                device=g.device,
                dtype=g.dtype,
            )
        by_name[n].grad = g / b
    return losses, aux


def ghost_dp_step(
    module: nn.Module,
    row_losses: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
    shared: dict[str, nn.Parameter],
    batch_size: int,
    max_grad_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dp_step``'s gradients without per-sample gradients: ghost clipping (Li et al. 2022,
    "Large Language Models Can Be Strong Differentially Private Learners", section 4; Opacus's
    fast gradient clipping). A linear layer applied once to each row gives row i the weight
    gradient g_i a_i^T (its output gradient times its input), of norm |g_i| |a_i|: one backward
    pass gives every row's norm, and the clipped sum is one matmul, (g * scale)^T a. Measured on
    a TVAE step at Adult's width (batch 500, 1 thread): 0.62 s with ``dp_step``, 0.02 s.

    Every trainable parameter of ``module`` must be an ``nn.Linear``'s (each layer called once,
    on (B, in) inputs) or one of ``shared``, parameters every row uses alike: ``row_losses(rows)``
    reads those from ``rows[name]``, the parameter expanded to (B, ...), so that autograd gives each
    row's own gradient. ``row_losses`` returns (losses (B,), aux (B, ...)). Writes the noisy
    clipped mean gradient into each parameter's ``.grad``, as ``dp_step`` does.
    """
    inputs: dict[nn.Module, torch.Tensor] = {}
    outputs: dict[nn.Module, torch.Tensor] = {}

    def keep(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if layer in outputs or args[0].dim() != 2:
            raise RuntimeError(f"ghost clipping needs each linear layer called once on (B, in): {layer}")
        inputs[layer], outputs[layer] = args[0].detach(), out

    linears = [m for m in module.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
    covered = {id(p) for m in linears for p in m.parameters()} | {id(p) for p in shared.values()}
    missing = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in covered]
    if missing:
        raise RuntimeError(f"ghost clipping covers linear layers and shared parameters, not {missing}")
    rows = {name: p.unsqueeze(0).expand(batch_size, *p.shape) for name, p in shared.items()}
    handles = [m.register_forward_hook(keep) for m in linears]
    try:
        losses, aux = row_losses(rows)
    finally:
        for h in handles:
            h.remove()
    used = [m for m in linears if m in outputs]
    grads = torch.autograd.grad(
        losses.sum(), [outputs[m] for m in used] + list(rows.values()), allow_unused=True
    )
    out_grads = dict(zip(used, grads[: len(used)], strict=True))
    row_grads = dict(zip(rows, grads[len(used) :], strict=True))
    squared = torch.zeros(batch_size, device=losses.device)  # (B,) each row's squared gradient norm
    for m, g in out_grads.items():
        if g is not None:
            g_sq = g.pow(2).sum(1)
            squared += inputs[m].pow(2).sum(1) * g_sq
            if m.bias is not None and m.bias.requires_grad:
                squared += g_sq
    for g in row_grads.values():
        if g is not None:
            squared += g.reshape(batch_size, -1).pow(2).sum(1)
    scale = (max_grad_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)  # (B,)

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        if noise_multiplier > 0:
            noise = torch.normal(
                0.0, noise_multiplier * max_grad_norm, total.shape, generator=generator, device=total.device
            )
            total = total + noise.to(total.dtype)
        return total / batch_size

    for m in linears:
        g = out_grads.get(m)
        if g is None:  # not used in this step: its gradient is the noise alone
            m.weight.grad = noisy_mean(torch.zeros_like(m.weight))
            if m.bias is not None and m.bias.requires_grad:
                m.bias.grad = noisy_mean(torch.zeros_like(m.bias))
            continue
        scaled = g * scale[:, None]  # (B, out)
        m.weight.grad = noisy_mean(scaled.t() @ inputs[m])  # (out, in)
        if m.bias is not None and m.bias.requires_grad:
            m.bias.grad = noisy_mean(scaled.sum(0))
    for name, p in shared.items():
        g = row_grads[name]
        total = torch.zeros_like(p) if g is None else torch.tensordot(scale, g, dims=1)
        p.grad = noisy_mean(total)
    return losses.detach(), aux.detach()


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD settings of a run, resolved from the plan (``privacy`` entry, batch, steps)."""

    epsilon: float
    delta: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    noise_multiplier: float

    def spent(self, steps_done: int) -> float:
        """Epsilon spent after ``steps_done`` steps."""
        return spent_epsilon(self.noise_multiplier, self.sample_rate, steps_done, self.delta)

    def report(self) -> dict[str, Any]:
        """The JSON figures config.json and the evaluation carry: the epsilon of the planned
        schedule (an upper bound when training stopped early) and the settings that give it."""
        return {
            "epsilon": self.spent(self.steps),
            "target_epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }


def world_size() -> int:
    """Processes training together (1 without torch.distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(module: nn.Module) -> None:
    """Averages ``.grad`` over the processes (for a step that bypasses DDP's hooks, as DP-SGD does)."""
    import torch.distributed as dist

    world = world_size()
    if world == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def privacy_plan(plan: TrainPlan) -> PrivacyPlan | None:
    """The run's DP-SGD settings from the plan (None: privacy off); the sampling rate is the rows
    of one step over all processes / training rows, the noise multiplier the one that spends
    epsilon over ``plan.max_steps``."""
    p = plan.model.get("privacy")
    if not p:
        return None
    rows = plan.batch_size * world_size()
    q = min(1.0, rows / max(1, int(plan.model["n_train"])))
    steps = int(plan.max_steps or 1)
    nm = noise_multiplier(float(p["epsilon"]), float(p["delta"]), q, steps)
    return PrivacyPlan(float(p["epsilon"]), float(p["delta"]), float(p["max_grad_norm"]), q, steps, nm)


# ----------------------------------------------------------------------------------------------
# the distance space of DCR (distance to closest record)


class DistanceSpace:
    """Rows as vectors where closeness means similar values, for distance-to-closest-record checks.

    Numeric, integer and datetime columns are standardised ((x - mean) / std; a missing value sits
    at the mean and sets a missing indicator); categorical and boolean columns are one-hot over the
    training levels scaled by 1/sqrt(2), so a different level is as far as one standard deviation.
    Unlike the transformer's encoding it does not depend on a sampled mode, so a copy of a training
    row is at distance 0 from it.
    """

    def __init__(self, columns: list[dict[str, Any]], threshold: float | None = None) -> None:
        self.columns = columns
        self.threshold = threshold

    @classmethod
    def fit(cls, rows: pa.Table, kinds: dict[str, str], max_levels: int = 100) -> DistanceSpace:
        """The space of ``rows``' columns of the modelled ``kinds`` (id columns left out)."""
        import pyarrow.compute as pc

        columns: list[dict[str, Any]] = []
        for name, kind in kinds.items():
            if name not in rows.column_names:
                continue
            if kind in NUMBER_KINDS:
                x = _as_float(rows.column(name))
                ok = ~np.isnan(x)
                mean = float(x[ok].mean()) if ok.any() else 0.0
                std = float(x[ok].std()) if ok.sum() > 1 else 0.0
                columns.append(
                    {"name": name, "mean": mean, "std": std if std > 0 else 1.0, "missing": bool((~ok).any())}
                )
            elif kind in LEVEL_KINDS:
                counts = pc.value_counts(pc.cast(rows.column(name), "string")).to_pylist()
                counts.sort(key=lambda c: -c["counts"])
                columns.append({"name": name, "levels": [c["values"] for c in counts[:max_levels]]})
        return cls(columns)

    def vectors(self, rows: pa.Table) -> np.ndarray:
        """(n, d) float32 vectors of ``rows``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts: list[np.ndarray] = []
        for c in self.columns:
            col = rows.column(c["name"])
            if "levels" in c:
                values = pc.fill_null(pc.cast(col, "string"), "\x00null")
                levels = [v if v is not None else "\x00null" for v in c["levels"]]
                pos = pc.index_in(values, value_set=pa.array(levels, pa.string()))
                pos_np = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False)
                hot = np.zeros((len(rows), len(levels)), np.float32)
                known = pos_np >= 0
                hot[np.nonzero(known)[0], pos_np[known]] = 1 / math.sqrt(2)
                parts.append(hot)
            else:
                x = _as_float(col)
                miss = np.isnan(x)
                parts.append(
                    ((np.where(miss, c["mean"], x) - c["mean"]) / c["std"]).astype(np.float32)[:, None]
                )
                if c["missing"]:
                    parts.append(miss.astype(np.float32)[:, None])
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 0), np.float32)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"columns": self.columns, "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DistanceSpace:
        """The space ``to_json`` wrote."""
        return cls(d["columns"], d.get("threshold"))


def _as_float(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric, integer or timestamp column as float64 with NaN for missing values (ISO date
    strings, a datetime column read from a CSV, parsed as tabular_data parses them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from genloom.models.tabular_data import parse_times

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = parse_times(col)
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# training data


class RowBatches:
    """Fixed-size batches of encoded rows, a fresh shuffle of the rows per epoch.

    The batch of a step depends only on (seed, step, micro, rank), so a resumed run sees the same
    rows without any sampler state; micro-batches and ranks take consecutive slices of the same
    shuffle. An epoch's last rows that do not fill a batch are left out of that epoch (the next
    shuffle puts others last)."""

    def __init__(
        self, rows: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1, grad_accum: int = 1
    ) -> None:
        self.rows, self.seed, self.rank, self.world, self.grad_accum = rows, seed, rank, world, grad_accum
        self.n = len(rows)
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = max(1, self.n // self.batch_size)
        self._epoch: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """The shuffle of the rows in ``epoch``."""
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._epoch[1]

    def indices(self, step: int, micro: int = 0) -> np.ndarray:
        """Row numbers of micro-batch ``micro`` of ``step``."""
        k = (step * self.grad_accum + micro) * self.world + self.rank  # the run's k-th micro-batch
        epoch, i = divmod(k, self.per_epoch)
        return self.order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, ...]:
        """(x,): (B, dim) float32 encoded rows."""
        return (
            torch.from_numpy(np.ascontiguousarray(self.rows[self.indices(step, micro)], dtype=np.float32)),
        )


class TabularData:
    """A prepared table as the training loop sees it: encoded rows (memory-mapped), the transformer."""

    unit = "rows"
    vocab_size = 0

    def __init__(self, prepared_dir: Path, transformer: TableTransformer) -> None:
        self.prepared_dir = Path(prepared_dir)
        self.train = np.load(self.prepared_dir / "train.npy", mmap_mode="r")
        self.val = np.load(self.prepared_dir / "val.npy", mmap_mode="r")
        self.n_train, self.n_val = len(self.train), len(self.val)
        self.transformer = transformer

    def batches(self, plan: TrainPlan, seed: int, rank: int, world: int, grad_accum: int) -> RowBatches:
        """Shuffled fixed-size batches of the training rows (see ``RowBatches``)."""
        return RowBatches(self.train, plan.batch_size, seed, rank, world, grad_accum)

    def val_loss(self, model: nn.Module, plan: TrainPlan, max_units: int, device: torch.device) -> float:
        """The model's ``validation_loss`` on the first ``max_units`` validation rows (fixed seed)."""
        x = torch.from_numpy(np.array(self.val[:max_units], dtype=np.float32)).to(device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(model.validation_loss(x, 0))  # type: ignore[operator]
        finally:
            model.train(was_training)

    def final_metrics(self, val_loss: float) -> dict[str, Any]:
        """No figures beyond the validation loss for tables."""
        return {}


# ----------------------------------------------------------------------------------------------
# the family


def sample_report(table: pa.Table) -> dict[str, Any]:
    """The rejection report ``TabularFamily.sample`` stored in the table's schema metadata."""
    meta = table.schema.metadata or {}
    return dict(json.loads(meta[b"genloom"])) if b"genloom" in meta else {}


class TabularFamily(ModelFamily):
    """The part of a table family that does not depend on its network: prepare, data, sampling
    with conditions and constraints, the privacy filter and the evaluation report.

    A subclass writes ``plan_entries`` (its own plan entries), ``build``, ``train_step`` and
    ``generate``; its module has ``validation_loss(x, seed)`` and ``optimizer_groups``.
    """

    model_files = ("transformer.json", "dcr_space.json", "dcr_reference.npy")
    custom_step = True
    prepare_steps = 3

    # -- prepare --------------------------------------------------------------------------------

    def prepare_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        """The model config (its transformer settings) and the seed the transformer is fitted with."""
        return {"model": train_cfg.model.model_dump(mode="json"), "seed": train_cfg.seed}

    def prepare(self, inp: PrepareInput, train_cfg: Any, out_dir: Path) -> Prepared:
        """Splits the rows, fits the transformer on the training split and writes the encoded rows,
        the real rows (for evaluation), the profile and the DCR reference."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from genloom.models.tabular_data import TableTransformer, profile_table

        return_freed_memory(TRAINING_RETURNED_FROM_BYTES)
        cfg, seed, out_dir = train_cfg.model, int(train_cfg.seed), Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        parts: dict[str, list[pa.Table]] = {"train": [], "val": [], **({"test": []} if inp.test else {})}
        for batch in inp.batches(None):
            split = np.asarray(inp.split(batch))
            data = batch.drop_columns([c for c in GENLOOM_COLUMNS if c in batch.column_names])
            for name, tables in parts.items():
                if (split == name).any():
                    tables.append(data.filter(pa.array(split == name)))
        if not parts["train"] or not parts["val"]:
            raise StageError("the train or validation split is empty: add rows or change split.val_fraction")
        train = pa.concat_tables(parts["train"], promote_options="default")
        val = pa.concat_tables(parts["val"], promote_options="default").select(train.column_names)
        pq.write_table(train, out_dir / "train.parquet")
        pq.write_table(val, out_dir / "val.parquet")
        test = None
        if inp.test:  # the test split, apart: only the evaluate stage reads it
            if not parts["test"]:
                raise StageError("the test split is empty: add rows or raise split.test_fraction")
            test = pa.concat_tables(parts["test"], promote_options="default").select(train.column_names)
            pq.write_table(test, out_dir / "test.parquet")
        inp.advance()

        transformer = TableTransformer.fit(train, cfg, seed=seed)
        transformer.save(out_dir / "transformer.json")
        inp.advance()

        np.save(out_dir / "train.npy", transformer.transform(train, seed=seed).astype(np.float32))
        np.save(out_dir / "val.npy", transformer.transform(val, seed=seed + 1).astype(np.float32))
        if test is not None:
            np.save(out_dir / "test.npy", transformer.transform(test, seed=seed + 2).astype(np.float32))
        profile = profile_table(train, transformer.kinds)
        (out_dir / "profile.json").write_text(json.dumps(profile, indent=2, default=str))
        space = DistanceSpace.fit(train, transformer.kinds, cfg.max_categories)
        reference = space.vectors(train)
        # the default DCR threshold: a real holdout row is closer than this to some training row
        # only 1% of the time, so synthetic rows closer than that look like copies
        space.threshold = float(np.percentile(nearest_distances(space.vectors(val), reference), 1))
        (out_dir / "dcr_space.json").write_text(json.dumps(space.to_json()))
        np.save(out_dir / "dcr_reference.npy", reference)
        inp.advance()
        modelled = [c for c, k in transformer.kinds.items() if k != "id"]
        return Prepared(
            rows=train.num_rows,
            manifest={
                "columns": modelled,
                "kinds": transformer.kinds,
                "left_out": transformer.left_out,
                "encoded_dim": transformer.dim,
                "dcr_threshold": space.threshold,
            },
            stats={
                "rows": train.num_rows,
                "val_rows": val.num_rows,
                **({"test_rows": test.num_rows} if test is not None else {}),
                "columns": len(modelled),
                "encoded_dim": transformer.dim,
            },
        )

    def profile(self, prepared_dir: Path) -> dict[str, Any]:
        """The training rows' per-column distributions (``profile.json``: quantiles, mean and std
        of numbers, the 100 most frequent levels, missing rates), as strict JSON (NaN as null)."""
        from genloom.models.tabular_data import finite_json

        return dict(finite_json(json.loads((Path(prepared_dir) / "profile.json").read_text())))

    # -- train ----------------------------------------------------------------------------------

    def open_data(self, prepared_dir: Path, model_dir: Path) -> TabularData:
        """The encoded rows of ``prepared_dir`` and its fitted transformer."""
        from genloom.models.tabular_data import TableTransformer

        return_freed_memory(TRAINING_RETURNED_FROM_BYTES)
        return TabularData(prepared_dir, TableTransformer.load(Path(prepared_dir) / "transformer.json"))

    def plan(
        self, cfg: Any, data: TabularData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        """Rows per step, learning rate and steps from the config (``epochs`` passes; with
        ``train.time_budget`` and no ``epochs`` given, the loop sizes the steps to the budget), the
        span layout and the family's own entries (``plan_entries``)."""
        batch = min(cfg.batch_size, data.n_train)
        by_budget = budget_s is not None and "epochs" not in cfg.model_fields_set
        entries: dict[str, Any] = {
            "block_size": 1,
            "batch_size": batch,
            "lr": cfg.lr,
            "max_steps": None if by_budget else cfg.epochs * math.ceil(data.n_train / batch),
            "warmup_steps": 0,
            "schedule": cfg.schedule,
            "n_train": data.n_train,
            "dim": data.transformer.dim,
            "spans": span_dicts(data.transformer),
            "privacy": cfg.privacy.model_dump(mode="json") if cfg.privacy is not None else None,
        }
        entries.update(self.plan_entries(cfg, data))
        return entries, 0

    def plan_entries(self, cfg: Any, data: TabularData) -> dict[str, Any]:
        """The family's own plan entries (layer widths ...)."""
        return {}

    def default_lr(self, cfg: Any, width: int) -> float:
        """The config's learning rate (the papers' 2e-4 for the GAN, 1e-3 for the VAE)."""
        return float(cfg.lr)

    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The module's buffers (BatchNorm running statistics, counters): checkpoints keep only
        trainable parameters, and sampling after a resume needs these too."""
        return {name: buf for name, buf in model.named_buffers() if buf is not None}

    def save(self, model: nn.Module, plan: TrainPlan, out_dir: Path) -> dict[str, Any]:
        """Weights and buffers in ``model.safetensors``; config.json gets the plan's model entries
        and, with privacy, the spent epsilon."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(Path(out_dir) / "model.safetensors"))
        extra: dict[str, Any] = {"tabular": dict(plan.to_dict())}
        privacy = self.privacy_report(plan)
        if privacy is not None:
            extra["privacy"] = privacy
        return extra

    def privacy_report(self, plan: TrainPlan) -> dict[str, Any] | None:
        """The DP figures config.json and the evaluation carry (``PrivacyPlan.report``; None:
        privacy off). A family whose steps make several private updates overrides it."""
        privacy = privacy_plan(plan)
        return privacy.report() if privacy is not None else None

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, TableTransformer]:
        """The saved model (CPU, float32, eval mode) and its transformer, also kept on the model
        as ``model.transformer`` (a family's ``generate`` maps asked values to levels with it)."""
        from safetensors.torch import load_file

        from genloom.models.tabular_data import TableTransformer

        model_dir = Path(model_dir)
        plan = TrainPlan.from_dict(config["tabular"])
        model = self.build(plan, model_config(config), torch.device("cpu"), torch.float32)
        model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
        transformer = TableTransformer.load(model_dir / "transformer.json")
        setattr(model, "transformer", transformer)  # noqa: B010 (nn.Module types its attributes as tensors or modules)
        return model.eval(), transformer

    # -- use ------------------------------------------------------------------------------------

    def generate(self, model: nn.Module, n: int, cond: dict[str, Any] | None, seed: int) -> np.ndarray:
        """(n, dim) float32 raw encoded rows (the family's sampler); ``cond`` maps columns to the
        values asked for, a hint the family may use (rejection enforces them anyway)."""
        raise NotImplementedError

    def sample(
        self,
        model_dir: Path,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> pa.Table:
        """``n`` synthetic rows with the training schema that meet ``conditions`` (column -> a value,
        or a condition of ``tabular_rules``), the rules and column constraints of the config, and
        are no closer to a training row than the DCR threshold (option ``reject_closer_than``
        overrides it; 0 turns the filter off). The rejection report is in the schema metadata
        (``sample_report``). Raises GenloomError naming the most rejecting reason when fewer than
        ``n`` rows pass within ``max_tries`` batches per requested batch."""
        import pyarrow as pa

        from genloom.models import tabular_rules as rules_mod

        return_freed_memory()
        model_dir = Path(model_dir)
        from genloom.models.text import read_model_config

        config = read_model_config(model_dir)
        cfg = model_config(config)
        model, transformer = self.load(model_dir, config)
        columns = list(transformer.schema.names)
        rules = [rules_mod.parse_rule(r, columns) for r in cfg.rules]
        conds = {c: as_condition(c, v) for c, v in (conditions or {}).items()}
        unknown = [c for c in conds if c not in columns]
        if unknown:
            from genloom.core.errors import ConfigError

            raise ConfigError(f"no column {', '.join(unknown)} in this model; columns: {', '.join(columns)}")
        unique = [c for c, s in cfg.columns.items() if s.unique and c in columns]
        space = DistanceSpace.from_json(json.loads((model_dir / "dcr_space.json").read_text()))
        threshold = options.get("reject_closer_than")
        if threshold is None:
            threshold = cfg.dcr_reject if cfg.dcr_reject is not None else space.threshold
        reference = np.load(model_dir / "dcr_reference.npy") if threshold else None
        schema = transformer.schema
        hint = {
            c: cond.typed_value(schema.field(c).type) for c, cond in conds.items() if cond.op == "=="
        } or None

        seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        batch_rows = max(256, min(n, SAMPLE_BATCH_ROWS))  # rows per draw: bounds the memory of a large call
        budget = cfg.max_tries * max(n, batch_rows)  # rows the search may draw before giving up
        kept: list[pa.Table] = []
        have, drawn, k = 0, 0, 0
        rejected: dict[str, int] = {}
        seen: dict[str, set] = {}
        while have < n and drawn < budget:
            rate = (have + 1) / (drawn + 1) if drawn else 1.0
            size = int(min(budget - drawn, max(batch_rows, min(2 * batch_rows, 1.2 * (n - have) / rate))))
            raw = self.generate(model, size, hint, step_seed(seed, k))
            rows = transformer.inverse_transform(raw, seed=step_seed(seed, k), first_row=drawn)
            rows = rules_mod.apply_rounding(rows, cfg.columns)
            mask, why = rules_mod.row_mask(rows, rules, conds, cfg.columns)
            _count(rejected, why)
            rows = rows.filter(pa.array(mask))
            if unique:
                ok, dup = rules_mod.enforce_unique(rows, unique, seen)
                if dup:
                    rejected["unique"] = rejected.get("unique", 0) + int(dup)
                rows = rows.filter(pa.array(ok))
            if reference is not None and rows.num_rows:
                close = nearest_distances(space.vectors(rows), reference) < threshold
                if close.any():
                    rejected["dcr"] = rejected.get("dcr", 0) + int(close.sum())
                    rows = rows.filter(pa.array(~close))
            kept.append(rows.slice(0, n - have))
            have += min(rows.num_rows, n - have)
            drawn += size
            k += 1
            if k % TRIM_EVERY_DRAWS == 0:
                del raw, rows
                trim_heap()
        trim_heap()
        if have < n:
            worst = max(rejected.items(), key=lambda kv: kv[1])[0] if rejected else "none"
            raise GenloomError(
                f"only {have} of {n} rows met every requirement after drawing {drawn} rows"
                f" ({cfg.max_tries} tries per batch); most rejections: {worst!r} ({rejected.get(worst, 0)} rows)."
                " Relax that condition or constraint, or raise max_tries"
            )
        table = pa.concat_tables(kept) if kept else transformer.schema.empty_table()
        report = {"requested": n, "drawn": drawn, "kept": table.num_rows, "rejected": rejected, "seed": seed}
        meta = dict(table.schema.metadata or {})
        meta[b"genloom"] = json.dumps(report).encode()
        return table.replace_schema_metadata(meta)

    def evaluate(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """Fidelity (SDMetrics' column shapes, column-pair trends, quality), utility (train on
        synthetic, test on real validation rows), privacy (DCR, membership inference) of as many
        synthetic rows as validation rows (at most 20,000, fixed seed), and the validation loss."""
        import pyarrow.parquet as pq

        from genloom.models import tabular_metrics as tm

        model_dir, prepared_dir = Path(model_dir), Path(prepared_dir)
        from genloom.models.text import read_model_config

        config = read_model_config(model_dir)
        cfg = model_config(config)
        train = pq.read_table(prepared_dir / "train.parquet")
        val = pq.read_table(prepared_dir / "val.parquet")
        n = min(val.num_rows, EVAL_ROWS)
        real = val.slice(0, n)
        synth = self.sample(model_dir, n, seed=EVAL_SEED)
        trim_heap()  # each part's freed blocks, before the next adds its own (the stage's peak memory)
        report = sample_report(synth)
        model, transformer = self.load(model_dir, config)
        kinds = {c: k for c, k in transformer.kinds.items() if k != "id"}
        out: dict[str, Metric] = {}
        for name, v in tm.quality(real, synth, kinds).items():
            out[name] = Metric(float(v), "max")
        target = cfg.target or next((c for c in reversed(list(kinds)) if kinds[c] in LEVEL_KINDS), None)
        if target is not None:
            fit_rows = train.slice(0, min(train.num_rows, EVAL_ROWS))
            for name, v in tm.tstr(synth, val, target, kinds).items():
                out[f"tstr_{name}"] = Metric(float(v), "max")
            for name, v in tm.tstr(fit_rows, val, target, kinds).items():
                out[f"real_{name}"] = Metric(float(v))  # the same classifier trained on real rows
            trim_heap()
        space = DistanceSpace.from_json(json.loads((model_dir / "dcr_space.json").read_text()))
        reference = np.asarray(np.load(model_dir / "dcr_reference.npy", mmap_mode="r"))
        for name, v in tm.dcr(space.vectors(synth), reference, space.vectors(real)).items():
            out[name] = Metric(float(v), "min" if name == "dcr_close_share" else None)
        out["membership_auc"] = Metric(
            float(tm.membership_inference_auc(space.vectors(synth), reference[:n], space.vectors(real))),
            "min",
        )
        out["dcr_rejected_share"] = Metric(report["rejected"].get("dcr", 0) / max(1, report["drawn"]))
        del reference  # its mapped pages (14 MB on Adult) leave the process before the loss is computed
        trim_heap()
        data = self.open_data(prepared_dir, model_dir)
        out["val_loss"] = Metric(
            data.val_loss(model, TrainPlan.from_dict(config["tabular"]), EVAL_ROWS, torch.device("cpu")),
            "min",
        )
        if "privacy" in config:
            out["dp_epsilon"] = Metric(float(config["privacy"]["epsilon"]), "min")
        return out


def _count(total: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        if v:
            total[k] = total.get(k, 0) + int(v)


def model_config(config: dict[str, Any]) -> Any:
    """The validated ``train.model`` config a trained model's config.json carries."""
    from pydantic import TypeAdapter

    from genloom.models.config import ModelConfig

    return TypeAdapter(ModelConfig).validate_python(config["train"]["model"])


def as_condition(column: str, value: Any) -> Any:
    """A ``tabular_rules.Condition`` from what a caller passes: a condition as is (``--where``
    parses into one), any other value an equality with that value (typed against the column
    when checked)."""
    from genloom.models.tabular_rules import Condition, Value

    if isinstance(value, Condition):
        return value
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return Condition(f"{column}={text}", column, "==", value=Value(text))
