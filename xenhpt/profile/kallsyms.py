"""Decode the kernel's own symbol table (kallsyms) from a stripped vmlinux.

Why: distributions strip ``vmlinux`` and ship a stub ``System.map``; the real map lives in a
multi-hundred-MB debug package. But the kernel must resolve its own symbols (for oopses and
``/proc/kallsyms``), so the decompressed image carries every name and address in compact
tables emitted by ``scripts/kallsyms.c``, each label 8-byte aligned on 64-bit:

  kallsyms_offsets      s32[n]   address encoding, see below (newer kernels: after
                                 token_index, with relative_base)
  kallsyms_relative_base u64     base of the relative encoding (the lowest text address)
  kallsyms_num_syms     u32      n
  kallsyms_names        n x [len (1 or 2 bytes)][len token indices]; first char is the type
  kallsyms_markers      u32[ceil(n/256)]  offset in names of every 256th entry
  kallsyms_seqs_of_names u8[3n]  names sorted, big-endian indices (6.2+; Debian's 6.1.y
                        has it by backport, so version numbers cannot tell the layout)
  kallsyms_token_table  256 NUL-terminated tokens
  kallsyms_token_index  u16[256] offset of each token in token_table

Without a symbol table none of the labels are known, so the tables are found by structure:

1. token_table: every character that occurs in some symbol name keeps its own slot as a
   one-character token (scripts/kallsyms.c only reuses *unused* slots for merged pairs), so
   the table contains ``0\\0 1\\0 ... 9\\0`` at slots 0x30-0x39. Each such run is an anchor.
2. token_index follows token_table within a few KiB: a u16[256] starting at 0, strictly
   increasing, whose entries land exactly after the NULs of the table and put slot 0x30
   on the anchor. That is checked for every candidate, so a stray digit run cannot match.
3. markers end just before token_table (or before seqs_of_names): walk back over
   increasing u32 (or u64) values to the leading 0, or, with seqs_of_names, find the 0
   whose distance to the table fits 4K + 3n bytes. K markers give n in (256(K-1), 256K].
4. num_syms is a u32 with such a value shortly before the names that the last marker
   points into; a candidate is accepted only if walking n entries from the names start
   hits every marker exactly and ends where the markers begin.
5. addresses: try the known layouts (offsets+relative_base before num_syms; after
   token_index; absolute u64 array) and keep the one that decodes to sorted addresses.

Address encoding (CONFIG_KALLSYMS_BASE_RELATIVE): ``base + (u32)off``, except with
CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86_64 SMP, as in Debian 6.1) where ``off >= 0`` is an
absolute value (per-CPU variables: their offset in the per-CPU area, e.g. current_task =
0x1fb80) and
``off < 0`` means ``base - 1 - off``. The config beside the image decides; without it the
sign of the offsets does (text symbols dominate and are all negative in that mode).
"""

from __future__ import annotations

import itertools
import re
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from xenhpt.errors import ProfileError

_DIGIT_TOKENS = re.compile(re.escape(b"".join(bytes([c]) + b"\0" for c in b"0123456789")))
_MAX_ANCHORS = 64  # digit runs to try; a real image has a handful
_INDEX_SEARCH = 64 << 10  # token_index lies this close after the anchor
_MAX_SYMS = 4_000_000  # far above any kernel (~150k); bounds every loop below
_MAX_ENTRY = 0x4000  # a two-byte length is at most 0x3fff tokens
_MAX_MARKER_CANDIDATES = 256


@dataclass(slots=True)
class KallsymsTable:
    """Decoded kallsyms: parallel lists in the kernel's (address) order."""

    names: list[str]
    addresses: list[int]
    types: list[str]  # nm-style type letter: T/t text, D/d data, B/b bss, R/r rodata, ...
    relative_base: int | None
    absolute_percpu: bool
    layout: str  # which address layout matched (for diagnostics)

    def __len__(self) -> int:
        return len(self.names)

    def symbols(self) -> dict[str, int]:
        """name → address; for a name seen twice (static functions) a global one wins,
        else the first (lowest address)."""
        out: dict[str, int] = {}
        is_global: dict[str, bool] = {}
        for name, addr, typ in zip(self.names, self.addresses, self.types, strict=True):
            glob = typ.isupper()
            if name not in out or (glob and not is_global[name]):
                out[name] = addr
                is_global[name] = glob
        return out


@dataclass(slots=True)
class _Tokens:
    table: int  # offset of token_table in the blob
    index: int  # offset of token_index
    tokens: list[bytes]


def _u32s(data: bytes, start: int, count: int) -> array:
    a = array("I")
    a.frombytes(data[start : start + 4 * count])
    return a


def _find_tokens(data: bytes) -> _Tokens:
    anchors = 0
    for m in _DIGIT_TOKENS.finditer(data):
        anchors += 1
        if anchors > _MAX_ANCHORS:
            break
        anchor = m.start()
        end = min(len(data) - 512, anchor + _INDEX_SEARCH)
        q = anchor + 20
        q += q & 1
        while q < end:
            q = data.find(b"\0\0", q, end)
            if q < 0:
                break
            if q & 1:
                q += 1
                continue
            found = _check_index(data, anchor, q)
            if found is not None:
                return found
            q += 2
    raise ProfileError("kallsyms: no token table found (kernel built without CONFIG_KALLSYMS?)")


def _check_index(data: bytes, anchor: int, q: int) -> _Tokens | None:
    idx = struct.unpack_from("<256H", data, q)
    if idx[0] != 0 or idx[0x30] > anchor:
        return None
    table = anchor - idx[0x30]
    if any(idx[i] >= idx[i + 1] for i in range(255)):
        return None
    tokens: list[bytes] = []
    for i in range(256):
        start = table + idx[i]
        stop = table + idx[i + 1] - 1 if i < 255 else data.find(b"\0", start, q)
        if stop < start or stop >= q or data[stop] != 0:
            return None
        tok = data[start:stop]
        if not tok or b"\0" in tok:
            return None
        tokens.append(tok)
    if tokens[0x30] != b"0" or tokens[0x39] != b"9":
        return None
    return _Tokens(table, q, tokens)


def _markers_before(data: bytes, end: int, width: int) -> list[tuple[int, list[int]]]:
    """Candidate (start, markers) arrays of ``width``-byte entries ending at or just
    before ``end`` (alignment padding of zeros may sit between)."""
    fmt = "<I" if width == 4 else "<Q"
    out = []
    for pad in range(0, 8, width):
        pos = end - pad - width
        values: list[int] = []
        while pos >= 0 and len(values) < _MAX_SYMS // 256 + 1:
            (v,) = struct.unpack_from(fmt, data, pos)
            if values and v >= values[-1]:
                break
            values.append(v)
            if v == 0:
                out.append((pos, values[::-1]))
                break
            pos -= width
    return out


def _markers_before_seqs(data: bytes, table: int) -> Iterator[tuple[int, list[int]]]:
    """Candidate markers when kallsyms_seqs_of_names (3-byte entries, one per symbol,
    6.2+ and backported to 6.1.y) sits between markers and token_table.

    Layout: markers u32[K] at m (8-aligned), seqs u8[3n] at s = align8(m + 4K), token_table
    at align8(s + 3n), with K = ceil(n / 256). Scan 8-aligned m backwards for a 0 followed
    by a plausible first delta; the distance to the table then fixes K and n. Lazy, so the
    caller stops scanning at the first candidate whose names check out.
    """
    lowest = max(0, table - 3 * _MAX_SYMS - 4 * (_MAX_SYMS // 256) - 16)
    m = (table - 16) & ~7
    while m >= lowest:
        first, second = struct.unpack_from("<II", data, m)
        start, m = m, m - 8
        if first != 0:
            continue
        ks: list[int] = []
        if table - start <= 16 + 3 * 256:
            ks.append(1)  # a single marker: nothing to check "second" against
        if 256 <= second <= 256 * (2 + _MAX_ENTRY):
            approx_k = (table - start) // (4 + 3 * 256)
            ks.extend(range(max(2, approx_k - 2), approx_k + 3))
        for k in ks:
            s = (start + 4 * k + 7) & ~7
            n = (table - s) // 3  # the largest n with align8(s + 3n) == table
            while n > 0 and (s + 3 * n + 7) & ~7 == table:
                if (n + 255) // 256 == k and _seqs_plausible(data, s, n):
                    markers = list(_u32s(data, start, k))
                    if all(a < b for a, b in zip(markers, markers[1:], strict=False)):
                        yield start, markers
                n -= 1


def _seqs_plausible(data: bytes, start: int, n: int) -> bool:
    # Every entry of seqs_of_names is a symbol index, so below n (a cheap, strong filter).
    step = max(1, n // 64)
    return all(
        int.from_bytes(data[start + 3 * i : start + 3 * i + 3], "big") < n
        for i in range(0, n, step)
    )


def _walk_names(data: bytes, start: int, count: int, limit: int) -> list[int] | None:
    """Offsets of ``count`` name entries from ``start``; None if they overrun ``limit``."""
    offsets = []
    pos = start
    for _ in range(count):
        if pos >= limit:
            return None
        offsets.append(pos)
        n = data[pos]
        if n & 0x80:  # "big" symbol (6.1+): 7 low bits here, the rest in the next byte
            if pos + 1 >= limit:
                return None
            n = (n & 0x7F) | (data[pos + 1] << 7)
            pos += 2
        else:
            pos += 1
        if n == 0:
            return None
        pos += n
    offsets.append(pos)
    return offsets if pos <= limit else None


def _find_names(data: bytes, tok: _Tokens) -> tuple[int, int, list[int], int]:
    """(num_syms offset, names offset, entry offsets, markers offset)."""
    candidates = itertools.chain(
        _markers_before(data, tok.table, 4),
        _markers_before(data, tok.table, 8),
        _markers_before_seqs(data, tok.table),
    )
    # Each candidate costs a scan of up to 64 KiB; hostile data could offer many.
    for mstart, markers in itertools.islice(candidates, _MAX_MARKER_CANDIDATES):
        k = len(markers)
        lo, hi = 256 * (k - 1) + 1, 256 * k
        # The entries after the last marker take at most 255 * (2 + _MAX_ENTRY) bytes;
        # in practice < 64 KiB. num_syms sits just before names, so search back there.
        last = markers[-1]
        window_end = mstart - last
        window_start = max(0, window_end - (256 << 8))
        for n_pos in range((window_end - 4) & ~3, window_start - 1, -4):
            (n,) = struct.unpack_from("<I", data, n_pos)
            if not lo <= n <= hi:
                continue
            for names in (n_pos + 4, n_pos + 8):
                if names + last >= mstart:
                    continue
                offs = _walk_names(data, names, n, mstart)
                if offs is None or mstart - offs[-1] >= 8:
                    continue
                if all(offs[256 * i] - names == markers[i] for i in range(k)):
                    return n_pos, names, offs, mstart
    raise ProfileError("kallsyms: token table found but no consistent names/markers tables")


def _decode_addresses(
    data: bytes, n: int, n_pos: int, tok: _Tokens, absolute_percpu: bool | None
) -> tuple[list[int], int | None, bool, str]:
    """Try the known address layouts; return (addresses, base, absolute_percpu, layout)."""
    candidates: list[tuple[str, int, int | None]] = []  # (layout, offsets pos, base pos)
    rb = n_pos - 8  # labels are 8-aligned: relative_base sits right before num_syms
    candidates.append(("offsets-before-num_syms", rb - ((4 * n + 7) & ~7), rb))
    after = (tok.index + 512 + 7) & ~7
    candidates.append(("offsets-after-token_index", after, after + ((4 * n + 7) & ~7)))
    candidates.append(("absolute-addresses", n_pos - 8 * n, None))
    for layout, off_pos, base_pos in candidates:
        if off_pos < 0 or off_pos + 4 * n > len(data):
            continue
        if base_pos is None:
            q = array("Q")
            q.frombytes(data[off_pos : off_pos + 8 * n])
            addrs = list(q)
            if _sane(addrs):
                return addrs, None, False, layout
            continue
        if base_pos + 8 > len(data):
            continue
        (base,) = struct.unpack_from("<Q", data, base_pos)
        offsets = array("i")
        offsets.frombytes(data[off_pos : off_pos + 4 * n])
        percpu = absolute_percpu
        if percpu is None:
            percpu = sum(1 for o in offsets if o < 0) > n // 2
        if percpu:
            addrs = [o if o >= 0 else base - 1 - o for o in offsets]
        else:
            addrs = [base + (o & 0xFFFFFFFF) for o in offsets]
        if _sane(addrs):
            return addrs, base, percpu, layout
    raise ProfileError("kallsyms: names decoded but no address table layout gives sorted addresses")


def _sane(addrs: list[int]) -> bool:
    # kallsyms is sorted by address; a wrong guess of position or encoding is not.
    if not addrs or max(addrs) >= 1 << 64 or min(addrs) < 0:
        return False
    return all(a <= b for a, b in zip(addrs, addrs[1:], strict=False)) and addrs[-1] != addrs[0]


def decode_kallsyms(data: bytes, absolute_percpu: bool | None = None) -> KallsymsTable:
    """Find and decode the kallsyms tables inside ``data`` (a vmlinux or its .rodata).

    ``absolute_percpu`` is CONFIG_KALLSYMS_ABSOLUTE_PERCPU if known, None to detect it.
    Raises ProfileError if the tables are absent or inconsistent.
    """
    tok = _find_tokens(data)
    n_pos, _names, offs, _markers = _find_names(data, tok)
    n = len(offs) - 1
    addresses, base, percpu, layout = _decode_addresses(data, n, n_pos, tok, absolute_percpu)
    expand = tok.tokens.__getitem__
    names: list[str] = []
    types: list[str] = []
    for i in range(n):
        pos = offs[i]
        length = data[pos]
        pos += 2 if length & 0x80 else 1
        full = b"".join(map(expand, data[pos : offs[i + 1]])).decode("latin-1")
        if len(full) < 2:
            raise ProfileError(f"kallsyms: entry {i} decodes to {full!r}, not a type + name")
        types.append(full[0])
        names.append(full[1:])
    return KallsymsTable(names, addresses, types, base, percpu, layout)
