"""Which files a file source reads: globs, folder walks, special files, fingerprints.

Globs take ``**`` (any folders), folders are walked recursively, include/exclude patterns filter,
hidden files are skipped unless asked for, symbolic links are followed with loop detection (a
folder reached twice is walked once). Named pipes, sockets and devices are listed but never
opened (reading a FIFO blocks), so the reader can quarantine them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from genloom.core.store import sha256_file

_MAGIC = re.compile(r"[*?\[]")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob (``**`` spans folders, ``*`` and ``?`` stay inside one, ``[...]`` classes) as a regex."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _matches(rel: str, patterns: list[re.Pattern[str]], raw: list[str]) -> bool:
    base = rel.rsplit("/", 1)[-1]
    return any(
        rx.match(rel) or ("/" not in p and rx.match(base)) for rx, p in zip(patterns, raw, strict=True)
    )


def _walk(base: Path, follow_symlinks: bool, hidden: bool, max_depth: int | None = None) -> Iterator[Path]:
    """Every file under ``base`` (at most ``max_depth`` folders down); a directory reached twice
    (a symlink loop) is walked once. Named pipes, sockets and devices are files too: they are
    listed, so the reader can quarantine them, and never opened here."""
    seen: set[tuple[int, int]] = set()
    stack = [(base, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[tuple[Path, int]] = []
        for e in entries:
            if not hidden and e.name.startswith("."):
                continue
            try:
                if e.is_symlink() and not follow_symlinks:
                    continue
                if e.is_dir():
                    if max_depth is None or depth < max_depth:
                        subdirs.append((Path(e.path), depth + 1))
                elif e.is_file() or special_file_kind(Path(e.path)) is not None:
                    yield Path(e.path)
            except OSError:  # a dangling link or a file that vanished
                continue
        stack.extend(reversed(subdirs))


def discover(
    paths: list[str],
    include: list[str],
    exclude: list[str],
    follow_symlinks: bool = True,
    hidden: bool = False,
    root: str | None = None,
) -> list[str]:
    """The files matched by ``paths`` (files, folders or globs), filtered, sorted, without duplicates.

    Each result is the path as the glob produced it (POSIX separators), relative patterns relative
    to ``root`` (default: the current folder) and kept relative: that string is the file's stable
    native key, the same wherever the project folder is.
    """
    inc = [glob_regex(p) for p in include]
    exc = [glob_regex(p) for p in exclude]
    found: dict[str, None] = {}
    top = Path(root) if root is not None else Path(".")
    for raw in paths:
        pattern = os.path.expanduser(raw)
        relative = not os.path.isabs(pattern)
        if not _MAGIC.search(pattern):  # (the root may hold [ ] itself: only the pattern is a glob)
            p = top / pattern if relative else Path(pattern)
            if p.is_file() or special_file_kind(p) is not None:
                candidates: Iterable[tuple[Path, str]] = [(p, p.name)]
            elif p.is_dir():
                candidates = ((f, f.relative_to(p).as_posix()) for f in _walk(p, follow_symlinks, hidden))
            else:
                continue
        else:
            parts = Path(pattern).parts
            k = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
            base = Path(*parts[:k]) if k else Path(".")
            if relative:
                base = top / base
            rest = parts[k:]
            rx = glob_regex("/".join(rest))
            depth = None if any("**" in part for part in rest) else len(rest) - 1
            candidates = (
                (f, rel)
                for f in _walk(base, follow_symlinks, hidden, depth)
                if rx.match(rel := f.relative_to(base).as_posix())
            )
        for f, rel in candidates:
            if inc and not _matches(rel, inc, include):
                continue
            if exc and _matches(rel, exc, exclude):
                continue
            key = os.path.relpath(f, top) if relative else os.path.normpath(f)
            found[Path(key).as_posix()] = None
    return sorted(found)


def _special_kind(mode: int) -> str | None:
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def special_file_kind(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``named pipe``,
    ``socket``, ``character device``, ``block device``); None otherwise or when it is missing.
    Symbolic links are followed; nothing is opened."""
    try:
        return _special_kind(path.stat().st_mode)
    except OSError:
        return None


_HASHES: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: str) -> str:
    """``size:mtime_ns:sha256`` of a file; the hash is memoised per (path, size, mtime).

    A named pipe, socket or device is never opened (reading a FIFO blocks until a writer comes):
    its fingerprint is ``special:<kind>``.
    """
    st = os.stat(path)
    kind = _special_kind(st.st_mode)
    if kind is not None:
        return f"special:{kind}"
    key = (path, st.st_size, st.st_mtime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        digest = _HASHES[key] = sha256_file(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{digest}"
