"""Decoding bytes of unknown encoding: BOMs, UTF-16/32 without one, damaged UTF-8, code pages.

Every invalid byte sequence becomes one U+FFFD and is counted, so readers can report it in
``meta.invalid_bytes`` instead of losing characters silently.
"""

from __future__ import annotations

import codecs
import collections
import io
from typing import Any, BinaryIO, NamedTuple

# An undecodable byte sequence first becomes a lone surrogate (which the UTF and code-page codecs
# never produce from valid input, so each one is exactly one invalid sequence), then U+FFFD once counted.
_INVALID = "\ud800"
_MARK_ERRORS = "genloom.mark_invalid"


def _mark_invalid(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return _INVALID, err.end


codecs.register_error(_MARK_ERRORS, _mark_invalid)


class Decoded(NamedTuple):
    """Decoded text, the encoding used, and how many invalid byte sequences became U+FFFD."""

    text: str
    encoding: str
    invalid: int


def decode_as(data: bytes, encoding: str) -> Decoded:
    """Decode ``data`` as ``encoding``; each invalid byte sequence becomes one U+FFFD, counted."""
    text = data.decode(encoding, errors=_MARK_ERRORS)
    n = text.count(_INVALID)
    return Decoded(text.replace(_INVALID, "\ufffd") if n else text, encoding, n)


def decode_bytes(data: bytes, hint: str | None = None) -> Decoded:
    """Decode bytes of unknown encoding (detected by :func:`sniff_encoding`).

    Returns (text, encoding, invalid). Bytes that are valid UTF-8 but for a few damaged sequences
    are read as UTF-8: only the invalid sequences become U+FFFD, and ``invalid`` counts them
    (readers put it in ``meta.invalid_bytes``); guessing a legacy code page would turn the whole
    file into mojibake.
    """
    return decode_as(data, sniff_encoding(data[: 1 << 20], hint))


class DecodedStream(io.RawIOBase):
    """A binary stream read as ``encoding`` and served as UTF-8 bytes, for readers that parse
    UTF-8 (pyarrow's CSV reader, a TextIOWrapper); each invalid sequence becomes U+FFFD and
    ``invalid`` counts those met so far."""

    def __init__(self, raw: BinaryIO, encoding: str, block: int = 1 << 20) -> None:
        super().__init__()
        self.raw = raw
        self.encoding = encoding
        self.invalid = 0
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=_MARK_ERRORS)
        self._block = block
        self._buf = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        """Always true: this is an input stream."""
        return True

    def readinto(self, b: Any) -> int:
        """Fill ``b`` with the next UTF-8 bytes; 0 at the end."""
        while not self._buf and not self._eof:
            chunk = self.raw.read(self._block)
            self._eof = not chunk
            text = self._decoder.decode(chunk, final=self._eof)
            if _INVALID in text:
                self.invalid += text.count(_INVALID)
                text = text.replace(_INVALID, "\ufffd")
            self._buf = memoryview(text.encode("utf-8"))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        """Close this stream and the one it reads."""
        self.raw.close()
        super().close()


def sniff_encoding(sample: bytes, hint: str | None = None) -> str:
    """The encoding of a byte sample: a BOM, ``hint`` when it decodes the sample, UTF-16/32
    without a BOM (from where the NUL bytes fall), UTF-8 (also when a few sequences are damaged,
    see decode_bytes), else a legacy code page (cp1252/cp1251 checks, then charset-normalizer)."""
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if sample.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if hint:
        try:
            codecs.getincrementaldecoder(hint)().decode(sample, final=False)
            return hint
        except (LookupError, UnicodeDecodeError):
            pass
    wide = wide_unicode(sample)
    if wide is not None:
        return wide
    text = codecs.getincrementaldecoder("utf-8")(errors=_MARK_ERRORS).decode(sample, final=False)
    invalid = text.count(_INVALID)
    if not invalid:
        return "utf-8"
    # valid multi-byte characters outnumbering the invalid sequences: UTF-8 that got damaged (a
    # legacy code page rarely forms valid UTF-8 pairs, so its non-ASCII bytes are nearly all invalid)
    multibyte = len(text) - len(text.encode("ascii", "ignore")) - invalid
    if multibyte > invalid:
        return "utf-8"
    guess = _single_byte_guess(sample)
    if guess is not None:
        return guess
    from charset_normalizer import from_bytes

    best = from_bytes(sample[:200_000]).best()
    return best.encoding if best is not None else "cp1252"


_TEXT_CONTROLS = {9, 10, 12, 13}


def _one_script(high: bytes) -> bool:
    """Whether the high bytes of UTF-16 code units come from a few Unicode blocks, as in text
    (ASCII plus one alphabet and its punctuation); ASCII bytes paired at random give many."""
    common = collections.Counter(high).most_common(4)
    return sum(n for _, n in common) * 10 >= len(high) * 9


def wide_unicode(sample: bytes) -> str | None:
    """``utf-16-le``/``-be`` or ``utf-32-le``/``-be`` for text written without a byte order mark.

    Text in these encodings has NUL bytes in a fixed place of each code unit (the high byte of
    ASCII and Latin characters); binary data has them anywhere, ASCII and UTF-8 text none. A
    candidate must also decode cleanly to text with almost no control characters.
    """
    s = sample[:65536]
    n = len(s) - len(s) % 4
    if n < 8 or b"\x00" not in s[:n]:
        return None
    q = n // 4
    z = [s[i:n:4].count(0) for i in range(4)]
    even, odd = z[0] + z[2], z[1] + z[3]
    candidates = []
    if z[3] == q and z[2] * 2 >= q and z[0] * 2 < q:
        candidates.append("utf-32-le")
    elif z[0] == q and z[1] * 2 >= q and z[3] * 2 < q:
        candidates.append("utf-32-be")
    elif odd * 10 >= 2 * q and even * 10 < odd and _one_script(s[1:n:2]):
        candidates.append("utf-16-le")
    elif even * 10 >= 2 * q and odd * 10 < even and _one_script(s[0:n:2]):
        candidates.append("utf-16-be")
    for enc in candidates:
        try:
            text = codecs.getincrementaldecoder(enc)().decode(s[:n], final=False)
        except UnicodeDecodeError:
            continue
        controls = sum(1 for ch in text if ord(ch) < 32 and ord(ch) not in _TEXT_CONTROLS)
        if text and controls * 100 <= len(text):
            return enc
    return None


_WESTERN = set(
    "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿßÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞŒœŠšŽžŸ€‘’‚“”„–—…•°±²³µ·¹º»«¼½¾¿¡£¥§©®™¢¤¦¨ª¬¯´¸×÷†‡‰‹›ˆ˜\xa0"
)


def _single_byte_guess(sample: bytes) -> str | None:
    """cp1252 when every non-ASCII byte decodes to a Western letter or sign, cp1251 when each is
    Cyrillic: charset-normalizer confuses short texts of both with Farsi, Greek or Baltic pages."""
    high = {b for b in sample if b >= 0x80}
    if not high:
        return None
    n_high = sum(1 for b in sample if b >= 0x80)
    n_ascii_letters = sum(1 for b in sample if 65 <= b <= 90 or 97 <= b <= 122)
    letters_mostly_high = n_high > n_ascii_letters  # Cyrillic text; Western text is mostly ASCII
    cyr = bytes(sorted(high)).decode("cp1251", errors="replace")
    if letters_mostly_high and all("\u0400" <= ch <= "\u04ff" or ch in "«»–—…№‘’“”\xa0" for ch in cyr):
        return "cp1251"
    try:
        if not letters_mostly_high and all(ch in _WESTERN for ch in bytes(sorted(high)).decode("cp1252")):
            return "cp1252"
    except UnicodeDecodeError:
        pass
    return None
