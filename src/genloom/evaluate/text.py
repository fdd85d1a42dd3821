"""Held-out loss of a trained text model: nats per token, bits per character, perplexity.

Bits per character compare models with different tokenizers: the total loss over the validation
text, in bits, divided by its characters (``n_chars`` from the token file's sidecar).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from genloom.models.text import evaluate_loss, load_model, read_model_config
from genloom.models.tokens import load_tokens, read_sidecar


def evaluate_text_model(model_dir: Path, val_bin: Path, max_tokens: int | None = None) -> dict[str, Any]:
    """Loss of the model in ``model_dir`` on ``val_bin``, over non-overlapping context windows (deterministic)."""
    model, _ = load_model(model_dir)
    cfg = read_model_config(model_dir)
    block = int(cfg["plan"]["block_size"])
    data = load_tokens(val_bin)
    meta = read_sidecar(val_bin)
    precision = "fp32"  # evaluation in full precision: comparable across runs and machines
    with torch.inference_mode():
        loss, n_pred = evaluate_loss(model, data, block, max_tokens, batch_size=16, precision=precision)
    out: dict[str, Any] = {
        "val_loss": loss,
        "val_ppl": math.exp(loss) if loss < 700 else float("inf"),
        "val_tokens": n_pred,
    }
    n_chars, n_tokens = meta.get("n_chars"), meta.get("n_tokens")
    # characters covered by the predicted tokens; exact when every token is evaluated
    out["val_bpc"] = loss / math.log(2) * n_tokens / n_chars if n_chars and n_tokens else None
    return out


def evaluate_on_texts(model_dir: Path, texts: list[str], max_tokens: int | None = None) -> dict[str, Any]:
    """Evaluate a model on raw texts, tokenised with its own tokenizer (so a champion and a
    challenger with different tokenizers are scored on the same data; compare them in bpc)."""
    import tempfile

    from tokenizers import Tokenizer

    from genloom.models.tokens import pack_tokens

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    with tempfile.TemporaryDirectory() as tmp:
        pack_tokens(tokenizer, iter(texts), Path(tmp) / "val.bin")
        return evaluate_text_model(Path(model_dir), Path(tmp) / "val.bin", max_tokens=max_tokens)
