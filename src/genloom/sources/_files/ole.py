"""OLE2 (Compound File Binary) containers: the names of the streams at their root.

Legacy Office files (``.doc``, ``.xls``, ``.ppt``), Outlook ``.msg`` and encrypted OOXML packages
are all OLE2 files; what tells them apart is the names of the streams and storages at the root
([MS-CFB] 2.2-2.6), which readers declare as ``ole_streams``.
"""

from __future__ import annotations

import struct
from pathlib import Path

#: how every OLE2 file starts
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


_OLE_END = 0xFFFFFFFA  # sector numbers from here up are markers (end of chain, free, FAT...)


def ole_root_names(path: Path) -> set[str] | None:
    """Lower-cased names of the streams and storages at the root of an OLE2 (CFB) file.

    Only the root counts: an e-mail's attached ``.doc`` or encrypted XLSX has its own stream names
    deeper in the tree. None when the header or directory chain cannot be followed ([MS-CFB] 2.2-2.6).
    """
    u32 = "<I"
    try:
        with open(path, "rb") as f:
            header = f.read(512)
            shift = int.from_bytes(header[30:32], "little")
            if len(header) < 512 or shift not in (9, 12):
                return None
            size = 1 << shift
            per = size // 4
            n_fat, dir_start = struct.unpack_from("<II", header, 44)
            difat_next = struct.unpack_from(u32, header, 68)[0]
            fat = [x for x in struct.unpack_from("<109I", header, 76) if x < _OLE_END]
            seen: set[int] = set()
            while difat_next < _OLE_END and len(fat) < n_fat and difat_next not in seen:
                seen.add(difat_next)
                f.seek((difat_next + 1) * size)
                block = struct.unpack(f"<{per}I", f.read(size))
                fat += [x for x in block[:-1] if x < _OLE_END]
                difat_next = block[-1]

            def next_sector(sector: int) -> int:
                index, slot = divmod(sector, per)
                if index >= len(fat):
                    return _OLE_END
                f.seek((fat[index] + 1) * size + slot * 4)
                return struct.unpack(u32, f.read(4))[0]

            raw = bytearray()
            sector, visited = dir_start, set()
            while sector < _OLE_END and sector not in visited and len(raw) < 16 * 2**20:
                visited.add(sector)
                f.seek((sector + 1) * size)
                raw += f.read(size)
                sector = next_sector(sector)
    except (OSError, struct.error):
        return None
    entries = []
    for off in range(0, len(raw) - 127, 128):
        name_len = min(int.from_bytes(raw[off + 64 : off + 66], "little"), 64)
        name = bytes(raw[off : off + max(name_len - 2, 0)]).decode("utf-16-le", "replace")
        left, right, child = struct.unpack_from("<III", raw, off + 68)
        entries.append((name, raw[off + 66], left, right, child))
    if not entries or entries[0][1] != 5:  # entry 0 is the root storage
        return None
    names: set[str] = set()
    stack, walked = [entries[0][4]], set()
    while stack:
        i = stack.pop()
        if i >= len(entries) or i in walked:
            continue
        walked.add(i)
        name, _, left, right, _ = entries[i]
        names.add(name.lower())
        stack += [left, right]
    return names


def ole_scan(path: Path, names: list[str]) -> set[str]:
    """Which of ``names`` (lower case) occur as UTF-16LE anywhere in the first 32 MiB of ``path``:
    the fallback for an OLE2 file whose directory chain :func:`ole_root_names` cannot follow."""
    with open(path, "rb") as f:
        data = f.read(32 * 2**20).lower()
    return {n for n in names if n.encode("utf-16-le") in data}
