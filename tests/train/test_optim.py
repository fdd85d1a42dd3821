"""Muon: orthogonalized updates, parameter groups of the GPT, and one state dict for the chain."""

from __future__ import annotations

import copy

import pytest
import torch

from genloom.models.gpt import GPT, GPTConfig
from genloom.train.optim import Muon, OptimizerChain, build_optimizer, orthogonalize, orthogonalize_all


def test_orthogonalize_flattens_the_spectrum() -> None:
    torch.manual_seed(0)
    g = torch.randn(96, 32) @ torch.diag(torch.logspace(-1, 1, 32))  # condition number ~100
    s = torch.linalg.svdvals(orthogonalize(g).float())
    assert s.min() > 0.6 and s.max() < 1.25  # Jordan's quintic lands every singular value near 1
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 50


def test_batched_orthogonalize_equals_one_by_one() -> None:
    torch.manual_seed(0)
    mats = [torch.randn(16, 16), torch.randn(40, 16), torch.randn(16, 40), torch.randn(16, 16)]
    for a, b in zip(orthogonalize_all(mats), (orthogonalize(m) for m in mats), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=2e-2, rtol=0)  # bf16: the batch may round differently


def test_muon_groups_cover_every_parameter_once() -> None:
    for tie in (True, False):
        model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, tie_embeddings=tie))
        muon, adamw = model.muon_groups(0.1)
        ids = [id(p) for g in muon + adamw for p in g["params"]]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert all(p.dim() == 2 for g in muon for p in g["params"])
        assert model.wte.weight in [p for g in adamw for p in g["params"]]
        qkv = muon[0]
        assert sum(qkv["split"]) == qkv["params"][0].size(0) and qkv["split"] == [32, 16, 16]


def test_muon_rejects_vectors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_muon_lowers_a_loss_and_its_state_round_trips() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, n_layer=2, n_head=2, n_embd=16, block_size=16))
    opt = build_optimizer(model, "muon", 1e-2, 0.1, (0.9, 0.99), fused=False)
    assert isinstance(opt, OptimizerChain)
    x = torch.randint(0, 32, (8, 16))
    losses = []
    for _ in range(30):
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0

    sd = opt.state_dict()
    n_params = len(list(model.parameters()))
    assert sorted(sd["state"]) == list(range(n_params))  # one numbering through the chain
    twin = GPT(model.cfg)
    twin.load_state_dict(model.state_dict())
    opt2 = build_optimizer(twin, "muon", 1e-2, 0.1, (0.9, 0.99), fused=False)
    opt2.load_state_dict(copy.deepcopy(sd))  # torch shares the state's tensors otherwise
    for m, o in ((model, opt), (twin, opt2)):  # one more step each: the same weights after it
        _, loss = m(x[:, :-1], x[:, 1:])
        loss.backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def _twin_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    b = copy.deepcopy(a)
    return a, b


def _groups(m: torch.nn.Module) -> list[dict]:
    decay = [p for n, p in m.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in m.named_parameters() if not n.endswith("weight")]
    return [
        {"params": decay, "weight_decay": 0.1},
        {"params": rest, "weight_decay": 0.0, "lr": 3e-3, "lr_scale": 2.0},
    ]


def _steps(m: torch.nn.Module, opt, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        x = torch.randn(8, 16, generator=g)
        m(x).pow(2).mean().backward()
        if i == 1:
            m[2].bias.grad = None  # a parameter without a gradient is skipped, as torch does
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_fused_adamw_is_torchs_update_bit_for_bit_and_shares_its_state_dict() -> None:
    import sys

    from genloom.train.optim import FusedAdamW

    a, b = _twin_models()
    ours = FusedAdamW(_groups(a), lr=1e-3, betas=(0.9, 0.95))
    theirs = torch.optim.AdamW(_groups(b), lr=1e-3, betas=(0.9, 0.95), fused=True)
    _steps(a, ours, 5, 1)
    _steps(b, theirs, 5, 1)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    sd, ref = ours.state_dict(), theirs.state_dict()
    assert sd["param_groups"] == ref["param_groups"]
    assert sd["state"].keys() == ref["state"].keys()
    for i in ref["state"]:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sd["state"][i][k], ref["state"][i][k]), (i, k)

    # a checkpoint of either resumes in the other, and the runs stay equal
    c, d = _twin_models()
    c.load_state_dict(a.state_dict())
    d.load_state_dict(b.state_dict())
    resumed = FusedAdamW(_groups(c), lr=1e-3, betas=(0.9, 0.95))
    resumed.load_state_dict(theirs.state_dict())
    _steps(c, resumed, 3, 2)
    _steps(b, theirs, 3, 2)
    for p, q in zip(c.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="does not match"):
        FusedAdamW(list(c.parameters()), lr=1e-3, betas=(0.9, 0.95)).load_state_dict(theirs.state_dict())
    assert "torch._dynamo" in sys.modules  # (torch's optimizer imported it in this process)


def test_training_steps_do_not_import_torch_dynamo() -> None:
    """Neither optimizer of the loop imports torch._dynamo (torch.optim's do: ~70 MiB a process)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from genloom.models.gpt import GPT, GPTConfig\n"
        "from genloom.train.optim import build_optimizer\n"
        "for kind in ('adamw', 'muon'):\n"
        "    m = GPT(GPTConfig(vocab_size=32, n_layer=1, n_head=2, n_embd=16, block_size=8))\n"
        "    opt = build_optimizer(m, kind, 1e-2, 0.1, (0.9, 0.99), fused=True)\n"
        "    x = torch.randint(0, 32, (2, 8))\n"
        "    for _ in range(2):\n"
        "        m(x[:, :-1], x[:, 1:])[1].backward(); opt.step(); opt.zero_grad()\n"
        "    opt.load_state_dict(opt.state_dict())\n"
        "print(sorted(k for k in sys.modules if k.startswith('torch._dynamo'))[:3])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
