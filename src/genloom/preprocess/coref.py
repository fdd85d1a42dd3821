"""Rule-based pronoun coreference on a spaCy parse (agreement, recency, salience, binding)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import MissingDependencyError
from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import StepContext
from genloom.core.text_columns import write_column
from genloom.preprocess._spacy_step import SpacyAnnotator

# third-person pronouns: (gender, number, kind) ; gender m/f/n (neuter) or None (any), number sg/pl
PRONOUNS: dict[str, tuple[str | None, str, str]] = {
    "he": ("m", "sg", "subj"),
    "him": ("m", "sg", "obj"),
    "his": ("m", "sg", "poss"),
    "himself": ("m", "sg", "refl"),
    "she": ("f", "sg", "subj"),
    "her": ("f", "sg", "obj"),
    "hers": ("f", "sg", "poss"),
    "herself": ("f", "sg", "refl"),
    "it": ("n", "sg", "subj"),
    "its": ("n", "sg", "poss"),
    "itself": ("n", "sg", "refl"),
    "they": (None, "pl", "subj"),
    "them": (None, "pl", "obj"),
    "their": (None, "pl", "poss"),
    "theirs": (None, "pl", "poss"),
    "themselves": (None, "pl", "refl"),
}
MALE_NOUNS = frozenset(
    [
        "man",
        "men",
        "boy",
        "boys",
        "father",
        "fathers",
        "son",
        "sons",
        "brother",
        "brothers",
        "husband",
        "husbands",
        "king",
        "kings",
        "uncle",
        "uncles",
        "nephew",
        "grandfather",
        "gentleman",
        "gentlemen",
        "sir",
        "lord",
        "prince",
        "duke",
        "mr",
        "monk",
        "priest",
        "actor",
        "waiter",
    ]
)
FEMALE_NOUNS = frozenset(
    [
        "woman",
        "women",
        "girl",
        "girls",
        "mother",
        "mothers",
        "daughter",
        "daughters",
        "sister",
        "sisters",
        "wife",
        "wives",
        "queen",
        "queens",
        "aunt",
        "aunts",
        "niece",
        "grandmother",
        "lady",
        "ladies",
        "madam",
        "princess",
        "duchess",
        "mrs",
        "ms",
        "miss",
        "nun",
        "actress",
        "waitress",
    ]
)
PERSON_NOUNS = (
    frozenset(
        [
            "person",
            "people",
            "child",
            "children",
            "friend",
            "friends",
            "teacher",
            "teachers",
            "student",
            "students",
            "doctor",
            "doctors",
            "nurse",
            "nurses",
            "engineer",
            "engineers",
            "manager",
            "managers",
            "customer",
            "customers",
            "employee",
            "employees",
            "worker",
            "workers",
            "driver",
            "drivers",
            "lawyer",
            "lawyers",
            "author",
            "authors",
            "scientist",
            "scientists",
            "officer",
            "officers",
            "president",
            "minister",
            "chef",
            "farmer",
            "farmers",
            "pilot",
            "pilots",
            "patient",
            "patients",
            "user",
            "users",
            "player",
            "players",
            "team",
            "member",
            "members",
            "owner",
            "owners",
            "neighbour",
            "neighbor",
            "neighbours",
            "neighbors",
            "baby",
            "babies",
            "parent",
            "parents",
            "client",
            "clients",
            "writer",
            "writers",
            "artist",
            "artists",
            "soldier",
            "soldiers",
            "judge",
            "king",
            "queen",
        ]
    )
    | MALE_NOUNS
    | FEMALE_NOUNS
)
MALE_NAMES = frozenset(
    [
        "james",
        "john",
        "robert",
        "michael",
        "william",
        "david",
        "richard",
        "joseph",
        "thomas",
        "charles",
        "christopher",
        "daniel",
        "matthew",
        "anthony",
        "mark",
        "donald",
        "steven",
        "paul",
        "andrew",
        "joshua",
        "kenneth",
        "kevin",
        "brian",
        "george",
        "timothy",
        "ronald",
        "edward",
        "jason",
        "jeffrey",
        "ryan",
        "jacob",
        "gary",
        "nicholas",
        "eric",
        "jonathan",
        "stephen",
        "larry",
        "justin",
        "scott",
        "brandon",
        "benjamin",
        "samuel",
        "frank",
        "gregory",
        "raymond",
        "alexander",
        "patrick",
        "jack",
        "dennis",
        "jerry",
        "tyler",
        "aaron",
        "henry",
        "peter",
        "adam",
        "tim",
        "tom",
        "bob",
        "bill",
        "jim",
        "joe",
        "mike",
        "fred",
        "carlos",
        "juan",
        "luis",
        "pierre",
        "hans",
        "ahmed",
        "mohammed",
        "ali",
        "omar",
        "ivan",
        "igor",
        "darcy",
        "bingley",
        "wickham",
        "collins",
        "bennet",
        "elon",
        "barack",
        "vladimir",
        "emmanuel",
        "olaf",
        "socrates",
        "plato",
    ]
)
FEMALE_NAMES = frozenset(
    [
        "mary",
        "patricia",
        "jennifer",
        "linda",
        "elizabeth",
        "barbara",
        "susan",
        "jessica",
        "sarah",
        "karen",
        "nancy",
        "lisa",
        "betty",
        "margaret",
        "sandra",
        "ashley",
        "kimberly",
        "emily",
        "donna",
        "michelle",
        "dorothy",
        "carol",
        "amanda",
        "melissa",
        "deborah",
        "stephanie",
        "rebecca",
        "sharon",
        "laura",
        "cynthia",
        "kathleen",
        "amy",
        "angela",
        "shirley",
        "anna",
        "brenda",
        "pamela",
        "emma",
        "nicole",
        "helen",
        "samantha",
        "katherine",
        "christine",
        "debra",
        "rachel",
        "carolyn",
        "janet",
        "catherine",
        "maria",
        "heather",
        "diane",
        "ruth",
        "julie",
        "olivia",
        "joyce",
        "virginia",
        "victoria",
        "kelly",
        "lauren",
        "christina",
        "joan",
        "evelyn",
        "judith",
        "megan",
        "andrea",
        "cheryl",
        "hannah",
        "jane",
        "lydia",
        "kitty",
        "charlotte",
        "marie",
        "sophie",
        "anne",
        "claire",
        "ursula",
        "kamala",
        "hillary",
        "marta",
        "lucy",
        "alice",
    ]
)
ANIMATE_ENTS = frozenset({"PERSON"})
TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "lady", "lord"})
GROUP_ENTS = frozenset({"ORG", "NORP"})
THING_ENTS = frozenset({"GPE", "LOC", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"})


@dataclass
class Mention:
    """A candidate antecedent: a noun phrase or entity, with its agreement features."""

    start: int  # token index of the first token
    end: int  # token index after the last token
    head: Any  # the spaCy head token
    text: str
    gender: str | None  # m, f, n or None when unknown (a person of unknown gender)
    number: str  # sg or pl
    animate: bool | None
    sent: int
    score_bonus: float = 0.0


def _person_gender(span_text: str, head: Any) -> str | None:
    words = [w.strip(".").lower() for w in span_text.split()]
    if words and words[0] in ("mr", "sir", "lord", "king", "prince"):
        return "m"
    if words and words[0] in ("mrs", "ms", "miss", "lady", "queen", "princess", "madam"):
        return "f"
    for w in words:
        if w in MALE_NAMES:
            return "m"
        if w in FEMALE_NAMES:
            return "f"
    return None


@PREPROCESSORS.register("coref")
class CorefMap(SpacyAnnotator):
    """Resolve third-person pronouns to their antecedents with rules on a spaCy parse and entities.

    Candidates are the noun phrases and named entities of the current and ``max_sentences``
    previous sentences that precede the pronoun. A candidate must agree in number (plural tags,
    coordinated phrases, ``they`` for organisations), gender (``he``/``she`` need a person: a
    PERSON entity, a person noun or a gendered name/title from built-in lists; ``it`` needs a
    non-person) and binding (a non-reflexive object pronoun cannot be its verb's subject; a
    reflexive must be). Among the rest the highest score wins: recency (a sentence back costs 2),
    subject role (+2), being a named entity (+1), and a previous mention resolved to the same
    entity (+1, so chains like "She ... she" stay on one person). Writes a list of ``{pronoun,
    start, end, possessive, antecedent, antecedent_start, antecedent_end}`` (character offsets; antecedent
    null when nothing agrees) to ``output_column``, and with ``resolved_column`` the text with
    each resolved pronoun replaced by its antecedent (``his`` -> ``Tim Cook's``). Accuracy on the
    annotated set held in the tests (tests/preprocess/test_preprocess_coref.py) is stated in
    docs/preprocess.md. No offline neural coreference model exists for spaCy 3.8, hence rules.

    ``backend: model`` uses a stronger model where one is installed instead: ``spacy_model``
    names a spaCy pipeline (package or folder) with a coreference component that writes its
    clusters to ``doc.spans`` under keys starting with ``cluster_prefix`` (spacy-experimental's
    ``coref``, e.g. ``en_coreference_web_trf``, writes ``coref_clusters_1``, ``_2``...). Each
    pronoun in a cluster is linked to the nearest earlier mention of that cluster that is not a
    pronoun; the output columns are the same.
    """

    type: Literal["coref"] = "coref"
    output_column: str = "coref"
    resolved_column: str | None = None
    max_sentences: int = Field(default=3, ge=0)
    #: rules on the parse (default), or the clusters of a coreference model in ``spacy_model``
    backend: Literal["rules", "model"] = "rules"
    #: backend model: the ``doc.spans`` keys holding clusters start with this
    cluster_prefix: str = "coref_clusters"
    value_type: ClassVar[pa.DataType] = pa.list_(
        pa.struct(
            [
                ("pronoun", pa.string()),
                ("start", pa.int32()),
                ("end", pa.int32()),
                ("possessive", pa.bool_()),
                ("antecedent", pa.string()),
                ("antecedent_start", pa.int32()),
                ("antecedent_end", pa.int32()),
            ]
        )
    )
    exclude: ClassVar[tuple[str, ...]] = ("lemmatizer",)

    def output_name(self) -> str:
        return self.output_column

    def mentions(self, doc: Any) -> list[Mention]:
        """Candidate antecedents of one Doc: entities and noun chunks (pronouns excluded)."""
        sent_of = {}
        for k, s in enumerate(doc.sents):
            for t in s:
                sent_of[t.i] = k
        out: dict[tuple[int, int], Mention] = {}
        for e in doc.ents:
            # titles are often left out of the entity ("Mr." of "Mr. Darcy")
            start = e.start - 1 if e.start > 0 and doc[e.start - 1].lower_.rstrip(".") in TITLES else e.start
            text = doc[start : e.end].text
            if e.label_ in ANIMATE_ENTS or _person_gender(text, e.root) is not None:
                gender, number, animate = _person_gender(text, e.root), "sg", True
            elif e.label_ in GROUP_ENTS or e.label_ in THING_ENTS:
                gender, number, animate = "n", "sg", False
            else:
                continue
            out[(start, e.end)] = Mention(
                start, e.end, e.root, text, gender, number, animate, sent_of[e.start], 1.0
            )
        # coordinated phrases ("Sarah and Tom") are one plural mention
        for tok in doc:
            conj = [c for c in tok.children if c.dep_ == "conj" and c.pos_ in ("PROPN", "NOUN")]
            if tok.pos_ in ("PROPN", "NOUN") and conj and tok.dep_ != "conj":
                start, end = tok.left_edge.i, conj[-1].right_edge.i + 1
                span = doc[start:end]
                out[(start, end)] = Mention(start, end, tok, span.text, None, "pl", None, sent_of[start])
        for nc in doc.noun_chunks:
            root = nc.root
            if root.pos_ == "PRON" or root.lower_ in PRONOUNS:
                continue
            # a noun chunk inside an entity already listed adds nothing
            if any(s[0] <= root.i < s[1] for s in out):
                continue
            low = root.lower_
            plural = root.tag_ in ("NNS", "NNPS") or any(c.dep_ == "conj" for c in root.children)
            if low in MALE_NOUNS:
                gender, animate = "m", True
            elif low in FEMALE_NOUNS:
                gender, animate = "f", True
            elif low in PERSON_NOUNS:
                gender, animate = None, True
            elif root.pos_ == "PROPN":
                gender = _person_gender(nc.text, root)
                animate = True if gender else None
            else:
                gender, animate = "n", False
            end = max([nc.end] + [c.i + 1 for c in root.subtree if c.dep_ == "conj" or c.head.dep_ == "conj"])
            text = doc[nc.start : end].text if plural and end > nc.end else nc.text
            out[(nc.start, end)] = Mention(
                nc.start, end, root, text, gender, "pl" if plural else "sg", animate, sent_of[nc.start]
            )
        return sorted(out.values(), key=lambda m: m.start)

    def setup(self) -> None:
        super().setup()
        if self.backend == "model" and not any("coref" in name for name in self._nlp.pipe_names):
            raise MissingDependencyError(
                f"a coreference component in spaCy pipeline {self.spacy_model!r} "
                f"(it has {', '.join(self._nlp.pipe_names) or 'no components'})",
                "install a pipeline with one (pip install spacy-experimental and its "
                "en_coreference_web_trf) and set spacy_model to it, or use backend: rules",
            )

    def annotate(self, doc: Any) -> Any:
        if self.backend == "model":
            return self.model_links(doc)
        mentions = self.mentions(doc)
        sent_of = {}
        for k, s in enumerate(doc.sents):
            for t in s:
                sent_of[t.i] = k
        links: list[dict[str, Any]] = []
        # entity id of each mention: chains of pronouns count towards the salience of their antecedent
        resolved_count: dict[int, int] = {}
        for tok in doc:
            feats = PRONOUNS.get(tok.lower_)
            if feats is None:
                continue
            gender, number, kind = feats
            if tok.dep_ == "poss":  # "her" is both object and possessive; the parse decides
                kind = "poss"
            sent = sent_of[tok.i]
            best: tuple[float, int] | None = None
            for k, m in enumerate(mentions):
                if m.end > tok.i or sent - m.sent > self.max_sentences or m.start <= tok.i < m.end:
                    continue
                if not self._agrees(m, gender, number):
                    continue
                if not self._binding_ok(m, tok, kind):
                    continue
                score = -2.0 * (sent - m.sent) + m.score_bonus + 0.01 * (m.start / max(len(doc), 1))
                if m.head.dep_ in ("nsubj", "nsubjpass"):
                    score += 2.0
                score += min(resolved_count.get(k, 0), 2)
                if gender in ("m", "f") and m.gender == gender:
                    score += 1.5  # a known gender that matches beats an unknown one
                if number == "pl" and m.number != "pl":
                    score -= 3.0  # "they" for an organisation only when no plural phrase fits
                if best is None or score > best[0]:
                    best = (score, k)
            link: dict[str, Any] = {
                "pronoun": tok.text,
                "start": tok.idx,
                "end": tok.idx + len(tok.text),
                "possessive": kind == "poss",
                "antecedent": None,
                "antecedent_start": None,
                "antecedent_end": None,
            }
            if best is not None:
                m = mentions[best[1]]
                resolved_count[best[1]] = resolved_count.get(best[1], 0) + 1
                span = doc[m.start : m.end]
                # a pronoun resolved to a person of unknown gender fixes that gender
                if m.gender is None and gender in ("m", "f"):
                    m.gender = gender
                link.update(
                    antecedent=m.text,
                    antecedent_start=span.start_char,
                    antecedent_end=span.start_char + len(m.text),
                )
            links.append(link)
        return links

    def model_links(self, doc: Any) -> list[dict[str, Any]]:
        """Links from a coreference model's clusters: pronoun -> nearest earlier non-pronoun mention."""
        links: dict[int, dict[str, Any]] = {}
        for key, group in doc.spans.items():
            if not key.startswith(self.cluster_prefix):
                continue
            spans = sorted(group, key=lambda sp: sp.start)
            for k, sp in enumerate(spans):
                if len(sp) != 1 or sp[0].lower_ not in PRONOUNS:
                    continue
                tok = sp[0]
                ante = next(
                    (a for a in reversed(spans[:k]) if not (len(a) == 1 and a[0].lower_ in PRONOUNS)), None
                )
                links[tok.i] = {
                    "pronoun": tok.text,
                    "start": tok.idx,
                    "end": tok.idx + len(tok.text),
                    "possessive": tok.dep_ == "poss" or PRONOUNS[tok.lower_][2] == "poss",
                    "antecedent": ante.text if ante is not None else None,
                    "antecedent_start": ante.start_char if ante is not None else None,
                    "antecedent_end": ante.end_char if ante is not None else None,
                }
        return [links[i] for i in sorted(links)]

    @staticmethod
    def _agrees(m: Mention, gender: str | None, number: str) -> bool:
        if number == "pl":
            # "they" for plurals and for organisations / groups
            return m.number == "pl" or (m.animate is False and m.head.ent_type_ in GROUP_ENTS)
        if m.number == "pl":
            return False
        if gender == "n":
            return m.animate is not True
        # he / she: a person, or a proper name of unknown animacy
        if m.animate is False:
            return False
        return m.gender is None or m.gender == gender

    @staticmethod
    def _binding_ok(m: Mention, tok: Any, kind: str) -> bool:
        if kind in ("refl", "poss") or tok.dep_ not in ("dobj", "pobj", "dative"):
            return True
        # an object pronoun is not its own verb's subject (Binding principle B); a verb
        # coordinated with another ("examined ... and told her") shares that verb's subject
        verb = tok.head.head if tok.dep_ == "pobj" else tok.head
        verbs = [verb] + ([verb.head] if verb.dep_ == "conj" else [])
        subjects = {c.i for v in verbs for c in v.children if c.dep_ in ("nsubj", "nsubjpass")}
        return m.head.i not in subjects

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        texts = table.column(self.column).to_pylist()
        values: list[Any] = [None] * len(texts)
        resolved: list[str | None] = list(texts)
        for i, doc in self.docs(texts):
            links = self.annotate(doc)
            values[i] = links
            if self.resolved_column:
                resolved[i] = _substitute(texts[i] or "", links)
        table = write_column(table, self.output_column, pa.array(values, self.value_type))
        if self.resolved_column:
            table = write_column(table, self.resolved_column, pa.array(resolved, pa.string()))
        return table


def _substitute(text: str, links: list[dict[str, Any]]) -> str:
    """``text`` with each resolved pronoun replaced by its antecedent (possessives get ``'s``)."""
    out = text
    for link in sorted(links, key=lambda x: x["start"], reverse=True):
        ante = link["antecedent"]
        if not ante:
            continue
        if PRONOUNS[link["pronoun"].lower()][2] == "refl":
            continue
        repl = ante + "'s" if link["possessive"] else ante
        if link["start"] == 0 or text[: link["start"]].rstrip().endswith((".", "!", "?")):
            repl = repl[:1].upper() + repl[1:]
        out = out[: link["start"]] + repl + out[link["end"] :]
    return out
