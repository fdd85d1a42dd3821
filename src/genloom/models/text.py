"""A trained text model at run time: loading its folder, sampling (stop strings, controls, batched
prompts, chat), and its held-out loss over token windows. Used by training, evaluation and
serving alike, so it sits below all three."""

from __future__ import annotations

import contextlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from genloom.core.errors import ConfigError, NotFoundError
from genloom.models.tokenizer import END_OF_TURN, EOD, format_controls
from genloom.models.tokens import TokenBatches, eval_windows, load_tokens, read_sidecar

if TYPE_CHECKING:
    import tokenizers

    from genloom.models.base import TrainPlan


def read_model_config(model_dir: Path | str) -> dict[str, Any]:
    """The genloom config.json of a trained model folder."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise NotFoundError(f"no trained model in {model_dir} (config.json is missing)")
    cfg = dict(json.loads(path.read_text()))
    if cfg.get("format") != "genloom":
        raise NotFoundError(f"{model_dir} is not a genloom model folder (config.json has no format: genloom)")
    return cfg


def load_model(model_dir: Path | str) -> tuple[nn.Module, tokenizers.Tokenizer]:
    """The model (eval mode, CPU or CUDA) and tokenizer saved in ``model_dir`` by ``train()``."""
    from genloom.models.base import family

    model_dir = Path(model_dir)
    cfg = read_model_config(model_dir)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model, tokenizer = family(cfg["model_type"]).load(model_dir, cfg)
    return model.to(device).eval(), tokenizer


@lru_cache(maxsize=4)
def _cached(model_dir: str, stamp: float) -> tuple[nn.Module, tokenizers.Tokenizer]:
    return load_model(model_dir)


def _load_cached(model_dir: Path | str) -> tuple[nn.Module, tokenizers.Tokenizer]:
    """load_model, cached per folder until its config.json changes (serving calls generate per request)."""
    path = Path(model_dir).resolve()
    stamp = (path / "config.json").stat().st_mtime if (path / "config.json").exists() else 0.0
    return _cached(str(path), stamp)


def sample_next(
    logits: torch.Tensor,
    seq: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token per row from ``logits`` (B, vocab); ``seq`` (B, t) is what came before (for the penalty)."""
    logits = logits.clone()
    if repetition_penalty != 1.0:  # CTRL (Keskar et al. 2019): push down tokens already present
        seen = torch.gather(logits, 1, seq)
        logits.scatter_(1, seq, torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty))
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:  # nucleus (Holtzman et al. 2020): smallest set with mass >= top_p
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(
    model_dir: Path | str,
    prompts: list[str],
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop: list[str] | None = None,
    seed: int | None = None,
    controls: dict[str, str] | None = None,
) -> list[str]:
    """Continues each prompt; returns only the new text, cut before the first stop string.

    ``controls`` prefix every prompt with control tokens (``<|sentiment=positive|>``), as in training.
    Prompts of equal token length are generated together in one batch.
    """
    if max_new_tokens < 0 or (top_p is not None and not 0 < top_p <= 1) or repetition_penalty <= 0:
        raise ConfigError(
            "bad sampling settings",
            path="generate",
            hint="max_new_tokens >= 0, 0 < top_p <= 1, repetition_penalty > 0",
        )
    model, tok = _load_cached(model_dir)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.seed() % (2**63)))
    stops = [s for s in (stop or []) if s]
    end_ids = {i for i in (tok.token_to_id(EOD), tok.token_to_id(END_OF_TURN)) if i is not None}
    end_ids |= set(getattr(model, "stop_ids", ()))  # a pretrained model's own end-of-sequence ids
    bos = tok.token_to_id(EOD)  # every training document follows an end-of-document token
    prefix = format_controls(controls)
    encoded = [
        ([bos] if bos is not None else []) + tok.encode(prefix + p, add_special_tokens=False).ids
        for p in prompts
    ]
    if controls:
        unknown = [k for k, v in controls.items() if tok.token_to_id(f"<|{k}={v}|>") is None]
        if unknown:
            raise ConfigError(f"the model was not trained with controls {unknown}", path="generate.controls")
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    outputs = [""] * len(prompts)
    for length, members in groups.items():
        idx = torch.tensor([encoded[i] for i in members], dtype=torch.long, device=device)  # (B, T)

        def text_of(row: torch.Tensor, length: int = length) -> str:
            ids = row[length:].tolist()
            cut = next((j for j, t in enumerate(ids) if t in end_ids), len(ids))
            return str(tok.decode(ids[:cut], skip_special_tokens=True))

        def done(seq: torch.Tensor, length: int = length) -> torch.Tensor:
            new = seq[:, length:]
            flags = [bool(any(t in end_ids for t in row.tolist())) for row in new]
            if stops:
                flags = [
                    f or any(s in text_of(row) for s in stops) for f, row in zip(flags, seq, strict=True)
                ]
            return torch.tensor(flags)

        def sample(logits: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
            return sample_next(logits, seq, temperature, top_k, top_p, repetition_penalty, gen)

        if max_new_tokens == 0:
            continue
        with torch.inference_mode():
            seq = model.generate(idx, max_new_tokens, sample, done)  # type: ignore[operator]
        for i, row in zip(members, seq, strict=True):
            text = text_of(row)
            cuts = [text.find(s) for s in stops if s in text]
            outputs[i] = text[: min(cuts)] if cuts else text
    return outputs


def generate_chat(model_dir: Path | str, messages: list[dict[str, str]], **sampling: Any) -> str:
    """The assistant's reply to a conversation, written with the chat template the model was
    trained with (``train.chat``: genloom's for the GPT, the base model's own for a Hugging Face
    model); generation stops at the end of the turn."""
    from genloom.models.base import family_of

    prompt = family_of(model_dir).chat_prompt(Path(model_dir), messages)  # type: ignore[attr-defined]
    return generate(model_dir, [prompt], **sampling)[0]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast (float32 master weights) or nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    data: np.ndarray,
    block_size: int,
    max_tokens: int | None,
    batch_size: int,
    precision: str = "fp32",
    device: torch.device | None = None,
) -> tuple[float, int]:
    """(mean loss in nats per predicted token, tokens predicted) over non-overlapping windows of ``data``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    full = [w for w in eval_windows(data, block_size, max_tokens)]
    groups: dict[int, list[np.ndarray]] = {}
    for w in full:
        groups.setdefault(len(w), []).append(w)
    for windows in groups.values():
        for i in range(0, len(windows), batch_size):
            w = torch.from_numpy(np.stack(windows[i : i + batch_size])).to(device)
            with autocast(precision, device):
                _, loss = model(w[:, :-1], w[:, 1:])
            n = w[:, 1:].numel()
            total += float(loss) * n
            count += n
    model.train(was_training)
    return (total / count if count else float("nan")), count


class TextData:
    """Packed token files as the training loop sees them (``TrainData``): windows of
    ``block_size + 1`` tokens, the validation loss over the first ``max_units`` validation
    tokens, and bits per character from the validation sidecar."""

    unit = "tokens"

    def __init__(self, train_bin: Path, val_bin: Path, vocab_size: int) -> None:
        self.train, self.val = load_tokens(train_bin), load_tokens(val_bin)
        self.val_meta = read_sidecar(val_bin)
        self.n_train, self.n_val, self.vocab_size = len(self.train), len(self.val), vocab_size
        packed = read_sidecar(train_bin).get("vocab_size")
        if vocab_size and packed and packed > vocab_size:
            raise ConfigError(
                "the token file was packed with a larger vocabulary than tokenizer.json",
                path="train",
                hint="re-pack the data with the tokenizer in the output folder",
            )

    def batches(self, plan: TrainPlan, seed: int, rank: int, world: int, grad_accum: int) -> TokenBatches:
        return TokenBatches(self.train, plan.batch_size, plan.block_size, seed, rank, world, grad_accum)

    def val_loss(self, model: nn.Module, plan: TrainPlan, max_units: int, device: torch.device) -> float:
        batch = max(1, plan.batch_size)
        return evaluate_loss(model, self.val, plan.block_size, max_units, batch, plan.precision, device)[0]

    def final_metrics(self, val_loss: float) -> dict[str, Any]:
        import math

        n_chars, n_tokens = self.val_meta.get("n_chars"), self.val_meta.get("n_tokens")
        return {"val_bpc": val_loss / math.log(2) * n_tokens / n_chars} if n_chars else {}
