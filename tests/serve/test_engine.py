"""The continuous-batching engine, driven directly on the tiny trained GPT: greedy outputs equal
``models.text.generate``'s alone and batched, per-row sampling, stops, logprobs, constraints,
the prefix cache, queue limits, timeouts, cancellation and shutdown."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genloom.models.gpt import GPT, GPTConfig
from genloom.models.text import _load_cached, generate
from genloom.serve.engine import (
    Delta,
    EngineBusy,
    Finish,
    GPTEngine,
    SamplingParams,
    _slot_cache,
    decode_step,
    encode_prompt,
    fit_block,
    held_back,
)

PROMPTS = ["alpha", "beta gamma delta", "gamma", "delta alpha beta gamma alpha", "beta"]


@pytest.fixture
def engine(tiny_gpt: Path) -> Iterator[GPTEngine]:
    model, tok = _load_cached(tiny_gpt)
    eng = GPTEngine(model, tok, max_batch=4, max_queue=8)  # type: ignore[arg-type]
    eng.start()
    yield eng
    eng.stop(drain_s=5)


def _ids(engine: GPTEngine, prompt: str) -> list[int]:
    return encode_prompt(engine.tok, prompt, None)


def test_greedy_matches_generate_alone_and_batched(tiny_gpt: Path, engine: GPTEngine) -> None:
    expected = [generate(tiny_gpt, [p], max_new_tokens=12, temperature=0)[0] for p in PROMPTS]
    assert len(set(expected)) > 1  # the prompts lead to different texts: the check has teeth
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    alone = [engine.submit([_ids(engine, p)], [greedy]).results(30)[0].text for p in PROMPTS]
    assert alone == expected
    # five rows of different lengths over four slots: rows join and leave the running batch
    together = engine.submit([_ids(engine, p) for p in PROMPTS], [greedy] * len(PROMPTS)).results(30)
    assert [f.text for f in together] == expected
    assert all(f.finish_reason == "length" and f.completion_tokens == 12 for f in together)
    # a request joining a batch already running (its rows at other positions) still matches
    long = engine.submit([_ids(engine, PROMPTS[3])], [SamplingParams(max_new_tokens=25, temperature=0)])
    time.sleep(0.01)
    late = engine.submit([_ids(engine, PROMPTS[0])], [greedy]).results(30)
    assert late[0].text == expected[0]
    assert long.results(30)[0].text.startswith(expected[3])


def test_streamed_deltas_add_up_to_the_text(engine: GPTEngine) -> None:
    job = engine.submit([_ids(engine, "alpha beta")], [SamplingParams(max_new_tokens=10, temperature=0)])
    events = list(job.events(30))
    deltas = [e for e in events if isinstance(e, Delta)]
    (finish,) = [e for e in events if isinstance(e, Finish)]
    assert isinstance(events[-1], Finish) and len(deltas) > 1  # token by token, not one block
    assert "".join(d.text for d in deltas) == finish.text


def test_sampling_is_reproducible_per_seed_and_rows_differ(engine: GPTEngine) -> None:
    ids = _ids(engine, "alpha")
    p = SamplingParams(max_new_tokens=10, temperature=1.0, seed=7)
    first = [f.text for f in engine.submit([ids] * 3, [p] * 3).results(30)]
    again = [f.text for f in engine.submit([ids] * 3, [p] * 3).results(30)]
    assert first == again  # the same seed, the same choices, whatever else ran
    assert len(set(first)) > 1  # n > 1: each row has its own generator


def test_stop_strings_cut_and_hold_back(engine: GPTEngine) -> None:
    ids = _ids(engine, "beta gamma delta")
    free = engine.submit([ids], [SamplingParams(max_new_tokens=12, temperature=0)]).results(30)[0].text
    stop = free[8:11]  # a piece of the second word
    job = engine.submit([ids], [SamplingParams(max_new_tokens=12, temperature=0, stop=(stop,))])
    events = list(job.events(30))
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.finish_reason == "stop"
    assert finish.text == free[: free.find(stop)] and len(finish.text) >= 2
    assert stop not in "".join(e.text for e in events if isinstance(e, Delta))
    assert held_back("abc de", ["def"]) == 2 and held_back("abc", ["x"]) == 0
    assert held_back("ab\ufffd", []) == 1


def test_logprobs_are_normalised_and_name_the_chosen_token(engine: GPTEngine) -> None:
    job = engine.submit([_ids(engine, "beta")], [SamplingParams(max_new_tokens=4, temperature=0, logprobs=3)])
    entries = [lp for e in job.events(30) if isinstance(e, Delta) for lp in e.logprobs]
    assert len(entries) == 4
    for lp in entries:
        assert len(lp.top) == 3 and lp.logprob <= 0
        assert lp.top[0][1] == pytest.approx(lp.logprob)  # greedy: the chosen token is the likeliest
        assert lp.top[0][0] == lp.token
        assert sum(torch.tensor([v for _, v in lp.top]).exp().tolist()) <= 1 + 1e-5


class DigitsOnly:
    """A constraint that allows only the given ids and is accepted after ``need`` tokens."""

    def __init__(self, allowed_ids: list[int], vocab: int, need: int, stop_after: int | None = None) -> None:
        self.mask = torch.zeros(vocab, dtype=torch.bool)
        self.mask[allowed_ids] = True
        self.n, self.need, self.stop_after = 0, need, stop_after

    def allowed(self) -> torch.Tensor:
        return self.mask

    def advance(self, token_id: int) -> None:
        assert bool(self.mask[token_id]), token_id
        self.n += 1

    def finished(self) -> bool:
        return self.stop_after is not None and self.n >= self.stop_after

    def accepted(self) -> bool:
        return self.n >= self.need


def test_a_constraint_masks_sampling_ends_the_row_and_fails_closed(engine: GPTEngine) -> None:
    vocab = engine.cfg.vocab_size
    only = [engine.tok.token_to_id(w) for w in ("a", "b")]
    assert None not in only
    ids = _ids(engine, "alpha")
    ok = engine.submit(
        [ids], [SamplingParams(max_new_tokens=10, temperature=1.0, seed=0)], [DigitsOnly(only, vocab, 2, 3)]
    ).results(30)[0]
    assert ok.error is None and ok.finish_reason == "stop" and ok.completion_tokens == 3
    assert set(ok.text) <= {"a", "b"}
    short = engine.submit(
        [ids], [SamplingParams(max_new_tokens=2, temperature=0)], [DigitsOnly(only, vocab, 5)]
    ).results(30)[0]
    assert short.error is not None and short.error.code == "structured_output_incomplete"


def test_prefix_cache_reuses_a_long_shared_prompt(tiny_gpt: Path) -> None:
    model, tok = _load_cached(tiny_gpt)
    eng = GPTEngine(model, tok, max_batch=2, prefix_cache_min_tokens=4)  # type: ignore[arg-type]
    eng.start()
    try:
        prompt = _ids(eng, "alpha beta gamma delta alpha beta gamma")
        p = SamplingParams(max_new_tokens=3, temperature=0, logprobs=0)

        def first_logprob(ids: list[int]) -> tuple[Finish, float]:
            events = list(eng.submit([ids], [p]).events(30))
            lp = next(e.logprobs[0].logprob for e in events if isinstance(e, Delta) and e.logprobs)
            return next(e for e in events if isinstance(e, Finish)), lp

        cold, cold_lp = first_logprob(prompt)
        warm, warm_lp = first_logprob(prompt + [prompt[1]])
        assert cold.cached_tokens == 0 and warm.cached_tokens == len(prompt)
        eng.prefix_min = 0  # off: the same prompt prefilled in full
        full, full_lp = first_logprob(prompt + [prompt[1]])
        assert full.cached_tokens == 0
        assert warm_lp == pytest.approx(full_lp, abs=1e-4)
        assert warm.text == full.text
        assert cold_lp < 0
    finally:
        eng.stop(5)


def test_a_full_queue_refuses_and_timeouts_and_cancels_free_slots(tiny_gpt: Path) -> None:
    model, tok = _load_cached(tiny_gpt)
    eng = GPTEngine(model, tok, max_batch=1, max_queue=1)  # type: ignore[arg-type]
    ids = encode_prompt(tok, "alpha", None)
    long = SamplingParams(max_new_tokens=30, temperature=1.0, seed=0)
    running = eng.submit([ids], [long])  # the engine thread is not started: turns are taken by hand
    with pytest.raises(EngineBusy):
        eng.submit([ids], [long])
    eng._turn()  # admits the first request, one decode step
    assert (eng.active, eng.queued) == (1, 0)
    queued = eng.submit([ids], [long], timeout_s=1e-3)  # no free slot: it waits, and expires
    time.sleep(0.01)
    eng._turn()
    (late,) = queued.results(1)
    assert late.error is not None and late.error.code == "timeout"
    assert eng.active == 1
    running.cancel()
    eng._turn()  # the cancelled row's slot is freed at the next step
    (gone,) = running.results(1)
    assert gone.error is not None and gone.error.code == "cancelled"
    assert (eng.active, eng.queued) == (0, 0)
    last = eng.submit([ids], [SamplingParams(max_new_tokens=3, temperature=0)])
    eng.start()
    eng.stop(drain_s=10)  # drains: the queued request still finishes
    assert last.results(1)[0].error is None
    with pytest.raises(EngineBusy, match="shutting down"):
        eng.submit([ids], [long])


def test_fit_block_clips_the_prompt_and_caps_max_tokens() -> None:
    assert fit_block(list(range(10)), 5, 32) == (list(range(10)), 5)
    assert fit_block(list(range(40)), 5, 32) == (list(range(13, 40)), 5)
    assert fit_block(list(range(40)), 50, 32) == (list(range(24, 40)), 16)
    assert fit_block([1, 2], 100, 32) == ([1, 2], 30)


def _random_gpt() -> GPT:
    """A random GPT with grouped-query attention whose weights are large enough that every
    output depends on the whole context (no near-ties for argmax to fall into)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=48)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.35)
    return model


def test_decode_step_equals_a_full_forward_at_every_row_position() -> None:
    model = _random_gpt()
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(6, 300, (n,), generator=gen) for n in (4, 19, 9)]
    shape = (3, 2, 48, 8)  # slots, kv heads, block, head dim
    k = [torch.randn(shape, generator=gen) * 3 for _ in range(2)]  # stale garbage past each row's end
    v = [torch.randn(shape, generator=gen) * 3 for _ in range(2)]
    with torch.inference_mode():
        for slot, seq in enumerate(seqs):
            model(seq[None, :-1], cache=_slot_cache(k, v, slot, 48), pos=0)
        tokens = torch.tensor([int(s[-1]) for s in seqs])
        pos = torch.tensor([len(s) - 1 for s in seqs])
        logits = decode_step(model, k, v, tokens, pos)  # (3, vocab)
        for i, seq in enumerate(seqs):
            full, _ = model(seq[None])
            torch.testing.assert_close(logits[i], full[0, -1], atol=1e-4, rtol=1e-4)


def test_batched_greedy_follows_the_model_with_rows_joining_mid_batch(tiny_gpt: Path) -> None:
    """Rows of different lengths, two joining when two others are already running, each follow
    the model's own greedy decoding (GPT.generate) token for token."""
    _, tok = _load_cached(tiny_gpt)
    model = _random_gpt()
    eng = GPTEngine(model, tok, max_batch=3)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(6, 300, (n,), generator=gen).tolist() for n in (3, 11, 5, 17, 2)]
    greedy = SamplingParams(max_new_tokens=20, temperature=0)
    expected = []
    for ids in prompts:
        seq = model.generate(torch.tensor([ids]), 20, lambda logits, seq: logits.argmax(-1))[
            0, len(ids) :
        ].tolist()
        cut = next((i for i, t in enumerate(seq) if t in eng.end_ids), len(seq))
        expected.append(tok.decode(seq[:cut], skip_special_tokens=True))
    assert len(set(expected)) == len(expected)
    jobs = [eng.submit([ids], [greedy]) for ids in prompts[:2]]
    eng._turn()  # both prompts prefilled in one right-padded batch
    assert eng.batched_prefills == 1
    eng._turn()  # two rows running at positions 5 and 13 when the others join
    jobs += [eng.submit([ids], [greedy]) for ids in prompts[2:]]
    eng.start()
    try:
        assert [j.results(30)[0].text for j in jobs] == expected
    finally:
        eng.stop(5)


def test_penalty_and_seeded_sampling_match_generate_for_one_prompt(tiny_gpt: Path, engine: GPTEngine) -> None:
    """Row 0 of a request is seeded with the request's seed, as generate seeds its batch: for one
    prompt, sampled text and the repetition penalty follow generate's exactly."""
    settings = [
        dict(temperature=0.0, top_k=None, top_p=None, repetition_penalty=50.0, seed=0),
        dict(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=5),
    ]
    for kw in settings:
        expected = generate(tiny_gpt, ["beta gamma"], max_new_tokens=12, **kw)[0]  # type: ignore[arg-type]
        params = SamplingParams(max_new_tokens=12, **kw)  # type: ignore[arg-type]
        got = engine.submit([_ids(engine, "beta gamma")], [params]).results(30)[0].text
        assert got == expected, kw
    plain = generate(tiny_gpt, ["beta gamma"], max_new_tokens=12, temperature=0)[0]
    assert plain != generate(tiny_gpt, ["beta gamma"], max_new_tokens=12, **settings[0])[0]  # type: ignore[arg-type]


class ForcedTokens:
    """A constraint that allows exactly the next id of ``ids`` (and is done after the last)."""

    def __init__(self, ids: list[int], vocab: int) -> None:
        self.ids, self.vocab, self.n = ids, vocab, 0

    def allowed(self) -> torch.Tensor:
        mask = torch.zeros(self.vocab, dtype=torch.bool)
        mask[self.ids[self.n]] = True
        return mask

    def advance(self, token_id: int) -> None:
        assert token_id == self.ids[self.n]
        self.n += 1

    def finished(self) -> bool:
        return self.n == len(self.ids)

    def accepted(self) -> bool:
        return self.finished()


def test_streamed_text_never_splits_a_utf8_character(engine: GPTEngine) -> None:
    text = " héllo wörld ✓ naïve"
    ids = engine.tok.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text.split()) + 4  # multi-byte characters take several byte-level tokens
    assert any("\ufffd" in engine.tok.decode(ids[:k]) for k in range(1, len(ids)))  # the check has teeth
    job = engine.submit(
        [_ids(engine, "alpha")],
        [SamplingParams(max_new_tokens=len(ids) + 5, temperature=0)],
        [ForcedTokens(ids, engine.cfg.vocab_size)],
    )
    events = list(job.events(30))
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert all("\ufffd" not in d for d in deltas) and len(deltas) > 3
    assert "".join(deltas) == text == events[-1].text  # type: ignore[union-attr]


def test_ignore_eos_runs_past_end_tokens_to_max_tokens(engine: GPTEngine) -> None:
    eod = engine.tok.token_to_id("<|endoftext|>")
    ids = [engine.tok.token_to_id("a"), eod, engine.tok.token_to_id("b")]
    forced = ForcedTokens(ids, engine.cfg.vocab_size)
    params = SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True)
    (done,) = engine.submit([_ids(engine, "alpha")], [params], [forced]).results(30)
    assert (done.text, done.completion_tokens, done.error) == ("ab", 3, None)
    stops = SamplingParams(max_new_tokens=3, temperature=0)
    (ended,) = engine.submit(
        [_ids(engine, "alpha")], [stops], [ForcedTokens(ids, engine.cfg.vocab_size)]
    ).results(30)
    assert ended.completion_tokens == 1 and ended.error is not None  # the end token ended it early
