"""The engine's fast paths give what the plain paths give: batched sampling (``sample_rows``) picks
the token ``models.text.sample_next`` picks for each row alone, step after step from the same
seeded generators; the windowed detokenisation streams the text a full decode gives; the decode
step without a mask (rows at one position) and with a non-contiguous cache equals a full forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genloom.models.gpt import GPT, GPTConfig
from genloom.models.text import _load_cached, sample_next
from genloom.serve.engine import (
    Delta,
    Finish,
    GPTEngine,
    SamplingParams,
    _Row,
    _slot_cache,
    decode_step,
    encode_prompt,
    exponential_matches_torch,
    sample_rows,
)

SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=0.8),
    dict(temperature=1.3, top_k=5),
    dict(temperature=0.7, top_k=40),
    dict(temperature=0.9, top_p=0.8),
    dict(temperature=1.0, top_k=20, top_p=0.9),
    dict(temperature=0.6, top_p=0.5),
    dict(temperature=0.0, repetition_penalty=1.5),
    dict(temperature=0.9, top_k=10, repetition_penalty=1.2),
    dict(temperature=0.8),
]


def _rows(seed: int) -> list[_Row]:
    rows = []
    for i, kw in enumerate(SETTINGS):
        gen = torch.Generator().manual_seed(seed + i) if kw["temperature"] > 0 else None
        params = SamplingParams(**kw)  # type: ignore[arg-type]
        rows.append(_Row(None, i, [1, 2, 3], [1, 2, 3, 4 + i], params, gen, None))  # type: ignore[arg-type]
    return rows


@pytest.mark.parametrize("fast", [True, False])
def test_sample_rows_picks_what_sample_next_picks_for_each_row_alone(fast: bool) -> None:
    if fast:
        assert exponential_matches_torch()  # this torch build takes the fast draw
    together, alone = _rows(7), _rows(7)
    gen = torch.Generator().manual_seed(0)
    picked: list[list[int]] = []
    for _ in range(25):  # the generators advance step by step in both
        logits = torch.randn((len(SETTINGS), 97), generator=gen) * 3
        got = sample_rows(logits, together, fast)
        want = []
        for i, r in enumerate(alone):
            p = r.params
            seq = torch.tensor([r.full_prompt + r.generated])
            want.append(
                int(
                    sample_next(
                        logits[i : i + 1],
                        seq,
                        p.temperature,
                        p.top_k,
                        p.top_p,
                        p.repetition_penalty,
                        r.generator,
                    )
                )
            )
        assert got == want
        for r, a, t in zip(together, alone, got, strict=True):
            r.generated.append(t)
            a.generated.append(t)
        picked.append(got)
    assert len({tuple(col) for col in zip(*picked, strict=True)}) > 5  # the rows really sample


def test_windowed_detokenisation_streams_what_a_full_decode_gives(tiny_gpt: Path) -> None:
    model, tok = _load_cached(tiny_gpt)
    eng = GPTEngine(model, tok, max_batch=2)  # type: ignore[arg-type]
    text = " ĥé ✓ wörld naïve ĉ"  # 26 byte-level tokens: the prompt and they fit the block of 32
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) > 20  # longer than the detokenisation window (16): it restarts
    prompt = encode_prompt(tok, "alpha", None)

    class Forced:
        def __init__(self, ids: list[int]) -> None:
            self.ids, self.n = ids, 0

        def allowed(self) -> torch.Tensor:
            mask = torch.zeros(model.cfg.vocab_size, dtype=torch.bool)  # type: ignore[union-attr]
            mask[self.ids[min(self.n, len(self.ids) - 1)]] = True
            return mask

        def advance(self, token_id: int) -> None:
            self.n += 1

        def finished(self) -> bool:
            return self.n == len(self.ids)

        def accepted(self) -> bool:
            return True

    # the whole text; then a cut inside a multi-byte character (max_tokens ends the row there)
    cut = next(k for k in range(len(ids) - 1, 0, -1) if tok.decode(ids[:k]).endswith("\ufffd"))
    jobs = [
        eng.submit([prompt], [SamplingParams(max_new_tokens=len(ids), temperature=0)], [Forced(ids)]),
        eng.submit([prompt], [SamplingParams(max_new_tokens=cut, temperature=0)], [Forced(ids)]),
    ]
    eng.start()
    try:
        events = [list(j.events(30)) for j in jobs]
    finally:
        eng.stop(5)
    for evs, n in zip(events, (len(ids), cut), strict=True):
        finish = evs[-1]
        assert isinstance(finish, Finish) and finish.completion_tokens == n
        assert finish.text == tok.decode(ids[:n], skip_special_tokens=True)
        deltas = [e.text for e in evs if isinstance(e, Delta)]
        assert "".join(deltas) == finish.text
    assert events[1][-1].text.endswith("\ufffd")  # type: ignore[union-attr]


def test_decode_step_at_one_position_and_on_a_strided_cache_equals_a_full_forward() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=200, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=40)).eval()
    seqs = [torch.randint(3, 200, (12,)) for _ in range(3)]  # every row at position 11: no mask
    for strided in (False, True):
        shape = (3, 2, 40, 8)
        if strided:  # slots, kv heads, block, head dim as a non-contiguous view
            k = [torch.randn(3, 40, 2, 8).transpose(1, 2) for _ in range(2)]
            v = [torch.randn(3, 40, 2, 8).transpose(1, 2) for _ in range(2)]
        else:
            k = [torch.randn(shape) for _ in range(2)]
            v = [torch.randn(shape) for _ in range(2)]
        with torch.inference_mode():
            for slot, seq in enumerate(seqs):
                model(seq[None, :-1], cache=_slot_cache(k, v, slot, 40), pos=0)
            tokens = torch.tensor([int(s[-1]) for s in seqs])
            logits = decode_step(model, k, v, tokens, torch.full((3,), 11))
            for i, seq in enumerate(seqs):
                full, _ = model(seq[None])
                torch.testing.assert_close(logits[i], full[0, -1], atol=1e-4, rtol=1e-4)


def test_deltas_a_busy_reader_has_not_read_yet_come_as_one() -> None:
    import asyncio

    from genloom.serve.engine import Job, TokenLogprob

    async def main() -> list[object]:
        job = Job(2, None, asyncio.get_running_loop())
        lp = TokenLogprob("b", -0.5)
        for event in (
            Delta(0, "a"),
            Delta(1, "x"),
            Delta(0, "b", (lp,)),  # row 0's latest unread event is a Delta: they merge
            Finish(1, "x", "stop", 1, 3),
            Delta(0, "c"),
        ):
            job._deliver(event)
        first = await job.next_event(1.0)  # "abc": "b" and "c" joined "a" (past row 1's events)
        job._deliver(Delta(0, "d"))  # nothing of row 0 waits now: a Delta of its own
        job._deliver(Finish(0, "abcd", "length", 4, 3))
        return [first] + [e async for e in job.aevents()]

    lp = TokenLogprob("b", -0.5)
    assert asyncio.run(main()) == [
        Delta(0, "abc", (lp,)),
        Delta(1, "x"),
        Finish(1, "x", "stop", 1, 3),
        Delta(0, "d"),
        Finish(0, "abcd", "length", 4, 3),
    ]
