"""Near-duplicate removal with MinHash + LSH (Broder 1997; Leskovec et al., "Mining of Massive Datasets" ch. 3)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from genloom.core.errors import ConfigError, MissingDependencyError
from genloom.core.registry import CLEANERS
from genloom.core.steps import Fitted

_MAX_SHINGLES_PER_CHUNK = 1 << 15
_WORD_CACHE_LIMIT = 1 << 20
_word_cache: dict[str, int] = {}


def _word_hash(word: str) -> int:
    """A stable 64-bit hash of one word (the same in every process and run)."""
    h = _word_cache.get(word)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        if len(_word_cache) >= _WORD_CACHE_LIMIT:
            _word_cache.clear()
        _word_cache[word] = h
    return h


# datatrove's punctuation set (utils/text.py), so both tools see the same words
_PUNCT = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
# (the C0/C1 controls of datatrove's list too; RE2 class syntax)
_PUNCT_CLASS = (
    "[" + "".join("\\" + c if c in "\\^-[]" else c for c in _PUNCT) + r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
)
_MERSENNE = np.uint64((1 << 61) - 1)
# spaCy's English tokenizer splits these apostrophe-less contractions (from its tokenizer exceptions);
# datatrove shingles spaCy tokens, so genloom does the same to get the same shingles
_SPACY_SPLITS_SPEC = (
    "im=i+m ima=i+m+a illve=i+ll+ve id=i+d idve=i+d+ve youll=you+ll youllve=you+ll+ve youd=you+d "
    "youdve=you+d+ve hellve=he+ll+ve hed=he+d hedve=he+d+ve shellve=she+ll+ve shedve=she+d+ve itll=it+ll "
    "itllve=it+ll+ve itd=it+d itdve=it+d+ve wellve=we+ll+ve wed=we+d wedve=we+d+ve theyll=they+ll "
    "theyllve=they+ll+ve theyd=they+d theydve=they+d+ve ive=i+ve youve=you+ve weve=we+ve theyve=they+ve "
    "youre=you+re theyre=they+re hes=he+s shes=she+s whos=who+s wholl=who+ll whollve=who+ll+ve "
    "whove=who+ve whod=who+d whodve=who+d+ve whats=what+s whatll=what+ll whatllve=what+ll+ve "
    "whatre=what+re whatve=what+ve whatd=what+d whatdve=what+d+ve whens=when+s whenll=when+ll "
    "whenllve=when+ll+ve whenre=when+re whenve=when+ve whend=when+d whendve=when+d+ve wheres=where+s "
    "wherell=where+ll wherellve=where+ll+ve wherere=where+re whereve=where+ve whered=where+d "
    "wheredve=where+d+ve whys=why+s whyll=why+ll whyllve=why+ll+ve whyre=why+re whyve=why+ve whyd=why+d "
    "whydve=why+d+ve hows=how+s howll=how+ll howllve=how+ll+ve howre=how+re howve=how+ve howd=how+d "
    "howdve=how+d+ve theres=there+s therell=there+ll therellve=there+ll+ve therere=there+re "
    "thereve=there+ve thered=there+d theredve=there+d+ve thats=that+s thatll=that+ll thatllve=that+ll+ve "
    "thatd=that+d thatdve=that+d+ve thiss=this+s thisll=this+ll thisllve=this+ll+ve thisd=this+d "
    "thisdve=this+d+ve thesell=these+ll thesellve=these+ll+ve thesere=these+re theseve=these+ve "
    "thesed=these+d thesedve=these+d+ve thosell=those+ll thosellve=those+ll+ve thosere=those+re "
    "thoseve=those+ve thosed=those+d thosedve=those+d+ve cant=ca+nt cantve=ca+nt+ve couldnt=could+nt "
    "couldntve=could+nt+ve dont=do+nt dontve=do+nt+ve doesnt=does+nt doesntve=does+nt+ve didnt=did+nt "
    "didntve=did+nt+ve hadnt=had+nt hadntve=had+nt+ve maynt=may+nt mayntve=may+nt+ve mightnt=might+nt "
    "mightntve=might+nt+ve mustnt=must+nt mustntve=must+nt+ve neednt=need+nt needntve=need+nt+ve "
    "oughtnt=ought+nt oughtntve=ought+nt+ve shant=sha+nt shantve=sha+nt+ve shouldnt=should+nt "
    "shouldntve=should+nt+ve wont=wo+nt wontve=wo+nt+ve wouldnt=would+nt wouldntve=would+nt+ve "
    "couldve=could+ve mightve=might+ve mustve=must+ve shouldve=should+ve wouldve=would+ve aint=ai+nt "
    "arent=are+nt isnt=is+nt wasnt=was+nt werent=were+nt havent=have+nt hasnt=has+nt darent=dare+nt "
    "yall=y+all notve=not+ve cannot=can+not gonna=gon+na gotta=got+ta "
)
_SPACY_SPLITS = {kv.split("=")[0]: kv.split("=")[1].split("+") for kv in _SPACY_SPLITS_SPEC.split()}


def simplify(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Text as MinHash sees it (datatrove's ``simplify_text``): lowercase, numbers as 0, punctuation
    as spaces, no diacritics."""
    col = pc.utf8_lower(pc.fill_null(col, ""))
    col = pc.replace_substring_regex(col, pattern=r"\p{Nd}+(?:[.,،٫⎖⎗⎘]\p{Nd}+)?", replacement="0")
    col = pc.replace_substring_regex(col, pattern=_PUNCT_CLASS, replacement=" ")
    col = pc.utf8_normalize(col, form="NFD")
    col = pc.replace_substring_regex(col, pattern=r"\p{Mn}+", replacement="")
    return pc.utf8_trim_whitespace(col)


class MinHasher:
    """MinHash signatures of whole batches: word n-gram shingles, ``num_perm`` hash permutations.

    ``hash: xxhash64`` is datatrove's scheme (xxh64 of the space-joined n-gram, then
    ``(a * x + b) mod (2**61 - 1)`` with a, b from ``numpy.random.RandomState(seed)``), so the two
    tools give identical signatures; ``blake2b`` needs no extra package and hashes words once per
    batch (faster), with multiply-add permutations modulo 2**64.
    """

    def __init__(self, num_perm: int, ngram: int, seed: int, hash: str = "xxhash64") -> None:
        self.num_perm = num_perm
        self.ngram = ngram
        self.hash = hash
        if hash == "xxhash64":
            gen = np.random.RandomState(seed)
            self.a = gen.randint(1, _MERSENNE, dtype=np.uint64, size=num_perm)
            self.b = gen.randint(0, _MERSENNE, dtype=np.uint64, size=num_perm)
        else:
            rng = np.random.default_rng(seed)
            # multiply-add hashing modulo 2**64 (odd multipliers are bijections of the 64-bit space)
            self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
            self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.mix = np.random.default_rng(seed).integers(1, 2**63, size=ngram, dtype=np.uint64) * np.uint64(
            2
        ) + np.uint64(1)

    def _shingles_xxhash(self, words: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
        """(shingle hashes of all documents end to end, shingles per document)."""
        try:
            from xxhash import xxh64_intdigest
        except ImportError as e:
            raise MissingDependencyError(
                "xxhash (dedup_minhash hash: xxhash64)", "pip install xxhash, or set hash: blake2b"
            ) from e

        n = self.ngram
        flat: list[int] = []
        counts = []
        splits = _SPACY_SPLITS
        for ws in words.to_pylist():
            if ws and not splits.keys().isdisjoint(ws):
                ws = [p for w in ws for p in splits.get(w, (w,))]
            k = len(ws) - n + 1 if ws else 0
            if k > 0:
                flat.extend(xxh64_intdigest(" ".join(ws[i : i + n]).encode()) for i in range(k))
            counts.append(max(k, 0))
        return np.array(flat, dtype=np.uint64), np.array(counts, dtype=np.int64)

    def _shingles_blake2b(self, words: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
        n = self.ngram
        offsets = words.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        counts = np.diff(offsets)
        n_sh = np.maximum(counts - n + 1, 0)
        flat = words.flatten()
        if len(flat) < n:
            return np.zeros(0, np.uint64), n_sh
        enc = pc.dictionary_encode(flat)
        vocab = np.fromiter(
            (_word_hash(w) for w in enc.dictionary.to_pylist()), dtype=np.uint64, count=len(enc.dictionary)
        )
        wh = vocab[enc.indices.to_numpy()]  # (W,) word hashes, all documents end to end
        total = len(wh)
        sh = wh[: total - n + 1] * self.mix[0]
        for k in range(1, n):
            sh = sh + wh[k : total - n + 1 + k] * self.mix[k]
        # keep the positions whose n-gram lies inside one document
        doc_of = np.repeat(np.arange(len(counts)), counts)[: len(sh)]
        valid = np.arange(len(sh)) + n <= offsets[doc_of + 1]
        return sh[valid], n_sh

    def signatures(self, col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(signatures (D, num_perm) uint64, has_shingles (D,) bool) for the D texts of ``col``."""
        words = pc.utf8_split_whitespace(simplify(col))
        if isinstance(words, pa.ChunkedArray):
            words = words.combine_chunks()
        n_docs = len(words)
        sig = np.full((n_docs, self.num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
        sh, n_sh = self._shingles_xxhash(words) if self.hash == "xxhash64" else self._shingles_blake2b(words)
        has = n_sh > 0
        if not has.any():
            return sig, has
        docs = np.flatnonzero(has)
        starts = np.concatenate(([0], np.cumsum(n_sh[docs])[:-1]))
        # chunks of whole documents, so the (shingles, num_perm) matrix stays small
        i = 0
        while i < len(docs):
            j = int(np.searchsorted(starts, starts[i] + _MAX_SHINGLES_PER_CHUNK, side="left"))
            j = max(j, i + 1)
            lo = starts[i]
            hi = starts[j] if j < len(docs) else len(sh)
            hv = sh[lo:hi, None] * self.a[None, :] + self.b[None, :]  # (S, P)
            if self.hash == "xxhash64":
                hv %= _MERSENNE
            sig[docs[i:j]] = np.minimum.reduceat(hv, starts[i:j] - lo, axis=0)
            i = j
        return sig, has


@CLEANERS.register("dedup_minhash")
class MinHashDedup(Fitted):
    """Drop near-duplicate documents: MinHash signatures of word n-grams, banded LSH, first copy kept.

    The text is simplified first (lowercase, numbers to 0, punctuation removed, accents folded, as
    datatrove does), cut into word ``ngram`` shingles and summarised by ``bands`` x ``rows``
    MinHash values (``hash: xxhash64``, the default, computes exactly datatrove's signatures;
    ``blake2b`` needs no extra package and is 2-3x faster). Two documents that agree on all the
    rows of any band are linked; the default 14 x 8 (datatrove's) links pairs with Jaccard
    similarity 0.8 with probability 0.92 and 0.7 with 0.54 (threshold about (1/bands)^(1/rows)).
    Each connected component of links is one cluster (as datatrove's union-find): its first
    document in input order (shard order, then row order) is kept and the others are dropped as
    ``near_duplicate``, so the kept copy is deterministic. The state records every dropped id and
    the id of the copy kept. The fit streams the batches and keeps only ``bands`` 64-bit keys per
    document (112 bytes with the defaults) plus the ids; clustering is vectorised NumPy.
    ``index_path`` keeps the band keys in a .npy file between runs, so a cluster that touches a
    document of an earlier run is dropped whole (``duplicate_of: "(earlier run)"``). A document
    counts as "earlier" only if its id is not in the data being fitted: refitting the same data
    (``--force clean``, a resumed run) drops nothing more than the first fit, and an edited
    document replaces its old entries. The updated index is part of the fitted state (saved in
    the store with it) and is copied to ``index_path`` only after the state is complete, so a fit
    killed midway leaves the index as it was. Entries are marked with the fit that committed them;
    the entries of other fits are part of the step's cache key (so another pipeline's additions
    rerun it), its own are not (so re-running unchanged data is a cache hit). Documents with fewer than ``ngram`` words are never dropped.
    """

    type: Literal["dedup_minhash"] = "dedup_minhash"
    column: str = "text"
    ngram: int = Field(default=5, ge=1)
    bands: int = Field(default=14, ge=1)
    rows: int = Field(default=8, ge=1)
    seed: int = 1
    #: ``xxhash64``: datatrove's exact signatures (needs the xxhash package); ``blake2b``: no extra package
    hash: Literal["xxhash64", "blake2b"] = "xxhash64"
    #: a .npy file with band keys of earlier runs: read by the fit, updated once its state is complete
    index_path: str | None = None
    drop_reason: ClassVar[str] = "near_duplicate"

    def check(self, path: str) -> None:
        if self.index_path and not self.index_path.endswith(".npy"):
            raise ConfigError("index_path must end with .npy", path=f"{path}.index_path")

    def _index_file(self) -> str | None:
        return self.resolve_path(self.index_path) if self.index_path else None

    def shared_state_digest(self, tag: str) -> str:
        """The index's entries that other fits committed (this fit's own are left out)."""
        index_file = self._index_file()
        if index_file is None or not os.path.exists(index_file):
            return ""
        index = _load_index(index_file)
        others = np.ascontiguousarray(index[index[:, 2] != np.uint64(_id_hash(tag))])
        return hashlib.sha256(others.tobytes()).hexdigest()[:32] if len(others) else ""

    def band_keys(self, tables: Iterable[pa.Table]) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """Per batch: ids, band keys (D, bands) uint64 and which documents have shingles."""
        hasher = MinHasher(self.bands * self.rows, self.ngram, self.seed, self.hash)
        rng = np.random.default_rng(self.seed + 1)
        band_mix = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        # band number in the low bits, so equal rows in different bands never collide
        band_ids = np.arange(self.bands, dtype=np.uint64)
        for table in tables:
            if table.num_rows == 0:
                continue
            sig, has = hasher.signatures(table.column(self.column))
            bands = sig.reshape(len(sig), self.bands, self.rows)
            keys = (bands * band_mix).sum(axis=2, dtype=np.uint64)  # (D, bands)
            keys = (keys & ~np.uint64(0xFF)) | band_ids
            yield table.column("id").to_pylist(), keys, has

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        ids: list[str] = []
        parts: list[np.ndarray] = []
        valid: list[np.ndarray] = []
        for batch_ids, keys, has in self.band_keys(tables):
            ids += batch_ids
            parts.append(keys)
            valid.append(has)
        keys = np.concatenate(parts) if parts else np.zeros((0, self.bands), np.uint64)
        has = np.concatenate(valid) if valid else np.zeros(0, bool)
        label = cluster_first(keys, has)
        owners = np.array([_id_hash(i) for i in ids], dtype=np.uint64)
        previous = np.zeros((0, 3), np.uint64)
        index_file = self._index_file()
        if index_file is not None and os.path.exists(index_file):
            previous = _load_index(index_file)
        # entries of documents in this fit are this run's, not an earlier one's (a refit, an edit)
        previous = previous[~np.isin(previous[:, 1], owners)]
        # a cluster that touches a document of an earlier run is a duplicate as a whole
        seen_before = np.zeros(len(ids), bool)
        if len(previous):
            hit = np.isin(keys, previous[:, 0]).any(axis=1) & has
            seen_before = np.isin(label, label[hit])
        drop: dict[str, str] = {}
        for i in np.flatnonzero((label != np.arange(len(ids))) | seen_before).tolist():
            drop[ids[i]] = "(earlier run)" if seen_before[i] else ids[label[i]]
        state: dict[str, Any] = {"drop_ids": sorted(drop), "duplicate_of": drop, "documents": len(ids)}
        if self.index_path:  # the kept documents join the index (a dropped one never reached a dataset)
            kept = has & ~((label != np.arange(len(ids))) | seen_before)
            state["_index_previous"] = previous
            state["_index_ours"] = np.stack([keys[kept].ravel(), np.repeat(owners[kept], self.bands)], axis=1)
        return state

    def save_state(self, state: Any, path: str, fs: Any) -> None:
        super().save_state({k: v for k, v in state.items() if not k.startswith("_index")}, path, fs)
        if "_index_ours" in state:
            with fs.open(f"{path}/index.npz", "wb") as f:
                np.savez(f, previous=state["_index_previous"], ours=state["_index_ours"])

    def commit_state(self, path: str, fs: Any, tag: str) -> None:
        """Write the index saved with the state, its entries marked with ``tag``, to ``index_path``
        (atomically; a no-op when the file already holds it)."""
        index_file = self._index_file()
        if index_file is None or not fs.exists(f"{path}/index.npz"):
            return
        with fs.open(f"{path}/index.npz", "rb") as f:
            saved = np.load(f)
            previous, ours = saved["previous"], saved["ours"]
        tagged = np.concatenate([ours, np.full((len(ours), 1), _id_hash(tag), np.uint64)], axis=1)
        buf = io.BytesIO()
        np.save(buf, np.unique(np.concatenate([previous, tagged]), axis=0))  # sorted: stable bytes
        data = buf.getvalue()
        if os.path.exists(index_file):
            with open(index_file, "rb") as f:
                if f.read() == data:
                    return
        os.makedirs(os.path.dirname(os.path.abspath(index_file)), exist_ok=True)
        tmp = f"{index_file}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, index_file)

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        drop = state.get("_drop_set")
        if drop is None:
            drop = state["_drop_set"] = set(state["drop_ids"])
        keep = [rid not in drop for rid in table.column("id").to_pylist()]
        return table.filter(pa.array(keep, pa.bool_()))


def _id_hash(record_id: str) -> int:
    """A stable 64-bit hash of a record id (the owner of index entries)."""
    return int.from_bytes(hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest(), "little")


def _load_index(path: str) -> np.ndarray:
    """(N, 3) uint64 rows (band key, owner id hash, hash of the fit that committed it); an index
    of older genloom (keys only) has neither owners nor fits."""
    index = np.load(path)
    if index.ndim == 1:
        return np.stack([index.astype(np.uint64), *[np.zeros(len(index), np.uint64)] * 2], axis=1)
    return index.astype(np.uint64)


def cluster_first(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """For each row, the smallest row index of its connected component, where rows are linked
    when they share a key in any column (band); invalid rows stay alone. (N, B) -> (N,)."""
    n = len(keys)
    label = np.arange(n)
    groups = []
    rows = np.flatnonzero(valid)
    for b in range(keys.shape[1] if n else 0):
        order = rows[np.argsort(keys[rows, b], kind="stable")]
        k = keys[order, b]
        if len(k) < 2:
            continue
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        sizes = np.diff(np.append(starts, len(k)))
        gid = np.repeat(np.arange(len(starts)), sizes)
        multi = (sizes > 1)[gid]
        if multi.any():
            members, g = order[multi], gid[multi]
            first = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
            groups.append((members, first, np.diff(np.append(first, len(g)))))
    changed = True
    while changed:
        changed = False
        for members, first, sizes in groups:
            lab = label[members]
            low = np.repeat(np.minimum.reduceat(lab, first), sizes)
            upd = low < lab
            if upd.any():
                label[members[upd]] = low[upd]
                changed = True
        while True:  # pointer jumping: every row points at its component's current minimum
            nxt = label[label]
            if (nxt == label).all():
                break
            label = nxt
    return label
