"""The training loop: loss falls, exact resume (also after kill -9), budgets, early stopping."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from genloom.core.errors import NotFoundError
from genloom.models.base import TrainPlan
from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import pack_tokens
from genloom.train.checkpoint import latest_checkpoint
from genloom.train.config import TrainConfig, parse_duration
from genloom.train.loop import train
from genloom.train.plan import lr_at


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subj, verb, obj = (
        ["the cat", "a dog", "my friend", "the king"],
        ["sees", "likes", "eats", "finds"],
        ["fish", "bread", "a hat", "the moon"],
    )
    return [
        " ".join(f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}." for _ in range(5))
        for _ in range(n)
    ]


def prepare(tmp: Path, kind: str = "char") -> tuple[Path, Path, Path]:
    docs = corpus(300)
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind=kind, vocab_size=300 if kind == "bpe" else None))
    out = tmp / "model"
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:270], tmp / "train.bin")
    pack_tokens(tok, docs[270:], tmp / "val.bin")
    return tmp / "train.bin", tmp / "val.bin", out


TINY = {"type": "gpt", "preset": "tiny", "block_size": 32}


def test_tiny_model_learns(tmp_path: Path) -> None:
    tr, va, out = prepare(tmp_path, kind="bpe")
    seen: list[tuple[int, dict]] = []
    cfg = TrainConfig(model=TINY, max_steps=60, batch_size=8, lr=3e-3, log_interval=5, eval_interval=20)
    m = train(cfg, tr, va, out, progress=lambda s, n, info: seen.append((s, info)))
    assert m["steps"] == 60 and m["tokens"] == 60 * 8 * 32
    vals = [i["val_loss"] for _, i in seen if "val_loss" in i]
    assert vals[-1] < vals[0] - 0.5  # the loss falls
    assert m["val_loss"] < 4.0 and m["val_bpc"] > 0
    assert {"loss", "tokens_per_s", "lr", "eta_s"} <= set(seen[-1][1])
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["model_type"] == "gpt" and cfg_json["train"]["max_steps"] == 60
    assert (out / "model.safetensors").exists() and (out / "metrics.json").exists()


class Interrupt(Exception):
    pass


def losses_by_step(
    cfg: TrainConfig, tr: Path, va: Path, out: Path, stop_at: int | None = None
) -> dict[int, float]:
    got: dict[int, float] = {}

    def progress(step: int, n: int | None, info: dict) -> None:
        got[step] = info["loss"]
        if stop_at is not None and step == stop_at:
            raise Interrupt

    try:
        m = train(cfg, tr, va, out, progress=progress)
        got[-1] = m["val_loss"]
    except Interrupt:
        pass
    return got


@pytest.mark.parametrize(("ema_decay", "optimizer"), [(None, "adamw"), (0.9, "adamw"), (None, "muon")])
def test_resume_gives_the_same_loss_curve(tmp_path: Path, ema_decay: float | None, optimizer: str) -> None:
    tr, va, out = prepare(tmp_path)
    cfg = TrainConfig(
        model={**TINY, "dropout": 0.1},
        max_steps=24,
        batch_size=4,
        log_interval=1,
        checkpoint_interval=8,
        grad_accum=2,
        ema_decay=ema_decay,
        optimizer=optimizer,
    )
    straight = losses_by_step(cfg, tr, va, out)
    out2 = tmp_path / "model2"
    out2.mkdir()
    (out2 / "tokenizer.json").write_bytes((out / "tokenizer.json").read_bytes())
    first = losses_by_step(cfg, tr, va, out2, stop_at=13)  # dies after the step-8 checkpoint
    assert max(first) == 13
    second = losses_by_step(cfg, tr, va, out2)
    assert min(second) == -1 and min(k for k in second if k > 0) == 9  # resumed at step 9
    assert {**first, **second} == straight  # bit for bit, losses and final val loss


def test_resume_after_kill_9(tmp_path: Path) -> None:
    tr, va, out = prepare(tmp_path)
    cfg = TrainConfig(
        model=TINY, max_steps=600, batch_size=4, checkpoint_interval=5, precision="fp32", threads=1
    )
    script = (
        "import sys; from pathlib import Path; from genloom.train.config import TrainConfig; from genloom.train.loop import train; "
        "cfg = TrainConfig.model_validate_json(sys.argv[1]); "
        "train(cfg, Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, cfg.model_dump_json(), str(tr), str(va), str(out)])
    deadline = time.monotonic() + 120

    def last_step() -> int:
        ck = latest_checkpoint(out)
        return int(ck.name.split("_")[1]) if ck is not None else 0

    while time.monotonic() < deadline and proc.poll() is None and last_step() < 15:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed = losses_by_step(cfg, tr, va, out)
    assert min(k for k in resumed if k > 0) > 1  # did not start over
    ref_out = tmp_path / "ref"
    ref_out.mkdir()
    (ref_out / "tokenizer.json").write_bytes((out / "tokenizer.json").read_bytes())
    assert losses_by_step(cfg, tr, va, ref_out)[-1] == resumed[-1]


class ModelClock:
    """The training loop's clock, moved only by the model: ``per_token`` seconds per token of a
    training forward (with its backward), a third of that for an evaluation (no gradients), and
    ``slowdown`` times as much after ``slow_after`` forwards. Timings never decide a unit test."""

    def __init__(self, per_token: float, slow_after: int | None = None, slowdown: float = 1.0) -> None:
        self.now, self.forwards = 0.0, 0
        self.per_token, self.slow_after, self.slowdown = per_token, slow_after, slowdown

    def monotonic(self) -> float:
        return self.now

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import genloom.train.budget as budget
        import genloom.train.loop as loop
        from genloom.models.gpt import GPT

        forward = GPT.forward

        def timed_forward(model: GPT, idx: torch.Tensor, *args: object, **kwargs: object) -> object:
            self.forwards += 1
            cost = idx.numel() * self.per_token * (1.0 if torch.is_grad_enabled() else 1 / 3)
            self.now += cost * (self.slowdown if self.slow_after and self.forwards > self.slow_after else 1)
            return forward(model, idx, *args, **kwargs)

        monkeypatch.setattr(GPT, "forward", timed_forward)
        monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=self.monotonic))
        monkeypatch.setattr(budget, "time", SimpleNamespace(monotonic=self.monotonic))


def test_time_budget_sizes_the_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tr, va, out = prepare(tmp_path)  # 3,160 validation tokens: evaluations read 2,048 of them
    clock = ModelClock(per_token=1e-4)  # a step of 4 x 32 tokens: 12.8 ms
    clock.install(monkeypatch)
    m = train(TrainConfig(model=TINY, time_budget="8s", batch_size=4, eval_tokens=2048), tr, va, out)
    plan = json.loads((out / "config.json").read_text())["plan"]
    # the schedule was re-sized from real steps early on, and the run did all of it
    assert plan["measured_step_s"] == pytest.approx(128 * 1e-4) and "first_estimate_steps" in plan
    assert m["steps"] == m["max_steps"] == plan["max_steps"] and m["stopped"] == "max_steps"
    # it fills the budget without overrunning it, the evaluations and the final one included
    assert 0.85 * 8 < m["wall_s"] == clock.now <= 8
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    with pytest.raises(ValueError):
        TrainConfig(time_budget="soon")


def test_time_budget_counts_the_validation_tokens_there_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tr, va, out = prepare(tmp_path)
    ModelClock(per_token=1e-4).install(monkeypatch)
    m = train(TrainConfig(model=TINY, time_budget="8s", batch_size=4), tr, va, out)
    assert 0.85 * 8 < m["wall_s"] <= 8


def test_time_budget_stops_a_run_that_became_much_slower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tr, va, out = prepare(tmp_path)
    ModelClock(per_token=1e-4, slow_after=100, slowdown=10).install(monkeypatch)  # 10x slower once sized
    m = train(TrainConfig(model=TINY, time_budget="8s", batch_size=4, eval_tokens=2048), tr, va, out)
    assert m["stopped"] == "time_budget" and m["steps"] < m["max_steps"]
    # the first step past 1.5x the budget ends it (a slowed step: 0.128 s; the final evaluation: 0.7 s),
    # where the planned 535 steps would have taken over a minute
    assert 1.5 * 8 < m["wall_s"] < 1.5 * 8 + 1


def test_early_stopping_keeps_the_best_weights(tmp_path: Path) -> None:
    tr, va, out = prepare(tmp_path)
    cfg = TrainConfig(
        model=TINY,
        max_steps=200,
        batch_size=4,
        lr=0.05,
        schedule="constant",
        eval_interval=2,
        early_stopping_patience=2,
    )
    m = train(cfg, tr, va, out)
    assert m["stopped"] == "early_stopping" and m["steps"] < 200
    assert m["val_loss"] == pytest.approx(m["best_val_loss"])


def test_schedules() -> None:
    plan = TrainPlan("gpt", lr=1.0, max_steps=100, warmup_steps=10)
    cos = TrainConfig(min_lr_ratio=0.1)
    assert lr_at(0, plan, cos) == pytest.approx(0.1) and lr_at(9, plan, cos) == pytest.approx(1.0)
    assert lr_at(99, plan, cos) == pytest.approx(0.1, abs=1e-3)
    wsd = TrainConfig(schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_at(79, plan, wsd) == 1.0 and lr_at(90, plan, wsd) == pytest.approx(0.5)


def test_missing_tokenizer_is_reported(tmp_path: Path) -> None:
    tr, va, out = prepare(tmp_path)
    (out / "tokenizer.json").unlink()
    with pytest.raises(NotFoundError):
        train(TrainConfig(model=TINY, max_steps=2), tr, va, out)


def test_weight_average_is_what_gets_evaluated_and_saved(tmp_path: Path) -> None:
    """With ema_decay the saved weights are the average, not the last step's."""
    from safetensors.torch import load_file

    from genloom.train.ema import WeightEMA

    tr, va, out = prepare(tmp_path)
    m = train(TrainConfig(model=TINY, max_steps=30, batch_size=4, ema_decay=0.9), tr, va, out)
    saved = load_file(str(out / "model.safetensors"))
    last = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    assert all(torch.equal(saved[k], last[k]) for k in last)  # the final checkpoint holds the average
    ema_out = tmp_path / "plain"
    ema_out.mkdir()
    (ema_out / "tokenizer.json").write_bytes((out / "tokenizer.json").read_bytes())
    plain = train(TrainConfig(model=TINY, max_steps=30, batch_size=4), tr, va, ema_out)
    assert plain["train_loss"] == m["train_loss"]  # training itself is unchanged
    assert plain["val_loss"] != m["val_loss"]  # but another set of weights is evaluated
    model = torch.nn.Linear(2, 2)
    ema = WeightEMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()  # decay_t = min(0.5, 2/11): mostly the new weights
    with ema.swapped():
        assert torch.allclose(model.weight, ema.shadow[0])
    assert not torch.allclose(model.weight, ema.shadow[0])  # restored outside the block


def test_dropout_is_chosen_from_the_passes_over_the_data() -> None:
    from genloom.train.plan import make_plan

    cpu = torch.device("cpu")
    data = SimpleNamespace(n_train=10_000, n_val=1_000, vocab_size=256, unit="tokens")
    many = TrainConfig(model=TINY, max_steps=1000, batch_size=4)  # 1000 x 4 x 32 tokens over 10k: 12.8 passes
    assert make_plan(many, data, cpu).model["gpt"]["dropout"] == 0.1
    once = TrainConfig(model=TINY, batch_size=4)  # no max_steps, no budget: one pass
    assert make_plan(once, data, cpu).model["gpt"]["dropout"] == 0.0
    fixed = TrainConfig(model={**TINY, "dropout": 0.0}, max_steps=1000, batch_size=4)
    assert make_plan(fixed, data, cpu).model["gpt"]["dropout"] == 0.0  # the config's choice stands
