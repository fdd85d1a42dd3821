"""The champion's own loss on its outputs: does the model still find what it says likely?

A language model's outputs, sampled from it, cost it about as many bits per character as its
validation text does (fewer at temperatures under 1, which sharpen the distribution). Outputs that
cost it far more are text it would not have written: gibberish from a broken decode or a bad
checkpoint, a server that copies out-of-distribution input, or outputs that did not come from
this model at all. So the quality check ``output_loss`` scores a uniform sample of at most
``OUTPUT_SAMPLE`` of the window's (prompt, output) pairs with the champion itself:

- each pair is written as the server wrote it: the end-of-document token, then the prompt (a
  chat conversation through the family's ``chat_prompt``, the template it was trained with), then
  the output; the loss counts the output's tokens only (the prompt is context), in full
  precision under ``torch.inference_mode``; a pair longer than the model's context keeps the
  output's first ``block_size - 1`` tokens and the end of the prompt before them;
- the outputs' bits per character is their total loss in bits over their characters (as
  ``val_bpc`` is over the validation text's), and the score is its ratio to the version's
  ``val_bpc`` in the catalog: a breach above ``monitor.thresholds.output_bpc_ratio`` (1.5).

The evidence gives both bpc figures, the standard error of the outputs' bpc (of a ratio estimator
over the sampled outputs), the per-output quantiles and the sample's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genloom.core.errors import GenloomError
from genloom.monitor.signals import CHAT_ENDPOINT, Check, Thresholds, WindowAccumulator, _skip, _texts

OUTPUT_SAMPLE = 200
#: tokens per forward pass (rows are right-padded: a causal model's earlier positions never see it)
BATCH_TOKENS = 4096
SEED = 0
SIGNAL, METHOD = "output_loss", "bpc_ratio"

#: a prompt to continue (str) or a chat conversation (its messages), and the output
Pair = tuple[str | list[dict[str, str]], str]


@dataclass
class OutputScores:
    """The model's loss on each scored output: bits, characters and tokens per output."""

    bits: np.ndarray
    chars: np.ndarray
    tokens: np.ndarray
    #: pairs not scored (an output with no token)
    left_out: int

    @property
    def bpc(self) -> float:
        """Bits per character over every scored output."""
        return float(self.bits.sum() / self.chars.sum())

    def standard_error(self) -> float | None:
        """The standard error of ``bpc`` as a ratio estimator over the outputs (None below two)."""
        n = len(self.bits)
        if n < 2:
            return None
        residual = self.bits - self.bpc * self.chars
        return float(math.sqrt(float((residual**2).sum()) / (n * (n - 1))) / float(self.chars.mean()))


def loss_pairs(sample: list[tuple[str, str | None, str | None]]) -> list[Pair]:
    """The (prompt or conversation, output) pairs of sampled requests with a non-empty output. A
    JSON list of prompts pairs with a list of as many outputs; one prompt with each of its outputs."""
    pairs: list[Pair] = []
    for endpoint, prompt, output in sample:
        if prompt is None or output is None:
            continue
        outs = _texts(output, endpoint, "output")
        if endpoint == CHAT_ENDPOINT:
            try:
                messages = json.loads(prompt)
            except ValueError:
                messages = None
            if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
                conversation = [
                    {"role": str(m.get("role")), "content": str(m.get("content") or "")} for m in messages
                ]
                pairs += [(conversation, o) for o in outs if o]
            continue
        prompts = _texts(prompt, endpoint, "prompt")
        if len(prompts) == len(outs):
            pairs += [(p, o) for p, o in zip(prompts, outs, strict=True) if o]
        elif len(prompts) == 1:
            pairs += [(prompts[0], o) for o in outs if o]
    return pairs


def score_outputs(model_dir: Path, pairs: list[Pair]) -> OutputScores:
    """The loss of the model in ``model_dir`` on each pair's output, given its prompt."""
    import torch

    from genloom.models.base import family_of
    from genloom.models.text import load_model, read_model_config
    from genloom.models.tokenizer import EOD

    model, tok = load_model(model_dir)
    block = int(read_model_config(model_dir)["plan"]["block_size"])
    fam = family_of(model_dir)
    bos = tok.token_to_id(EOD)
    rows: list[tuple[list[int], int, int]] = []  # (tokens, where the output starts, its characters)
    left_out = 0
    for context, output in pairs:
        prompt = context if isinstance(context, str) else fam.chat_prompt(model_dir, context)  # type: ignore[attr-defined]
        ctx = ([bos] if bos is not None else []) + tok.encode(prompt, add_special_tokens=False).ids
        out = tok.encode(output, add_special_tokens=False).ids
        if not out:
            left_out += 1
            continue
        chars = len(output)
        if len(out) > block - 1:
            out = out[: block - 1]
            chars = len(tok.decode(out))
        ctx = ctx[-(block - len(out)) :]  # the end of the prompt that fits before the output
        if not ctx:  # nothing before the first output token: it cannot be predicted
            chars -= len(tok.decode(out[:1]))
            ctx, out = out[:1], out[1:]
        if not out or chars <= 0:
            left_out += 1
            continue
        rows.append((ctx + out, len(ctx), chars))
    device = next(model.parameters()).device
    bits = np.zeros(len(rows))
    tokens = np.zeros(len(rows), dtype=np.int64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    start = 0
    with torch.inference_mode():
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * len(rows[order[stop]][0]) <= BATCH_TOKENS:
                stop += 1
            members = order[start:stop]
            longest = max(len(rows[i][0]) for i in members)
            idx = torch.zeros((len(members), longest), dtype=torch.long)  # (B, T), right-padded
            scored = torch.zeros((len(members), longest - 1), dtype=torch.bool)  # (B, T-1)
            for b, i in enumerate(members):
                ids, n_ctx, _ = rows[i]
                idx[b, : len(ids)] = torch.tensor(ids)
                scored[b, n_ctx - 1 : len(ids) - 1] = True  # logits at t predict token t + 1
            logits, _ = model(idx.to(device))  # (B, T, vocab)
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = logp.gather(-1, idx[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            nats = -(target.cpu() * scored).sum(1)
            for b, i in enumerate(members):
                bits[i] = float(nats[b]) / math.log(2)
                tokens[i] = int(scored[b].sum())
            start = stop
    return OutputScores(bits, np.array([r[2] for r in rows], dtype=float), tokens, left_out)


def output_loss_check(
    model_dir: Callable[[], Path],
    metrics: dict[str, Any],
    sample: list[tuple[str, str | None, str | None]],
    text_requests: int,
    th: Thresholds,
    sampled_from: int | None = None,
) -> Check:
    """The outputs' bits per character against ``metrics["val_bpc"]`` (``model_dir`` is called
    only when there are outputs to score)."""
    if text_requests < th.min_requests:
        why = f"{text_requests} text requests in the window (at least {th.min_requests} needed)"
        return _skip("quality", SIGNAL, METHOD, th.output_bpc_ratio, why)
    val_bpc = metrics.get("val_bpc")
    if not isinstance(val_bpc, int | float) or not math.isfinite(val_bpc) or val_bpc <= 0:
        why = "the champion's metrics in the catalog have no val_bpc to compare with"
        return _skip("quality", SIGNAL, METHOD, th.output_bpc_ratio, why)
    if len(sample) > OUTPUT_SAMPLE:
        keep = np.sort(np.random.default_rng(SEED).choice(len(sample), OUTPUT_SAMPLE, replace=False))
        sample = [sample[i] for i in keep]
    pairs = loss_pairs(sample)
    if not pairs:
        why = "no prompt and output pairs in the window (empty outputs, or not stored: a server with redact: true)"
        return _skip("quality", SIGNAL, METHOD, th.output_bpc_ratio, why)
    try:
        scores = score_outputs(model_dir(), pairs)
    except (GenloomError, OSError) as e:  # a missing or unreadable model; anything else is a bug
        return _skip(
            "quality", SIGNAL, METHOD, th.output_bpc_ratio, f"the champion could not score its outputs: {e}"
        )
    if len(scores.bits) == 0:
        return _skip("quality", SIGNAL, METHOD, th.output_bpc_ratio, "no output has a token to score")
    bpc = scores.bpc
    ratio = bpc / float(val_bpc)
    per_output = scores.bits / scores.chars
    se = scores.standard_error()
    evidence = {
        "bpc": bpc,
        "val_bpc": float(val_bpc),
        "bpc_standard_error": se,
        "ratio_standard_error": se / float(val_bpc) if se is not None else None,
        "outputs": len(scores.bits),
        "left_out": scores.left_out,
        "pairs_sampled": len(sample),
        "window_requests_sampled_from": sampled_from,
        "tokens": int(scores.tokens.sum()),
        "chars": int(scores.chars.sum()),
        "output_bpc_p50": float(np.quantile(per_output, 0.5)),
        "output_bpc_p90": float(np.quantile(per_output, 0.9)),
        "outputs_over_threshold": int((per_output > th.output_bpc_ratio * float(val_bpc)).sum()),
    }
    return Check(
        "quality", SIGNAL, METHOD, ratio, th.output_bpc_ratio, ratio > th.output_bpc_ratio, None, evidence
    )


class OutputLossCheck:
    """The output-loss check of a champion's window (a ``run_checks`` sample check)."""

    def __init__(self, model_dir: Callable[[], Path], metrics: dict[str, Any]) -> None:
        self.model_dir, self.metrics = model_dir, metrics

    def __call__(self, acc: WindowAccumulator, th: Thresholds) -> list[Check]:
        return [
            output_loss_check(
                self.model_dir, self.metrics, acc.sample, acc.text_requests, th, acc.sample_seen
            )
        ]
