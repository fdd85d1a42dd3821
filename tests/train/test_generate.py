"""Generation from a trained folder: seeds, stop strings, batches, control tokens, repetition penalty."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from genloom.core.errors import ConfigError, NotFoundError
from genloom.models.text import generate, load_model, sample_next
from genloom.models.tokenizer import TokenizerConfig, control_token, format_controls, train_tokenizer
from genloom.models.tokens import pack_tokens
from genloom.train.config import TrainConfig
from genloom.train.loop import train


@pytest.fixture(scope="module")
def mood_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on documents whose words follow a control token: happy -> 'yay', sad -> 'boo'."""
    tmp = tmp_path_factory.mktemp("mood")
    rng = random.Random(0)
    docs = []
    for _ in range(400):
        mood = rng.choice(["happy", "sad"])
        word = "yay" if mood == "happy" else "boo"
        docs.append(format_controls({"mood": mood}) + " ".join(word for _ in range(rng.randint(3, 6))) + ".")
    controls = [control_token("mood", m) for m in ("happy", "sad")]
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind="char", control_tokens=controls))
    out = tmp / "model"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:360], tmp / "train.bin")
    pack_tokens(tok, docs[360:], tmp / "val.bin")
    cfg = TrainConfig(
        model={"type": "gpt", "preset": "tiny", "block_size": 32}, max_steps=150, batch_size=16, lr=1e-2
    )
    train(cfg, tmp / "train.bin", tmp / "val.bin", out)
    return out


def test_controls_change_the_generated_attribute(mood_model: Path) -> None:
    happy = generate(mood_model, [""] * 8, max_new_tokens=12, seed=0, controls={"mood": "happy"})
    sad = generate(mood_model, [""] * 8, max_new_tokens=12, seed=0, controls={"mood": "sad"})
    assert sum(t.count("y") for t in happy) > 3 * max(1, sum(t.count("b") for t in happy))
    assert sum(t.count("b") for t in sad) > 3 * max(1, sum(t.count("y") for t in sad))
    with pytest.raises(ConfigError):
        generate(mood_model, ["x"], controls={"mood": "angry"})


def test_seed_stop_and_batches(mood_model: Path) -> None:
    prompts = ["yay", "boo boo", "yay"]
    a = generate(mood_model, prompts, max_new_tokens=10, seed=3, temperature=1.0, top_k=None, top_p=0.9)
    b = generate(mood_model, prompts, max_new_tokens=10, seed=3, temperature=1.0, top_k=None, top_p=0.9)
    assert a == b and len(a) == 3
    cut = generate(mood_model, ["yay"], max_new_tokens=20, temperature=0, stop=[" "])
    assert " " not in cut[0]
    assert generate(mood_model, ["a"], max_new_tokens=0) == [""]


def test_repetition_penalty_pushes_down_tokens_already_seen(mood_model: Path) -> None:
    """CTRL's penalty: a seen token's positive logit is divided, a negative one multiplied, so the
    greedy choice moves to an unseen token, and greedy text from the model repeats itself less."""
    logits = torch.tensor([[2.0, 1.9, 0.0], [-1.0, -1.2, -5.0]])  # (B, vocab)
    seen = torch.tensor([[0], [0]])  # (B, t): token 0 came before in both rows
    plain = sample_next(logits, seen, 0, None, None, 1.0, None)
    assert plain.tolist() == [0, 0]
    assert sample_next(logits, seen, 0, None, None, 1.3, None).tolist() == [1, 1]  # 2/1.3 < 1.9, -1.3 < -1.2

    def repeats(prompt: str, text: str) -> int:
        """How many generated characters (tokens of this char-level model) were already in the text."""
        before = set(prompt)
        n = 0
        for ch in text:
            n += ch in before
            before.add(ch)
        return n

    for prompt in ("boo", "yay", "boo boo"):
        free, penalised = (
            generate(mood_model, [prompt], max_new_tokens=8, temperature=0, repetition_penalty=p)[0]
            for p in (1.0, 2.0)
        )
        assert repeats(prompt, penalised) < repeats(prompt, free), (prompt, free, penalised)


def test_load_model_errors(tmp_path: Path, mood_model: Path) -> None:
    model, tok = load_model(mood_model)
    assert not model.training and tok.get_vocab_size() > 10
    with pytest.raises(NotFoundError):
        load_model(tmp_path)
