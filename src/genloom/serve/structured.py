"""Structured output that fails closed: a token mask per decode step from a grammar engine, so a
text model's reply is valid JSON for a schema (or matches a regex) by construction.

The grammar engine is llguidance (Microsoft's Low-level Guidance, the engine behind guidance and
one of vLLM's and SGLang's structured-output backends): it compiles a JSON Schema or a regex
against the model's own tokenizer (``tokenizer.json``), and for each step computes which token
ids can continue a valid text. ``compile_constraint`` builds and caches that grammar;
``ConstraintFactory.new`` gives one ``TokenConstraint`` per generated choice. The engine masks
``logits[~constraint.allowed()] = -inf`` before sampling, feeds the sampled token to
``advance`` and ends the row when ``finished()``. A row that ends for another reason (max_tokens)
before ``accepted()`` is refused rather than returned: the request fails closed.
``validate_output`` checks the final text again with independent code (``jsonschema`` and
``re.fullmatch``), so a bug in masking surfaces as an error, never as an invalid 200.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from genloom.core.errors import GenloomError, MissingDependencyError
from genloom.models.tokenizer import END_OF_TURN, EOD, FOREIGN_EOS

if TYPE_CHECKING:
    import llguidance

INSTALL_HINT = "pip install 'genloom[serve]' (or: pip install llguidance jsonschema)"
# compiled grammars kept per process (a grammar for a big schema can take a few ms to build)
CACHE_SIZE = 64
# JSON the grammar allows: no free whitespace between tokens (a model left free to emit spaces and
# newlines can spend its whole max_tokens on them); a schema's own "x-guidance" overrides this
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}


class StructuredOutputError(GenloomError):
    """A structured-output request cannot be served as asked: a bad schema or regex, a token
    outside the grammar, or a reply that does not validate. The message is meant for the caller;
    ``param`` names the request field at fault (``response_format``, ``regex``) when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.message = message
        self.param = param
        super().__init__(message)


class TokenConstraint(Protocol):
    """The grammar state of one generated choice, advanced one token at a time."""

    def allowed(self) -> torch.Tensor:
        """Bool tensor (vocab_size,) of the token ids that may come next (padded ids never)."""
        ...

    def advance(self, token_id: int) -> None:
        """Consumes the sampled token; raises StructuredOutputError if it was not allowed."""
        ...

    def finished(self) -> bool:
        """The grammar is complete and allows nothing more but an end token: stop generating."""
        ...

    def accepted(self) -> bool:
        """The text so far is a complete match (valid JSON for the schema, or a full regex match)."""
        ...


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as e:
        raise MissingDependencyError("llguidance (structured output)", INSTALL_HINT) from e
    return llguidance


class GrammarConstraint:
    """A ``TokenConstraint`` over an llguidance matcher (one per choice, not thread-safe)."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self.vocab_size = vocab_size
        self._mask: torch.Tensor | None = None  # allowed() of the current state, until advance()
        # llguidance's bitmask: one bit per token id, 32 ids per int32 word, little-endian
        self._bits = np.full((vocab_size + 31) // 32, -1, dtype=np.int32)

    def allowed(self) -> torch.Tensor:
        """Bool tensor (vocab_size,) of the token ids that may come next (padded ids never)."""
        if self._mask is None:
            self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            self._raise_if_error()
            flags = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab_size]
            self._mask = torch.from_numpy(flags.astype(np.bool_))
        return self._mask

    def advance(self, token_id: int) -> None:
        """Consumes the sampled token; raises StructuredOutputError if it was not allowed."""
        token_id = int(token_id)
        self.allowed()  # the mask of this state, computed once
        # checked on the engine's own bits, so a caller that edits the returned tensor changes nothing
        if not 0 <= token_id < self.vocab_size or not (self._bits[token_id >> 5] >> (token_id & 31)) & 1:
            raise StructuredOutputError(f"token {token_id} is not allowed by the grammar at this point")
        self._mask = None
        if not self._matcher.consume_token(token_id):
            self._raise_if_error()
            raise StructuredOutputError(f"the grammar refused token {token_id}")

    def finished(self) -> bool:
        """The grammar is complete and allows nothing more but an end token: stop generating."""
        return bool(self._matcher.is_stopped()) and not self._matcher.is_error()

    def accepted(self) -> bool:
        """The text so far is a complete match (valid JSON for the schema, or a full regex match)."""
        return bool(self._matcher.is_accepting()) and not self._matcher.is_error()

    def _raise_if_error(self) -> None:
        if self._matcher.is_error():
            # the engine's message carries its parser state: keep the first line for the caller
            first = str(self._matcher.get_error()).strip().splitlines()[0]
            raise StructuredOutputError(f"structured output failed: {first}")


class ConstraintFactory:
    """A grammar compiled for one tokenizer and one format; ``new()`` starts one choice."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, description: str) -> None:
        self._template = matcher  # never advanced: each choice gets a copy
        self._lock = threading.Lock()
        self.vocab_size = vocab_size
        #: what the grammar enforces, for logs (``json_schema person``, ``regex \\d+``)
        self.description = description

    def new(self) -> GrammarConstraint:
        """A fresh constraint at the start of the grammar."""
        with self._lock:
            matcher = self._template.deep_copy()
        return GrammarConstraint(matcher, self.vocab_size)


def _format_dict(response_format: Mapping[str, Any] | Any | None) -> dict[str, Any] | None:
    """``response_format`` as a plain dict (the request's pydantic model, or a dict already)."""
    if response_format is None:
        return None
    if hasattr(response_format, "model_dump"):
        return dict(response_format.model_dump(by_alias=True, exclude_none=True))
    if isinstance(response_format, Mapping):
        return dict(response_format)
    raise StructuredOutputError("response_format must be an object", param="response_format")


_resolved: OrderedDict[str, tuple[str, Any] | None] = OrderedDict()
_resolve_lock = threading.Lock()


def _resolve(response_format: dict[str, Any] | None, regex: str | None) -> tuple[str, Any] | None:
    """``_requested``, remembered per request format (checking a schema costs milliseconds)."""
    key = json.dumps([response_format, regex], sort_keys=True, default=str)
    with _resolve_lock:
        if key in _resolved:
            return _resolved[key]
    asked = _requested(response_format, regex)
    with _resolve_lock:
        _remember(_resolved, key, asked)
    return asked


def _requested(response_format: dict[str, Any] | None, regex: str | None) -> tuple[str, Any] | None:
    """What to enforce: ("json_schema", schema), ("regex", pattern), or None for free text."""
    kind = (response_format or {}).get("type", "text")
    if kind not in ("text", "json_object", "json_schema"):
        raise StructuredOutputError(
            f"unknown response_format type {kind!r}: use text, json_object or json_schema",
            param="response_format.type",
        )
    if regex is not None and kind != "text":
        raise StructuredOutputError("give either response_format or regex, not both", param="regex")
    if regex is not None:
        return "regex", _ascii_classes(regex, "regex")
    if kind == "json_object":
        return "json_schema", {"type": "object"}
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        if not isinstance(spec, Mapping):
            raise StructuredOutputError(
                "response_format of type json_schema needs a json_schema object with a schema",
                param="response_format.json_schema",
            )
        schema = spec.get("schema", {})
        _check_schema(schema)
        return "json_schema", _ascii_patterns(schema)
    return None


# \d, \w and \s as ASCII classes: the grammar engine (Rust's regex crate) and Python's re disagree on
# which characters are Unicode digits (different Unicode versions), and "\d{3}" asks for 0-9
_ASCII = {"d": "0-9", "w": "0-9A-Za-z_", "s": " \\t\\n\\r\\f\\v"}


def _ascii_classes(pattern: str, param: str) -> str:
    """``pattern`` with ``\\d \\w \\s`` (and ``\\D \\W \\S``) spelled as ASCII classes, after checking
    that Python's ``re`` reads it; the same text goes to the grammar and to ``validate_output``."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise StructuredOutputError(f"invalid regex {pattern!r}: {e}", param=param) from e
    out: list[str] = []
    in_class, i = False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt.lower() in _ASCII:
                chars = _ASCII[nxt.lower()]
                if not in_class:
                    out.append(f"[{chars}]" if nxt.islower() else f"[^{chars}]")
                elif nxt.islower():
                    out.append(chars)
                else:
                    raise StructuredOutputError(
                        f"\\{nxt} inside [...] is not supported in {pattern!r}: write the class out",
                        param=param,
                    )
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            out.append(ch)
            i += 1
            # a "]" first in the class (after an optional "^") is a literal
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        if ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


# schema keywords whose values are data, not schemas: a "pattern" key inside them is not a regex
_DATA_KEYWORDS = ("const", "enum", "default", "examples")


def _ascii_patterns(schema: Any) -> Any:
    """The schema with every ``pattern`` (and ``patternProperties`` key) read by ``_ascii_classes``."""
    if isinstance(schema, list):
        return [_ascii_patterns(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        param = f"response_format.json_schema.schema ({key})"
        if key in _DATA_KEYWORDS:
            out[key] = value
        elif key == "pattern" and isinstance(value, str):
            out[key] = _ascii_classes(value, param)
        elif key == "patternProperties" and isinstance(value, Mapping):
            out[key] = {_ascii_classes(k, param): _ascii_patterns(v) for k, v in value.items()}
        else:
            out[key] = _ascii_patterns(value)
    return out


def _check_schema(schema: Any) -> None:
    """Raises StructuredOutputError unless ``schema`` is a valid JSON Schema (its own metaschema)."""
    param = "response_format.json_schema.schema"
    if not isinstance(schema, Mapping):
        raise StructuredOutputError("the JSON schema must be an object", param=param)
    try:
        import jsonschema
    except ImportError as e:
        raise MissingDependencyError("jsonschema (structured output)", INSTALL_HINT) from e
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise StructuredOutputError(f"invalid JSON schema at {where}: {e.message}", param=param) from e


def _end_ids(tokenizer_json: str) -> list[int]:
    """The tokens that end a reply: genloom's end of document and end of turn, else a HF model's EOS."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    ids = [tok.token_to_id(t) for t in (EOD, END_OF_TURN, *FOREIGN_EOS)]
    return [int(i) for i in ids if i is not None]


_lock = threading.Lock()
_tokenizers: OrderedDict[tuple[str, int], Any] = OrderedDict()
_grammars: OrderedDict[tuple[str, int, str], ConstraintFactory] = OrderedDict()
_digests: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    """sha256 of the tokenizer file, remembered per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _digests[key]


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def _ll_tokenizer(llg: Any, path: Path, digest: str, vocab_size: int) -> Any:
    """llguidance's view of the model's tokenizer (its token trie), built once per file and width."""
    key = (digest, vocab_size)
    if key not in _tokenizers:
        text = path.read_text(encoding="utf-8")
        ends = _end_ids(text)
        if not ends:
            raise StructuredOutputError(
                f"the tokenizer in {path.parent} has no end token ({EOD}), so no grammar can end the text"
            )
        try:
            tok = llg.LLTokenizer(text, n_vocab=vocab_size, eos_token=ends)
        except Exception as e:  # the Rust side raises plain ValueErrors / RuntimeErrors
            raise StructuredOutputError(f"the grammar engine cannot use {path}: {e}") from e
        _remember(_tokenizers, key, tok)
    return _tokenizers[key]


def compile_constraint(
    model_dir: Path | str,
    vocab_size: int,
    response_format: Mapping[str, Any] | Any | None,
    regex: str | None,
) -> ConstraintFactory | None:
    """The grammar a request asks for, compiled against ``model_dir/tokenizer.json`` for logits of
    width ``vocab_size``; None when nothing is asked (no format, or ``{"type": "text"}``).

    Raises StructuredOutputError for an invalid schema or regex, or one the engine cannot
    enforce, and MissingDependencyError when llguidance is not installed. Compiled grammars are
    cached per (tokenizer digest, width, format).
    """
    fmt = _format_dict(response_format)
    asked = _resolve(fmt, regex)
    if asked is None:
        return None
    kind, spec = asked
    llg = _llguidance()
    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        raise StructuredOutputError(f"structured output needs the model's tokenizer.json ({path} is missing)")
    digest = _digest(path)
    key = (digest, vocab_size, json.dumps([kind, spec], sort_keys=True))
    with _lock:
        if key in _grammars:
            _grammars.move_to_end(key)
            return _grammars[key]
        tok = _ll_tokenizer(llg, path, digest, vocab_size)
        if kind == "regex":
            grammar = llg.LLMatcher.grammar_from_regex(spec)
            param, what = "regex", "regex"
        else:
            try:
                grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(spec), defaults=JSON_OPTIONS)
            except ValueError as e:
                raise StructuredOutputError(
                    f"invalid JSON schema: {e}", param="response_format.json_schema.schema"
                ) from e
            param, what = "response_format.json_schema.schema", "JSON schema"
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, tok)
        if is_error:
            first = messages[0].strip().splitlines()[0] if messages else "unknown error"
            raise StructuredOutputError(f"the {what} cannot be enforced: {first}", param=param)
        matcher = llg.LLMatcher(tok, grammar, log_level=0)
        if matcher.is_error():
            raise StructuredOutputError(f"the {what} cannot be enforced: {matcher.get_error()}", param=param)
        name = ((fmt or {}).get("json_schema") or {}).get("name", "") if kind == "json_schema" else spec
        factory = ConstraintFactory(matcher, vocab_size, f"{kind} {name}".strip())
        _remember(_grammars, key, factory)
        return factory


def validate_output(text: str, response_format: Mapping[str, Any] | Any | None, regex: str | None) -> None:
    """Raises StructuredOutputError unless ``text`` satisfies the request's format: parses as JSON
    (an object for json_object) valid for the schema (``jsonschema``), or fully matches the regex."""
    asked = _resolve(_format_dict(response_format), regex)
    if asked is None:
        return
    kind, spec = asked
    if kind == "regex":
        if re.fullmatch(spec, text, flags=re.ASCII) is None:
            raise StructuredOutputError(f"the output does not match the regex {regex!r}", param="regex")
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise StructuredOutputError(f"the output is not valid JSON: {e}", param="response_format") from e
    import jsonschema

    errors = sorted(
        jsonschema.validators.validator_for(spec)(spec).iter_errors(value), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise StructuredOutputError(
            f"the output does not satisfy the JSON schema at {where}: {errors[0].message}",
            param="response_format",
        )
