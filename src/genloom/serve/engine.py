"""The inference engine of the server: continuous batching of genloom GPT requests over a pool of
KV-cache slots.

One background thread owns the model. Each turn of its loop it (1) drops cancelled and timed-out
work, (2) admits queued rows into free slots, prefilling each prompt into its slot (batch 1, with
the model's own forward, so a prompt's first token is computed exactly as ``GPT.generate`` does),
and (3) runs one decode step for every active slot together: each row feeds its last token at its
own position (RoPE at that position, the keys and values written at that position of its slot, and
an attention mask that hides the slot's unused positions). Each row is then sampled with its own
settings and its own ``torch.Generator``, its text is detokenised incrementally and sent to the
request, and a finished row frees its slot. Requests join and leave between decode steps.

A row (one choice: a prompt times ``n``) keeps its whole sequence in its slot, so prompt plus
``max_tokens`` must fit ``block_size``: a longer prompt keeps its last tokens (at least half a
block) and ``max_tokens`` is cut to what is left (``finish_reason`` "length").

Prefix caching: a slot keeps the keys and values of the tokens it last held until it is reused.
A new prompt that shares at least ``prefix_cache_min_tokens`` leading tokens with a slot (a
running row or a finished one) starts from a copy of them and prefills only the rest.

Stop conditions: the tokenizer's end-of-document and end-of-turn ids (and a pretrained model's
``stop_ids``), stop strings (the text is cut before the first one, and text that could be the start
of one is held back while streaming), ``max_tokens``, and a structured-output constraint that has
finished. A constraint (``serve/structured.py``'s ``TokenConstraint``) masks the logits before
sampling; a row that ends (by length or an end token) before its constraint accepts the text fails
closed with ``structured_output_incomplete``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import torch
import torch.nn.functional as F

from genloom.core.errors import ConfigError, GenloomError
from genloom.models.gpt import GPT, Block, KVCache
from genloom.models.text import sample_next
from genloom.models.tokenizer import END_OF_TURN, EOD, format_controls
from genloom.serve.compiled import CompiledDecode, compiled_decode
from genloom.serve.scripted import scripted_decode

if TYPE_CHECKING:
    import tokenizers
    from prometheus_client import CollectorRegistry

log = logging.getLogger("genloom.serve")

FinishReason = Literal["stop", "length"]
#: decode steps of up to this many rows run the TorchScript step (serve/scripted.py), larger ones
#: the Python one. Measured on 2 shared cores (docs/serving.md, run 8): the TorchScript step made
#: the engine alone faster at 1 and 8 rows, but with 32 streaming clients the server was slower
#: with it in 6 of 7 interleaved rounds (its step releases the GIL for the whole step, and the
#: event loop then runs beside it, on cores that the clients and other work need too). The
#: compiled step (serve/compiled.py) keeps the same threshold: at 32 rows it was faster than the
#: Python step on ``mini`` and slower on the 30M model (run 9).
SCRIPT_MAX_ROWS = 8


class TokenConstraint(Protocol):
    """Structured output for one row (implemented by ``serve/structured.py``)."""

    def allowed(self) -> torch.Tensor:
        """A bool tensor [vocab_size] of the tokens allowed next."""
        ...

    def advance(self, token_id: int) -> None:
        """Consume the sampled token (raises if it was not allowed)."""
        ...

    def finished(self) -> bool:
        """The grammar allows nothing more: the row should end now."""
        ...

    def accepted(self) -> bool:
        """The text so far is a complete match."""
        ...


class EngineError(GenloomError):
    """A request the engine could not serve; ``code`` says why (OpenAI-style error code)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class EngineBusy(EngineError):
    """The queue is full (or the engine is shutting down): retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__("server_busy", message)


@dataclass(frozen=True)
class SamplingParams:
    """How one row is sampled and when it stops."""

    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: None: no log-probabilities; k >= 0: the chosen token's and the k likeliest alternatives'
    logprobs: int | None = None
    #: end tokens do not end the row (vLLM's option, for benchmarks): it runs to max_new_tokens
    ignore_eos: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token and of the likeliest alternatives, under the
    model's distribution before the sampling settings (as vLLM reports them)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """New text of choice ``index`` (possibly empty when held back), and the tokens behind it."""

    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finish:
    """Choice ``index`` ended: its whole text, reason and token counts, or an error."""

    index: int
    text: str
    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int = 0
    error: EngineError | None = None


Event = Delta | Finish


@dataclass(eq=False)
class _Row:
    """One sequence being generated: a choice of a request."""

    job: Job
    index: int
    prompt: list[int]  # the ids fed (after clipping to the block)
    full_prompt: list[int]  # the ids as encoded (the repetition penalty sees them all)
    params: SamplingParams
    generator: torch.Generator | None
    constraint: TokenConstraint | None
    slot: int = -1
    pos: int = 0  # tokens in the slot's KV cache
    last: int = -1  # the token to feed at the next decode step
    generated: list[int] = field(default_factory=list)
    text: str = ""  # the decoded text so far (stop strings not yet cut)
    sent: int = 0  # characters of text already sent
    cached: int = 0
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    done: bool = False
    # incremental detokenisation: ``window`` is the decoded text of generated[prefix_off:read_off]
    prefix_off: int = 0
    read_off: int = 0
    window: str = ""


class Job:
    """One request's rows and the channel their events come back on."""

    _ids = itertools.count()

    def __init__(self, n_rows: int, deadline: float | None, loop: asyncio.AbstractEventLoop | None) -> None:
        self.id = next(Job._ids)
        self.n_rows = n_rows
        self.deadline = deadline
        self.cancelled = False
        self.started = False  # a row got a slot
        self.submitted = time.monotonic()
        self.first_token_at: float | None = None
        self._loop = loop
        # events not yet read by an event-loop reader: a Delta that arrives while the reader is
        # still busy with earlier ones (a loaded server) joins the row's Delta waiting there, so a
        # slow stream sends fewer, longer chunks instead of falling further behind
        self._pending: deque[Event] = deque()
        self._ready: asyncio.Event | None = asyncio.Event() if loop is not None else None
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def cancel(self) -> None:
        """Stop generating for this request; its slots are freed at the engine's next step."""
        self.cancelled = True

    def _emit(self, event: Event, outbox: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]]) -> None:
        """Send ``event``: at once to a caller without a loop, else into ``outbox`` (one wake-up of
        the loop per engine turn carries every event of the turn)."""
        if self._ready is not None and self._loop is not None:
            outbox.setdefault(self._loop, []).append((self, event))
        else:
            self._queue.put(event)

    def _deliver(self, event: Event) -> None:  # on the job's event loop
        if self._ready is None:
            return
        if isinstance(event, Delta):
            for k in range(len(self._pending) - 1, max(-1, len(self._pending) - 1 - 2 * self.n_rows), -1):
                waiting = self._pending[k]
                if waiting.index != event.index:
                    continue
                if isinstance(waiting, Delta):  # the row's latest unread event: extend it
                    self._pending[k] = Delta(
                        event.index, waiting.text + event.text, waiting.logprobs + event.logprobs
                    )
                    return
                break
        self._pending.append(event)
        self._ready.set()

    async def _next(self) -> Event:
        assert self._ready is not None
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        return self._pending.popleft()

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """The events of every row until each has finished (for callers without an event loop)."""
        left = self.n_rows
        while left:
            event = self._queue.get(timeout=timeout)
            left -= isinstance(event, Finish)
            yield event

    async def aevents(self) -> AsyncIterator[Event]:
        """The events of every row until each has finished (the job was submitted with a loop);
        Deltas of a row that arrived while the reader was busy come as one."""
        if self._ready is None:
            raise RuntimeError("submit the job with loop= to read its events asynchronously")
        left = self.n_rows
        while left:
            event = await self._next()
            left -= isinstance(event, Finish)
            yield event

    async def next_event(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one (the job has a loop)."""
        if self._ready is None:
            raise RuntimeError("submit the job with loop= to read its events asynchronously")
        try:
            return await asyncio.wait_for(self._next(), timeout)
        except TimeoutError:
            return None

    def results(self, timeout: float | None = None) -> list[Finish]:
        """Every row's Finish, by index (blocking)."""
        done = [e for e in self.events(timeout) if isinstance(e, Finish)]
        return sorted(done, key=lambda f: f.index)


def encode_prompt(tok: tokenizers.Tokenizer, prompt: str, controls: dict[str, str] | None) -> list[int]:
    """The ids ``models.text.generate`` feeds for ``prompt``: the end-of-document id (every
    training document follows one), the control tokens, then the prompt's tokens."""
    if controls:
        unknown = [k for k, v in controls.items() if tok.token_to_id(f"<|{k}={v}|>") is None]
        if unknown:
            raise ConfigError(f"the model was not trained with controls {unknown}", path="generate.controls")
    bos = tok.token_to_id(EOD)
    ids = tok.encode(format_controls(controls) + prompt, add_special_tokens=False).ids
    return ([bos] if bos is not None else []) + list(ids)


def fit_block(prompt: list[int], max_new: int, block_size: int) -> tuple[list[int], int]:
    """(the prompt's last tokens, max_new) so that both fit one block: the prompt keeps at least
    half a block (or all of it), and max_new is cut to what is left."""
    keep = min(len(prompt), max(block_size - max_new, block_size // 2), block_size - 1)
    keep = max(keep, 1)
    return prompt[-keep:], max(0, min(max_new, block_size - keep))


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string (or an
    incomplete UTF-8 character, decoded as U+FFFD) and must wait for the next token."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), n, -1):
            if text.endswith(s[:k]):
                n = k
                break
    tail = len(text) - len(text.rstrip("\ufffd"))
    return max(n, tail)


class EngineMetrics:
    """The engine's Prometheus metrics (in the app's registry; a hot swap's engines share one set)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        kw: dict[str, Any] = {"registry": registry}  # None: not registered anywhere (engine tests)
        self.ttft = Histogram(
            "genloom_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            **kw,
        )
        self.step = Histogram(
            "genloom_decode_step_seconds",
            "Time of one decode step of the running batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            **kw,
        )
        self.prefill = Histogram("genloom_prefill_seconds", "Time of one prompt's prefill", **kw)
        self.batch = Histogram(
            "genloom_batch_size",
            "Rows in one decode step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            **kw,
        )
        self.decoded = Counter("genloom_engine_tokens", "Tokens generated by the engine", **kw)
        self.rate = Gauge(
            "genloom_decode_tokens_per_second", "Tokens per second of the last decode step", **kw
        )
        self.queue = Gauge("genloom_queue_depth", "Requests waiting for a KV-cache slot", **kw)
        self.active = Gauge("genloom_active_slots", "KV-cache slots generating now", **kw)
        self.cached = Counter(
            "genloom_prefix_cache_tokens", "Prompt tokens reused from the prefix cache", **kw
        )


class GPTEngine:
    """Continuous batching for a genloom GPT: ``submit`` rows, read their events from the Job."""

    def __init__(
        self,
        model: GPT,
        tokenizer: tokenizers.Tokenizer,
        max_batch: int = 16,
        max_queue: int = 64,
        threads: int | None = None,
        prefix_cache_min_tokens: int = 16,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: EngineMetrics | None = None,
        script_decode: bool = True,
        script_max_rows: int = SCRIPT_MAX_ROWS,
        compile_dir: Path | None = None,
        compile_autotune: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.cfg = model.cfg
        self.max_batch, self.max_queue = max_batch, max_queue
        self.threads = threads
        self.prefix_min = prefix_cache_min_tokens
        self.clock = clock
        self.metrics = metrics or EngineMetrics(registry)
        self.device = model.wte.weight.device
        dtype = model.wte.weight.dtype
        shape = (
            max_batch,
            int(self.cfg.n_kv_head or self.cfg.n_head),
            self.cfg.block_size,
            self.cfg.head_dim,
        )
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.cfg.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.cfg.n_layer)]
        # the decode step as one TorchScript call where the model allows it (serve/scripted.py),
        # for steps of up to script_max_rows rows (see SCRIPT_MAX_ROWS)
        self.scripted = scripted_decode(self.model, self.k) if script_decode else None
        self.script_max_rows = script_max_rows
        # opt-in (compile_dir): the step compiled ahead of time by AOTInductor (serve/compiled.py),
        # built into compile_dir or loaded from it, in place of the TorchScript one for the same
        # steps; None where it is off or failed
        self.compiled: CompiledDecode | None = None
        if compile_dir is not None:
            self.compiled = compiled_decode(self.model, self.k, self.v, compile_dir, compile_autotune)
        self.slot_tokens: list[list[int]] = [[] for _ in range(max_batch)]  # whose KV each slot holds
        self.rows: list[_Row] = []  # rows[i] lives in slot i: the active slots are always 0..len-1
        self.pending: deque[_Row] = deque()
        self.end_ids = {
            i for i in (tokenizer.token_to_id(EOD), tokenizer.token_to_id(END_OF_TURN)) if i is not None
        }
        self.end_ids |= set(getattr(model, "stop_ids", ()))
        self._piece_cache: dict[int, str] = {}
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event]]] = {}
        self._tokens = 0  # generated this turn (for the counter)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.batched_prefills = 0  # prefills of several new rows at once
        self._exact_exponential = exponential_matches_torch()

    # -- the public side -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="genloom-engine", daemon=True)
            self._thread.start()

    def stop(self, drain_s: float = 30.0) -> None:
        """Refuse new work, let the admitted and queued rows finish (up to ``drain_s``), then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=drain_s)
            if self._thread.is_alive():  # past the drain time: cancel what is left
                with self._cond:
                    for r in [*self.rows, *self.pending]:
                        r.job.cancel()
                    self._cond.notify_all()
                self._thread.join(timeout=5)
            self._thread = None

    @property
    def active(self) -> int:
        """Slots generating now."""
        return len(self.rows)

    @property
    def queued(self) -> int:
        """Requests waiting for their first slot."""
        with self._cond:
            return len({id(r.job) for r in self.pending if not r.job.started})

    def submit(
        self,
        prompts: Sequence[list[int]],
        params: Sequence[SamplingParams],
        constraints: Sequence[TokenConstraint | None] | None = None,
        timeout_s: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Job:
        """Queue one request: row i generates from ``prompts[i]`` with ``params[i]``. Raises
        EngineBusy when ``max_queue`` requests are already waiting or the engine is stopping."""
        if len(prompts) != len(params) or (constraints is not None and len(constraints) != len(prompts)):
            raise ValueError("one SamplingParams (and constraint) per prompt")
        deadline = self.clock() + timeout_s if timeout_s else None
        job = Job(len(prompts), deadline, loop)
        rows = []
        for i, (ids, p) in enumerate(zip(prompts, params, strict=True)):
            if not ids:
                raise ConfigError("an empty prompt (no tokens)", path="prompt")
            fed, max_new = fit_block(list(ids), p.max_new_tokens, self.cfg.block_size)
            gen = None
            if p.temperature > 0:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(p.seed + i if p.seed is not None else secrets.randbits(63))
            rows.append(
                _Row(
                    job,
                    i,
                    fed,
                    list(ids),
                    SamplingParams(**{**p.__dict__, "max_new_tokens": max_new}),
                    gen,
                    constraints[i] if constraints is not None else None,
                )
            )
        with self._cond:
            if self._stopping:
                raise EngineBusy("the server is shutting down", retry_after=5)
            waiting = len({id(r.job) for r in self.pending if not r.job.started})
            if waiting >= self.max_queue:
                raise EngineBusy(
                    f"{waiting} requests are waiting for a slot (the queue holds {self.max_queue})"
                )
            self.pending.extend(rows)
            self.metrics.queue.set(waiting + 1)
            self._cond.notify_all()
        return job

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(self.threads or default_threads())
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self.pending and not self.rows and not self._stopping:
                        self._cond.wait()
                    if self._stopping and not self.pending and not self.rows:
                        return
                try:
                    self._turn()
                except Exception as e:  # a bug: fail the rows in flight, keep serving
                    log.exception("the engine step failed")
                    err = EngineError("engine_error", f"generation failed: {type(e).__name__}")
                    for r in list(self.rows):
                        self._finish(r, "stop", err)
                    self._compact()
                finally:
                    if self._flush():  # let the event loop's thread take the GIL and stream them
                        time.sleep(0)

    def _flush(self) -> bool:
        """Hand this turn's events to their event loops, one wake-up per loop (True: there were some)."""
        outbox, self._outbox = self._outbox, {}
        for loop, batch in outbox.items():

            def deliver(batch: list[tuple[Job, Event]] = batch) -> None:
                for job, event in batch:
                    job._deliver(event)

            try:
                loop.call_soon_threadsafe(deliver)
            except RuntimeError:  # the event loop is gone (the server stopped): nobody listens
                for job, _ in batch:
                    job.cancelled = True
        return bool(outbox)

    def _turn(self) -> None:
        now = self.clock()
        with self._cond:
            expired = [r for r in self.pending if r.job.cancelled or self._late(r, now)]
            for r in expired:
                self.pending.remove(r)
        for r in expired:
            self._end_early(r, now)
        for r in [r for r in self.rows if r.job.cancelled or self._late(r, now)]:
            self._end_early(r, now)
        self._compact()
        placed: list[_Row] = []
        while len(self.rows) < self.max_batch:
            with self._cond:
                if not self.pending:
                    break
                row = self.pending.popleft()
                self.metrics.queue.set(len({id(r.job) for r in self.pending if not r.job.started}))
            try:
                self._place(row)
                placed.append(row)
            except Exception as e:  # a bug: fail this row, keep serving the others
                log.exception("admitting a request failed")
                self._fail(row, e)
        try:
            self._prefill([r for r in placed if not r.done])
        except Exception as e:
            log.exception("a prefill failed")
            for r in placed:
                self._fail(r, e)
        self._compact()
        self.metrics.active.set(len(self.rows))
        if self.rows:
            self._decode()
            self._compact()
        self.metrics.active.set(len(self.rows))
        self.metrics.queue.set(self.queued)
        self.metrics.decoded.inc(self._tokens)
        self._tokens = 0

    def _late(self, row: _Row, now: float) -> bool:
        return row.job.deadline is not None and now > row.job.deadline

    def _end_early(self, row: _Row, now: float) -> None:
        if row.job.cancelled:
            self._finish(row, "stop", EngineError("cancelled", "the request was cancelled"))
        else:
            msg = "the request took longer than the server's request timeout"
            self._finish(row, "length", EngineError("timeout", msg))

    # -- admission: a slot, the prefix cache, the prefill ----------------------------------------

    def _place(self, row: _Row) -> None:
        """Give ``row`` slot len(rows), with a copy of a cached prefix when one is long enough."""
        slot = len(self.rows)
        best, best_len = -1, 0
        if self.prefix_min > 0:
            for s, held in enumerate(self.slot_tokens):
                n = _common_prefix(held, row.prompt)
                if n > best_len:
                    best, best_len = s, n
        best_len = min(best_len, len(row.prompt) - 1)  # at least one token is prefilled: its logits
        if best_len >= self.prefix_min and best >= 0:
            if best >= slot:  # a free slot: move it to the front of the free ones
                self._swap(best, slot)
            else:  # a running row's slot: copy its keys and values
                for layer in range(self.cfg.n_layer):
                    self.k[layer][slot, :, :best_len] = self.k[layer][best, :, :best_len]
                    self.v[layer][slot, :, :best_len] = self.v[layer][best, :, :best_len]
            row.cached = best_len
            self.metrics.cached.inc(best_len)
        row.slot = slot
        row.pos = row.cached
        row.job.started = True
        self.rows.append(row)
        self.slot_tokens[slot] = list(row.prompt)
        if row.params.max_new_tokens == 0:
            self._finish(row, "length")

    def _prefill(self, rows: list[_Row]) -> None:
        """Feed each new row's prompt (past its cached prefix) and sample its first token. Rows
        without a cached prefix in consecutive slots are prefilled in one batch, right-padded:
        causal attention keeps a row's tokens blind to the padding after them, and the padding's
        keys sit past the row's position, hidden by the decode mask until overwritten."""
        fresh = [r for r in rows if r.cached == 0]
        slots = [r.slot for r in fresh]
        batched = len(fresh) > 1 and slots == list(range(slots[0], slots[0] + len(fresh)))
        if batched:
            t0 = time.perf_counter()
            T = max(len(r.prompt) for r in fresh)
            ids = torch.zeros((len(fresh), T), dtype=torch.long, device=self.device)  # (B, T)
            for i, r in enumerate(fresh):
                ids[i, : len(r.prompt)] = torch.tensor(r.prompt, dtype=torch.long)
            cache = _slot_cache(self.k, self.v, slots[0], self.cfg.block_size, len(fresh))
            logits, _ = self.model(ids, cache=cache, pos=0)  # (B, T, vocab)
            self.metrics.prefill.observe(time.perf_counter() - t0)
            self.batched_prefills += 1
            for i, r in enumerate(fresh):
                r.pos = len(r.prompt)
                self._step_row(r, logits[i : i + 1, len(r.prompt) - 1, :].float())
        for r in rows:
            if batched and r.cached == 0:
                continue
            t0 = time.perf_counter()
            cache = _slot_cache(self.k, self.v, r.slot, self.cfg.block_size)
            ids = torch.tensor([r.prompt[r.cached :]], dtype=torch.long, device=self.device)  # (1, T)
            logits, _ = self.model(ids, cache=cache, pos=r.cached)  # (1, T, vocab)
            self.metrics.prefill.observe(time.perf_counter() - t0)
            r.pos = len(r.prompt)
            self._step_row(r, logits[:, -1, :].float())

    def _fail(self, row: _Row, e: Exception) -> None:
        if row not in self.rows:
            self.rows.append(row)
        self._finish(row, "stop", EngineError("engine_error", f"generation failed: {type(e).__name__}"))

    def _swap(self, a: int, b: int) -> None:
        for cache in (*self.k, *self.v):
            tmp = cache[a].clone()
            cache[a] = cache[b]
            cache[b] = tmp
        self.slot_tokens[a], self.slot_tokens[b] = self.slot_tokens[b], self.slot_tokens[a]

    def _compact(self) -> None:
        """Keep the running rows in slots 0..len-1: a finished row's slot takes the last running row
        (swapped, so the finished row's keys stay cached in the free slot)."""
        i = 0
        while i < len(self.rows):
            if self.rows[i].done:
                last = len(self.rows) - 1
                if i != last:
                    self._swap(i, last)
                    self.rows[i], self.rows[last] = self.rows[last], self.rows[i]
                    self.rows[i].slot = i
                self.rows.pop()
            else:
                i += 1

    # -- one decode step for every running row ---------------------------------------------------

    def _decode(self) -> None:
        rows = self.rows
        B = len(rows)
        t0 = time.perf_counter()
        positions = [r.pos for r in rows]
        tokens = torch.tensor([r.last for r in rows], dtype=torch.long, device=self.device)  # (B,)
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)  # (B,)
        few = len(rows) <= self.script_max_rows
        if few and self.compiled is not None:
            logits = self.compiled(self.k, self.v, tokens, pos, positions)  # (B, vocab)
        elif few and self.scripted is not None:
            logits = self.scripted(self.k, self.v, tokens, pos, positions)  # (B, vocab)
        else:
            logits = decode_step(self.model, self.k, self.v, tokens, pos, positions)
        for r in rows:
            self.slot_tokens[r.slot].append(r.last)
            r.pos += 1
        self._step_rows(rows, logits.float())
        dt = time.perf_counter() - t0
        self.steps += 1
        self.metrics.step.observe(dt)
        self.metrics.batch.observe(B)
        self.metrics.rate.set(B / dt if dt > 0 else 0.0)

    # -- sampling, stop conditions, detokenisation -----------------------------------------------

    def _step_row(self, row: _Row, logits: torch.Tensor) -> None:
        """Pick ``row``'s next token from ``logits`` (1, vocab), send its text, end the row if done."""
        self._step_rows([row], logits)

    def _step_rows(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Pick each row's next token from its row of ``logits`` (len(rows), vocab), all rows in a
        few batched operations (``sample_rows``), then send each row's text and end the rows done."""
        if any(r.constraint is not None for r in rows):
            logits = logits.clone()
            live = []
            for i, row in enumerate(rows):
                if row.constraint is None:
                    live.append(i)
                    continue
                allowed = row.constraint.allowed().to(logits.device)
                if allowed.numel() < logits.size(-1):
                    allowed = F.pad(allowed, (0, logits.size(-1) - allowed.numel()), value=False)
                if not bool(allowed.any()):
                    msg = "the output constraint allows no token here"
                    self._finish(row, "stop", EngineError("structured_output_incomplete", msg))
                    continue
                logits[i].masked_fill_(~allowed, float("-inf"))
                live.append(i)
            if len(live) < len(rows):
                rows, logits = [rows[i] for i in live], logits[live]
            if not rows:
                return
        chosen = sample_rows(logits, rows, self._exact_exponential)
        for i, (row, tok) in enumerate(zip(rows, chosen, strict=True)):
            self._accept(row, logits, i, tok)

    def _accept(self, row: _Row, logits: torch.Tensor, i: int, tok: int) -> None:
        """``tok`` is ``row``'s next token (sampled from row ``i`` of ``logits``): stop conditions,
        log-probabilities, the constraint, the text."""
        p = row.params
        if row.job.first_token_at is None:
            row.job.first_token_at = self.clock()
            self.metrics.ttft.observe(time.monotonic() - row.job.submitted)
        if tok in self.end_ids and not p.ignore_eos:
            self._finish(row, "stop")
            return
        if row.constraint is not None:
            try:
                row.constraint.advance(tok)
            except GenloomError as e:
                self._finish(row, "stop", EngineError("structured_output_invalid", str(e)))
                return
        if p.logprobs is not None:
            row.pending_logprobs.append(self._logprob(logits[i : i + 1], tok, p.logprobs))
        row.generated.append(tok)
        row.last = tok
        self._tokens += 1
        self._detokenize(row)
        cuts = [row.text.find(s) for s in p.stop if s in row.text]
        if cuts:
            row.text = row.text[: min(cuts)]
            row.read_off = len(row.generated)  # the text ends at the stop string
            self._finish(row, "stop")
        elif row.constraint is not None and row.constraint.finished():
            self._finish(row, "stop")
        elif len(row.generated) >= p.max_new_tokens:
            self._finish(row, "length")
        else:
            ready = len(row.text) - held_back(row.text, p.stop)
            if ready > row.sent or row.pending_logprobs:
                self._send(row, ready)

    def _detokenize(self, row: _Row) -> None:
        """Extend ``row.text`` by the new token's text, decoding only a short window of the last
        tokens (as Hugging Face TGI does) instead of every generated token: the window's text minus
        the text of its first part is what the new token added, once it no longer ends in an
        incomplete UTF-8 character (U+FFFD). The text is then the same as decoding every token, up
        to a trailing incomplete character, which ``_finish`` adds back with one full decode."""
        new = str(self.tok.decode(row.generated[row.prefix_off :], skip_special_tokens=True))
        if len(new) > len(row.window) and not new.endswith("\ufffd"):
            row.text += new[len(row.window) :]
            row.read_off = len(row.generated)
            if row.read_off - row.prefix_off > _DETOK_WINDOW:  # start the window a few tokens back
                row.prefix_off = row.read_off - _DETOK_CONTEXT
                new = str(self.tok.decode(row.generated[row.prefix_off :], skip_special_tokens=True))
            row.window = new

    def _send(self, row: _Row, upto: int) -> None:
        piece = row.text[row.sent : upto] if upto > row.sent else ""
        row.sent = max(row.sent, upto)
        row.job._emit(Delta(row.index, piece, tuple(row.pending_logprobs)), self._outbox)
        row.pending_logprobs = []

    def _logprob(self, logits: torch.Tensor, tok: int, k: int) -> TokenLogprob:
        lp = torch.log_softmax(logits[0], dim=-1)
        top: tuple[tuple[str, float], ...] = ()
        if k > 0:
            vals, ids = torch.topk(lp, min(k, lp.numel()))
            top = tuple((self._piece(int(i)), float(v)) for v, i in zip(vals, ids, strict=True))
        value = float(lp[tok])
        return TokenLogprob(self._piece(tok), value if math.isfinite(value) else -9999.0, top)

    def _piece(self, tok: int) -> str:
        text = self._piece_cache.get(tok)
        if text is None:
            text = str(self.tok.decode([tok], skip_special_tokens=False))
            self._piece_cache[tok] = text
        return text

    def _finish(self, row: _Row, reason: FinishReason, error: EngineError | None = None) -> None:
        if row.done:
            return
        row.done = True
        if row in self.pending:
            with self._cond:
                if row in self.pending:
                    self.pending.remove(row)
        if error is None and row.constraint is not None and not row.constraint.accepted():
            error = EngineError(
                "structured_output_incomplete",
                f"generation ended ({'max_tokens' if reason == 'length' else 'an end token'}) before the "
                "output matched the requested format: raise max_tokens",
            )
        if row.read_off < len(row.generated):  # tokens the incremental text still holds back
            row.text = str(self.tok.decode(row.generated, skip_special_tokens=True))
            row.read_off = len(row.generated)
        if error is None and (len(row.text) > row.sent or row.pending_logprobs):
            self._send(row, len(row.text))
        row.job._emit(
            Finish(
                row.index,
                row.text,
                reason,
                len(row.generated),
                len(row.prompt),
                row.cached,
                error,
            ),
            self._outbox,
        )


def quantize_int8(model: GPT) -> GPT:
    """A copy of ``model`` whose Linear layers (attention, MLP, the output head) are int8 with
    dynamic activation quantisation (``torch.ao.quantization.quantize_dynamic``: weights stored in
    int8, activations quantised per batch at run time); embeddings and norms stay in their dtype.
    CPU only; the original model is left as it is."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks torch.ao.quantization as moving to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return quantized


#: incremental detokenisation: the window of tokens decoded per new token is restarted this many
#: tokens back once it holds more than _DETOK_WINDOW
_DETOK_WINDOW, _DETOK_CONTEXT = 16, 4


def exponential_matches_torch() -> bool:
    """Whether ``-log1p(-u)`` of float64 uniforms, cast to float32, reproduces torch's CPU
    ``Tensor.exponential_`` bit for bit (and leaves the generator in the same state): then
    ``sample_rows`` draws each row's variates that way, several times faster than exponential_'s
    scalar loop. Checked once per engine on this torch build; False: rows use exponential_ itself."""
    for seed in (0, 1):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ref = torch.empty(257).exponential_(generator=g1)
        u = torch.rand(257, dtype=torch.float64, generator=g2)
        if not torch.equal(u.neg_().log1p_().neg_().float(), ref):
            return False
        if not torch.equal(g1.get_state(), g2.get_state()):
            return False
    return True


def sample_rows(logits: torch.Tensor, rows: Sequence[_Row], fast_exponential: bool = True) -> list[int]:
    """The next token of each row from its row of ``logits`` (len(rows), vocab), with the row's own
    settings and generator: the same token ``models.text.sample_next`` picks for that row alone,
    computed for all rows together.

    Greedy rows take one batched argmax. Sampled rows are divided by their temperatures, cut to
    their top_k and top_p, and soft-maxed as one batch; the draw is ``torch.multinomial``'s own
    method for one sample (argmax of probs / q, q ~ Exp(1) drawn from the row's generator), so a
    seeded row samples exactly what ``sample_next`` would. Rows with a repetition penalty (which
    needs the row's whole sequence) go through ``sample_next`` one by one."""
    out: list[int | None] = [None] * len(rows)
    greedy, sampled = [], []
    for i, r in enumerate(rows):
        p = r.params
        if p.repetition_penalty != 1.0:
            seq = torch.tensor([r.full_prompt + r.generated], dtype=torch.long, device=logits.device)
            out[i] = int(
                sample_next(
                    logits[i : i + 1], seq, p.temperature, p.top_k, p.top_p, p.repetition_penalty, r.generator
                )
            )
        elif p.temperature <= 0:
            greedy.append(i)
        else:
            sampled.append(i)
    if greedy:
        picks = (logits if len(greedy) == len(rows) else logits[greedy]).argmax(dim=-1).tolist()
        for i, t in zip(greedy, picks, strict=True):
            out[i] = t
    if sampled:
        n, V = len(sampled), logits.size(-1)
        params = [rows[i].params for i in sampled]
        temps = torch.tensor([p.temperature for p in params], dtype=logits.dtype, device=logits.device)
        z = logits[sampled] / temps[:, None]  # (n, vocab)
        for k in sorted({p.top_k for p in params if p.top_k is not None and p.top_k < V}):
            sel = [j for j, p in enumerate(params) if p.top_k == k]
            kth = torch.topk(z[sel], k, dim=-1).values[:, -1:]
            z[sel] = z[sel].masked_fill(z[sel] < kth, float("-inf"))
        nucleus = [j for j, p in enumerate(params) if p.top_p is not None and p.top_p < 1.0]
        if nucleus:  # smallest set with mass >= top_p, per row (Holtzman et al. 2020)
            top_p = torch.tensor([params[j].top_p for j in nucleus], dtype=z.dtype, device=z.device)
            sorted_z, order = torch.sort(z[nucleus], descending=True, dim=-1)
            mass = torch.softmax(sorted_z, dim=-1)
            drop = mass.cumsum(dim=-1) - mass >= top_p[:, None]  # keep the token that crosses top_p
            z[nucleus] = z[nucleus].masked_fill(drop.scatter(1, order, drop), float("-inf"))
        probs = torch.softmax(z, dim=-1)  # (n, vocab)
        if fast_exponential:
            u = torch.empty((n, V), dtype=torch.float64, device=logits.device)
            for j, i in enumerate(sampled):
                torch.rand(V, dtype=torch.float64, generator=rows[i].generator, out=u[j])
            q = u.neg_().log1p_().neg_().to(probs.dtype)
        else:
            q = torch.empty_like(probs)
            for j, i in enumerate(sampled):
                q[j].exponential_(generator=rows[i].generator)
        for i, t in zip(sampled, (probs / q).argmax(dim=-1).tolist(), strict=True):
            out[i] = t
    return cast(list[int], out)


def default_threads() -> int:
    """torch threads of the engine when not set: one core fewer than the machine has (at least
    one), so the event loop that streams the tokens is not starved by the engine's threads. On
    the 2-core benchmark machine, 2 threads gave 19 tok/s to one streaming client and 1 thread 292
    (benchmarks/serve.py, other work running)."""
    return max(1, (os.cpu_count() or 1) - 1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _slot_cache(
    k: list[torch.Tensor], v: list[torch.Tensor], slot: int, max_len: int, count: int = 1
) -> KVCache:
    """A KVCache whose tensors are views of slots slot..slot+count-1: the model's forward writes into it."""
    cache = KVCache.__new__(KVCache)
    cache.k = [t[slot : slot + count] for t in k]
    cache.v = [t[slot : slot + count] for t in v]
    cache.max_len = max_len
    return cache


def decode_step(
    model: GPT,
    k_cache: list[torch.Tensor],
    v_cache: list[torch.Tensor],
    tokens: torch.Tensor,
    pos: torch.Tensor,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """Logits (B, vocab) of one new token per row: ``tokens`` (B,) at positions ``pos`` (B,) of
    slots 0..B-1 of the caches (each (slots, n_kv_head, block_size, hd) per layer); ``positions``
    is ``pos`` as a list, when the caller has it.

    The same computation as ``GPT.forward`` with a cache (the same operations on the same numbers,
    so the same logits up to float rounding), but every row has its own position: RoPE at that
    position, keys and values written there in place, and an additive mask, built once per step,
    that hides the slot's positions past it (the stale entries of a longer earlier row); when every
    row is at the same position there is nothing to hide and no mask. The blocks' weights are
    applied with ``torch.nn.functional`` directly (no module calls), the activations stay (B, C),
    and q and k are rotated together: at the quickstart's size a step is mostly per-operation
    overhead, so fewer operations is what makes it faster."""
    cfg = model.cfg
    B = tokens.size(0)
    H, Hkv, hd, C = cfg.n_head, int(cfg.n_kv_head or cfg.n_head), cfg.head_dim, cfg.n_embd
    positions = pos.tolist() if positions is None else positions
    L = max(positions) + 1  # keys to attend over: the longest row's
    dev, dtype = tokens.device, model.wte.weight.dtype
    rope_cos, rope_sin = cast(torch.Tensor, model.rope_cos), cast(torch.Tensor, model.rope_sin)
    half = hd // 2
    cos = rope_cos[pos].to(dtype)[:, None, :]  # (B, 1, hd)
    sin = rope_sin[pos].to(dtype)
    # rotate_half(x) * sin == roll(x, hd/2) * [-sin_1, sin_2]: one roll instead of chunk, neg, cat
    sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)[:, None, :]  # (B, 1, hd)
    mask = None
    if min(positions) != L - 1:
        ahead = torch.arange(L, device=dev)[None, :] > pos[:, None]  # (B, L)
        mask = torch.zeros((B, 1, 1, L), dtype=dtype, device=dev).masked_fill_(
            ahead[:, None, None, :], float("-inf")
        )
    S, T = k_cache[0].size(0), k_cache[0].size(2)
    # where each row's new key of each kv head goes in a cache viewed as (slots * Hkv * T, hd)
    flat = (
        (torch.arange(B, device=dev)[:, None] * Hkv + torch.arange(Hkv, device=dev)[None, :]) * T
        + pos[:, None]
    ).reshape(-1)  # (B * Hkv,)
    x = F.embedding(tokens, model.wte.weight)  # (B, C)
    eps = cfg.norm_eps
    for layer, module in enumerate(model.blocks):
        block = cast(Block, module)
        attn = block.attn
        qkv = _linear(attn.qkv, F.rms_norm(x, (C,), block.attn_norm.weight, eps))  # (B, C + 2 kv)
        qk = qkv[:, : C + Hkv * hd].view(B, H + Hkv, hd)  # q and k heads side by side
        qk = qk * cos + qk.roll(half, dims=-1) * sin
        q, k = qk[:, :H, None, :], qk[:, H:]  # (B, H, 1, hd), (B, Hkv, hd)
        v = qkv[:, C + Hkv * hd :].reshape(B * Hkv, hd)
        kc, vc = k_cache[layer], v_cache[layer]
        if kc.is_contiguous() and vc.is_contiguous():
            kc.view(S * Hkv * T, hd).index_copy_(0, flat, k.reshape(B * Hkv, hd))
            vc.view(S * Hkv * T, hd).index_copy_(0, flat, v)
        else:
            rows = torch.arange(B, device=dev)
            kc[rows, :, pos] = k
            vc[rows, :, pos] = v.view(B, Hkv, hd)
        keys, values = kc[:B, :, :L], vc[:B, :, :L]  # (B, Hkv, L, hd)
        if Hkv != H:
            keys = keys.repeat_interleave(H // Hkv, dim=1)
            values = values.repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, 1, hd)
        x = x + _linear(attn.proj, y.reshape(B, C))
        mlp = block.mlp
        h = F.rms_norm(x, (C,), block.mlp_norm.weight, eps)
        gate, up = _linear(mlp.gate_up, h).chunk(2, dim=-1)
        x = x + _linear(mlp.down, F.silu(gate) * up)
    return _linear(model.lm_head, F.rms_norm(x, (C,), model.norm.weight, eps))  # (B, vocab)


def _linear(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` for a Linear without the module call (a quantised Linear is called as it is)."""
    if type(m) is torch.nn.Linear:
        return F.linear(x, m.weight)
    return cast(torch.Tensor, m(x))
