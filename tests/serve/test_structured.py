"""Structured output (serve/structured.py) against real tokenizers: a byte-level BPE trained here
with genloom's own trainer, and the tiny GPT of the server fixtures. Constrained decoding is
driven by random-logits "models" and by the real GPT; every finished text must validate, and the
same samplers without the mask must not (so these tests fail if the mask does nothing)."""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from pydantic import ValidationError

from genloom.core.catalog import Catalog
from genloom.core.errors import GenloomError, MissingDependencyError
from genloom.models.tokenizer import (
    BASE_SPECIAL_TOKENS,
    END_OF_TURN,
    EOD,
    PAD,
    TokenizerConfig,
    train_tokenizer,
)
from genloom.serve.schemas import ChatCompletionRequest, CompletionRequest
from genloom.serve.structured import (
    ConstraintFactory,
    StructuredOutputError,
    compile_constraint,
    validate_output,
)

pytest.importorskip("llguidance")

# logits wider than the tokenizer, padded as the GPT pads them (round_vocab: a multiple of 64)
PAD_TO = 64

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}
TAGS = {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 4}
NESTED = {
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "bb", "ccc"]}, "maxItems": 3},
                "active": {"type": "boolean"},
            },
            "required": ["id", "tags", "active"],
            "additionalProperties": False,
        },
        "score": {"type": "number"},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 6}]},
    },
    "required": ["user", "score", "note"],
    "additionalProperties": False,
}
SCHEMAS = {"person": PERSON, "tags": TAGS, "nested": NESTED}
REGEXES = [r"\d{3}-[a-z]+", r"(yes|no)", r"[A-Z][a-z]{2,5} \d{1,4}", r"x+"]


def json_schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped response_format for ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a byte-level BPE (genloom's trainer, its special tokens) trained on prose and JSON."""
    rng = random.Random(0)
    words = ["alpha", "beta", "name", "age", "red", "green", "blue", "user", "tags", "true", "null"]
    docs = []
    for _ in range(200):
        docs.append(" ".join(rng.choice(words) for _ in range(12)))
        obj = {rng.choice(words): rng.choice([rng.randint(0, 999), rng.choice(words), None, True])}
        docs.append(json.dumps(obj) + " " + json.dumps([rng.choice(words), rng.randint(0, 99)]))
    tok = train_tokenizer(iter(docs), TokenizerConfig(vocab_size=400, min_frequency=2))
    folder = tmp_path_factory.mktemp("bpe")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def tokenizer_of(folder: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def padded_width(folder: Path) -> int:
    """The logits width of a model over this tokenizer: the vocabulary padded past a multiple of 64."""
    n = int(tokenizer_of(folder).get_vocab_size())
    return PAD_TO * (n // PAD_TO + 1)


Logits = Callable[[list[int]], torch.Tensor]


def random_logits(width: int, seed: int, boost: dict[int, float] | None = None) -> Logits:
    """A "model" whose next-token logits are random (plus a fixed ``boost`` of some ids)."""
    gen = torch.Generator().manual_seed(seed)
    bias = torch.zeros(width)
    for i, b in (boost or {}).items():
        bias[i] = b

    def logits(ids: list[int]) -> torch.Tensor:
        return torch.randn(width, generator=gen) * 3 + bias

    return logits


def decode(
    factory: ConstraintFactory | None,
    logits_of: Logits,
    end_ids: set[int],
    seed: int,
    max_tokens: int = 400,
    vocab: int | None = None,
) -> tuple[list[int], bool]:
    """Samples tokens as the engine does: mask, sample, advance, stop when finished or at an end
    token. Without a factory, samples freely among the first ``vocab`` ids. Returns the ids (end
    token excluded) and whether the constraint accepted them."""
    gen = torch.Generator().manual_seed(seed)
    constraint = factory.new() if factory is not None else None
    ids: list[int] = []
    for _ in range(max_tokens):
        logits = logits_of(ids).clone()
        if constraint is not None:
            allowed = constraint.allowed()
            assert allowed.shape == logits.shape and allowed.dtype == torch.bool
            logits[~allowed] = float("-inf")
        else:
            logits[vocab:] = float("-inf")
        tok = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))
        if constraint is not None:
            constraint.advance(tok)
        if tok in end_ids:
            break
        ids.append(tok)
        if constraint is not None and constraint.finished():
            break
    return ids, constraint.accepted() if constraint is not None else False


def end_ids_of(folder: Path) -> set[int]:
    tok = tokenizer_of(folder)
    return {tok.token_to_id(EOD), tok.token_to_id(END_OF_TURN)}


def closing_boost(folder: Path, strength: float = 4.0) -> dict[int, float]:
    """Pushes tokens that close strings, arrays and objects, so random text ends in a few dozen tokens."""
    tok = tokenizer_of(folder)
    return {i: strength for t, i in tok.get_vocab().items() if any(c in t for c in '"]}')}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_logits_under_a_schema_always_give_valid_json(bpe_dir: Path, name: str) -> None:
    width = padded_width(bpe_dir)
    fmt = json_schema(name, SCHEMAS[name])
    factory = compile_constraint(bpe_dir, width, fmt, None)
    assert factory is not None
    tok, ends = tokenizer_of(bpe_dir), end_ids_of(bpe_dir)
    for seed in range(6):
        ids, accepted = decode(factory, random_logits(width, seed, closing_boost(bpe_dir, 1.0)), ends, seed)
        text = tok.decode(ids, skip_special_tokens=False)
        assert accepted, text
        validate_output(text, fmt, None)
        jsonschema.validate(json.loads(text), SCHEMAS[name])  # an independent check, as a client would


def test_the_same_sampler_without_the_mask_gives_invalid_json(bpe_dir: Path) -> None:
    width, vocab = padded_width(bpe_dir), int(tokenizer_of(bpe_dir).get_vocab_size())
    fmt = json_schema("person", PERSON)
    tok, ends = tokenizer_of(bpe_dir), end_ids_of(bpe_dir)
    for seed in range(6):
        ids, _ = decode(None, random_logits(width, seed), ends, seed, max_tokens=40, vocab=vocab)
        with pytest.raises(StructuredOutputError):
            validate_output(tok.decode(ids), fmt, None)


def test_json_object_gives_a_json_object(bpe_dir: Path) -> None:
    width = padded_width(bpe_dir)
    fmt = {"type": "json_object"}
    factory = compile_constraint(bpe_dir, width, fmt, None)
    assert factory is not None
    tok, ends = tokenizer_of(bpe_dir), end_ids_of(bpe_dir)
    for seed in range(6):
        ids, accepted = decode(factory, random_logits(width, seed, closing_boost(bpe_dir)), ends, seed)
        text = tok.decode(ids)
        assert accepted, text
        validate_output(text, fmt, None)
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("pattern", REGEXES)
def test_random_logits_under_a_regex_always_match(bpe_dir: Path, pattern: str) -> None:
    width = padded_width(bpe_dir)
    factory = compile_constraint(bpe_dir, width, None, pattern)
    assert factory is not None
    tok, ends = tokenizer_of(bpe_dir), end_ids_of(bpe_dir)
    for seed in range(8):
        ids, accepted = decode(factory, random_logits(width, seed), ends, seed)
        text = tok.decode(ids)
        assert accepted and re.fullmatch(pattern, text), text
        validate_output(text, None, pattern)


def test_shorthand_classes_are_ascii_for_the_grammar_and_the_check(bpe_dir: Path) -> None:
    # the grammar engine's \d knows digits of newer Unicode versions than Python's re (U+1CCF4)
    tok = tokenizer_of(bpe_dir)
    factory = compile_constraint(bpe_dir, padded_width(bpe_dir), None, r"\d\w\s")
    assert factory is not None
    c = factory.new()
    assert all(tok.decode([i]).isascii() for i in c.allowed().nonzero().flatten().tolist())
    validate_output("1a ", None, r"\d\w\s")
    for non_ascii in ("\u0661a ", "1\u00e9 ", "1a\u00a0"):  # an Arabic-Indic digit, é, a no-break space
        with pytest.raises(StructuredOutputError):
            validate_output(non_ascii, None, r"\d\w\s")
    schema = {"type": "string", "pattern": r"^\d+$"}
    with pytest.raises(StructuredOutputError):
        validate_output(json.dumps("\u0661"), json_schema("digits", schema), None)
    with pytest.raises(StructuredOutputError, match="write the class out"):
        compile_constraint(bpe_dir, padded_width(bpe_dir), None, r"[\D]")


def test_mask_width_padded_ids_special_tokens_and_end(bpe_dir: Path) -> None:
    tok = tokenizer_of(bpe_dir)
    vocab = int(tok.get_vocab_size())
    width = padded_width(bpe_dir)
    assert width > vocab  # the test needs padded ids
    factory = compile_constraint(bpe_dir, width, None, r"\d{3}-[a-z]+")
    assert factory is not None
    c = factory.new()
    eod, end = tok.token_to_id(EOD), tok.token_to_id(END_OF_TURN)
    specials = [tok.token_to_id(t) for t in BASE_SPECIAL_TOKENS if t not in (EOD, END_OF_TURN)]
    for n, ch in enumerate("123-ab"):
        allowed = c.allowed()
        assert allowed.shape == (width,) and allowed.dtype == torch.bool
        assert not allowed[vocab:].any()  # padded ids are never allowed
        assert not allowed[specials].any()  # no role or pad token, ever
        assert bool(allowed[eod]) == bool(allowed[end]) == c.accepted()  # an end once the regex matched
        assert allowed[tok.token_to_id(ch)]
        if ch.isdigit():  # exactly the tokens of ASCII digits that still fit in \d{3}
            texts = {i: tok.decode([i]) for i in range(vocab)}
            fit = {i for i, t in texts.items() if t.isascii() and t.isdigit() and len(t) <= 3 - n}
            assert set(allowed.nonzero().flatten().tolist()) == fit
        c.advance(tok.token_to_id(ch))
    assert c.accepted() and not c.finished()  # [a-z]+ may go on
    allowed = c.allowed()
    assert allowed[eod] and allowed[end] and not allowed[tok.token_to_id(PAD)]
    assert not allowed[vocab:].any()


def test_disallowed_tokens_raise(bpe_dir: Path) -> None:
    tok = tokenizer_of(bpe_dir)
    vocab, width = int(tok.get_vocab_size()), padded_width(bpe_dir)
    factory = compile_constraint(bpe_dir, width, json_schema("person", PERSON), None)
    assert factory is not None
    c = factory.new()
    c.allowed()[:] = True  # a caller editing the mask it was given does not widen the grammar
    for bad in (tok.token_to_id("a"), tok.token_to_id(EOD), tok.token_to_id(PAD), vocab, width, -1):
        with pytest.raises(StructuredOutputError, match="not allowed"):
            c.advance(bad)
    first = tok.token_to_id('{"')  # the forced start, in one token of this tokenizer
    c.advance(first)  # a refused token left the state as it was
    assert not c.accepted()
    with pytest.raises(StructuredOutputError):
        c.advance(tok.token_to_id("}"))  # name, age and color are required


def test_a_finished_grammar_allows_only_the_end_tokens(bpe_dir: Path) -> None:
    tok = tokenizer_of(bpe_dir)
    factory = compile_constraint(bpe_dir, padded_width(bpe_dir), None, "(yes|no)")
    assert factory is not None
    c = factory.new()
    for ch in "no":
        c.advance(tok.token_to_id(ch))
    assert c.finished() and c.accepted()
    assert set(c.allowed().nonzero().flatten().tolist()) == end_ids_of(bpe_dir)
    with pytest.raises(StructuredOutputError):
        c.advance(tok.token_to_id("o"))
    c.advance(tok.token_to_id(EOD))  # the engine may still feed the end token
    assert c.accepted()


def test_choices_are_independent_and_the_grammar_is_cached(bpe_dir: Path, tmp_path: Path) -> None:
    tok = tokenizer_of(bpe_dir)
    width = padded_width(bpe_dir)
    fmt = json_schema("tags", TAGS)
    factory = compile_constraint(bpe_dir, width, fmt, None)
    assert compile_constraint(bpe_dir, width, json.loads(json.dumps(fmt)), None) is factory
    assert compile_constraint(bpe_dir, width, json_schema("person", PERSON), None) is not factory
    assert compile_constraint(bpe_dir, width + 64, fmt, None) is not factory
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    assert compile_constraint(copy, width, fmt, None) is factory  # keyed by content, not folder
    assert factory is not None
    one, two = factory.new(), factory.new()
    one.advance(tok.token_to_id("["))
    assert not two.allowed()[tok.token_to_id('"')] and two.allowed()[tok.token_to_id("[")]
    assert one.allowed()[tok.token_to_id('"')]


def test_the_tiny_gpt_decodes_valid_json_and_regex_matches(tiny_gpt: Path) -> None:
    from genloom.models.text import load_model

    model, tok = load_model(tiny_gpt)
    width = int(model.lm_head.out_features)
    assert width > tok.get_vocab_size()  # padded to a multiple of 64
    block = model.cfg.block_size
    prompt = [tok.token_to_id(EOD), *tok.encode("alpha beta", add_special_tokens=False).ids]

    def gpt_logits(ids: list[int]) -> torch.Tensor:
        ctx = torch.tensor([(prompt + ids)[-block:]])
        with torch.inference_mode():
            return model(ctx)[0][0, -1].float()

    ends = end_ids_of(tiny_gpt)
    person = json_schema("person", PERSON)
    cases: list[tuple[dict[str, Any] | None, str | None]] = [(person, None), (None, r"\d{3}-[a-z]+")]
    for fmt, pattern in cases:
        factory = compile_constraint(tiny_gpt, width, fmt, pattern)
        for seed in range(3):
            ids, accepted = decode(factory, gpt_logits, ends, seed)
            text = tok.decode(ids)
            assert accepted, text
            validate_output(text, fmt, pattern)


def test_max_tokens_too_small_is_not_accepted(bpe_dir: Path) -> None:
    width = padded_width(bpe_dir)
    factory = compile_constraint(bpe_dir, width, json_schema("person", PERSON), None)
    tok, ends = tokenizer_of(bpe_dir), end_ids_of(bpe_dir)
    ids, accepted = decode(factory, random_logits(width, 0), ends, 0, max_tokens=3)
    assert len(ids) == 3 and not accepted  # the engine must refuse this reply (fail closed)
    with pytest.raises(StructuredOutputError):
        validate_output(tok.decode(ids), json_schema("person", PERSON), None)


@pytest.mark.parametrize(
    ("fmt", "regex", "match"),
    [
        (json_schema("bad", {"type": "nonsense"}), None, "invalid JSON schema"),
        (json_schema("bad", {"type": "object", "properties": 3}), None, "invalid JSON schema"),
        (json_schema("bad", {"type": "string", "format": "no-such-format"}), None, "cannot be enforced"),
        (json_schema("bad", {"type": "array", "uniqueItems": True}), None, "Unimplemented keys"),
        (json_schema("bad", [1, 2]), None, "must be an object"),
        ({"type": "json_schema"}, None, "needs a json_schema"),
        ({"type": "yaml"}, None, "unknown response_format type"),
        (None, "(abc", "invalid regex"),
        (None, r"(a)\1", "cannot be enforced"),  # Python has backreferences, the grammar engine not
        ({"type": "json_object"}, r"\d+", "not both"),
    ],
)
def test_invalid_requests_raise_a_user_facing_error(
    bpe_dir: Path, fmt: dict[str, Any] | None, regex: str | None, match: str
) -> None:
    with pytest.raises(StructuredOutputError, match=match) as info:
        compile_constraint(bpe_dir, padded_width(bpe_dir), fmt, regex)
    assert isinstance(info.value, GenloomError) and info.value.param


def test_nothing_asked_is_no_constraint(bpe_dir: Path) -> None:
    width = padded_width(bpe_dir)
    assert compile_constraint(bpe_dir, width, None, None) is None
    assert compile_constraint(bpe_dir, width, {"type": "text"}, None) is None
    validate_output("anything at all", {"type": "text"}, None)


def test_validate_output_refuses_what_does_not_validate() -> None:
    person = json_schema("person", PERSON)
    validate_output('{"name":"ab","age":3,"color":"red"}', person, None)
    for bad in ('{"name":"ab","age":3}', '{"name":"ab","age":-1,"color":"red"}', '{"name":', "[]"):
        with pytest.raises(StructuredOutputError, match="JSON"):
            validate_output(bad, person, None)
    with pytest.raises(StructuredOutputError, match="JSON"):
        validate_output("[1]", {"type": "json_object"}, None)
    with pytest.raises(StructuredOutputError, match="regex"):
        validate_output("123-", None, r"\d{3}-[a-z]+")


def test_a_missing_grammar_engine_names_the_install(bpe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install"):
        compile_constraint(bpe_dir, padded_width(bpe_dir), None, r"\d+")


def test_request_fields_take_openai_shapes(bpe_dir: Path) -> None:
    fmt = json_schema("person", PERSON)
    req = CompletionRequest(prompt="p", response_format=fmt)
    assert req.response_format is not None and req.response_format.json_schema is not None
    assert req.response_format.json_schema.schema_ == PERSON
    assert req.response_format.model_dump(by_alias=True, exclude_none=True) == fmt
    width = padded_width(bpe_dir)  # the request's model compiles as its dict does
    assert compile_constraint(bpe_dir, width, req.response_format, None) is compile_constraint(
        bpe_dir, width, fmt, None
    )
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], regex=r"\d+")
    assert chat.regex == r"\d+" and chat.response_format is None
    for bad in (
        {"response_format": {"type": "json_schema"}},
        {"response_format": {"type": "xml"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "no spaces", "schema": {}}}},
        {"regex": ""},
    ):
        with pytest.raises(ValidationError):
            CompletionRequest(prompt="p", **bad)


WORD = {
    "type": "object",
    "properties": {"w": {"enum": ["alpha", "beta", "gamma"]}, "n": {"type": "integer", "maximum": 9}},
    "required": ["w"],
    "additionalProperties": False,
}


def test_openai_client_gets_valid_json_or_a_clear_error(chat_gpt: Path, catalog: Catalog) -> None:
    openai = pytest.importorskip("openai")
    from genloom.serve.app import create_app
    from tests.serve.conftest import live_server, served

    app = create_app(lambda: served(chat_gpt), catalog)
    fmt = json_schema("word", WORD)
    messages = [{"role": "user", "content": "say alpha"}]
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="gl-any", max_retries=0)
        for seed in range(3):
            r = client.chat.completions.create(
                model="tiny", messages=messages, response_format=fmt, max_tokens=24, seed=seed
            )
            (choice,) = r.choices
            assert choice.finish_reason == "stop"
            jsonschema.validate(json.loads(choice.message.content), WORD)

        done = client.completions.create(
            model="tiny", prompt="alpha", max_tokens=8, seed=0, extra_body={"regex": r"\d{3}-[a-z]+"}
        )
        assert re.fullmatch(r"[0-9]{3}-[a-z]+", done.choices[0].text), done.choices[0].text

        with pytest.raises(openai.BadRequestError) as short:  # fails closed: no partial JSON as a 200
            client.chat.completions.create(model="tiny", messages=messages, response_format=fmt, max_tokens=2)
        assert short.value.code == "structured_output_incomplete" and "max_tokens" in short.value.message
        with pytest.raises(openai.APIError, match="max_tokens"):  # a stream ends with an error event
            for _ in client.chat.completions.create(
                model="tiny", messages=messages, response_format=fmt, max_tokens=2, stream=True
            ):
                pass
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model="tiny", messages=messages, response_format=json_schema("bad", {"type": "nonsense"})
            )
        assert bad.value.code == "invalid_response_format"
