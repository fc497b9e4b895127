"""kallsyms located and decoded from synthetic tables laid out as scripts/kallsyms.c does."""

from __future__ import annotations

import random
import struct

import pytest

from xenhpt.errors import ProfileError
from xenhpt.profile.kallsyms import decode_kallsyms

BASE = 0xFFFFFFFF81000000
MULTI = [b"sys_", b"__x64_", b"entry_", b"init_", b"task", b"_SYSCALL", b"per", b"cpu"]


def token_table() -> list[bytes]:
    # Printable characters keep their own slot (as every char used in a name does in the
    # kernel); the unused control/high slots hold merged multi-character tokens.
    tokens = [bytes([i]) for i in range(256)]
    free = [i for i in range(256) if not 0x20 <= i < 0x7F]
    for n, slot in enumerate(free):
        tokens[slot] = MULTI[n] if n < len(MULTI) else b"~" + bytes([0x41 + n % 26]) * 2
    return tokens


def compress(text: bytes, tokens: list[bytes]) -> bytes:
    index = {t: i for i, t in enumerate(tokens) if len(t) > 1}
    out, i = bytearray(), 0
    while i < len(text):
        for tok in sorted(index, key=len, reverse=True):
            if text.startswith(tok, i):
                out.append(index[tok])
                i += len(tok)
                break
        else:
            out.append(text[i])
            i += 1
    return bytes(out)


def sample_symbols(count: int) -> list[tuple[str, str, int]]:
    """(type, name, address) sorted by address: per-CPU symbols first, then text/data."""
    syms = [
        ("A", "__per_cpu_start", 0),
        ("D", "fixed_percpu_data", 0),
        ("D", "current_task", 0x1FB80),
        ("T", "startup_64", BASE),
        ("T", "_text", BASE),
        ("T", "entry_SYSCALL_64", BASE + 0xC00080),
    ]
    for i in range(count - len(syms) - 2):
        syms.append(("t" if i % 3 else "T", f"sys_fn_{i:05d}", BASE + 0xC01000 + 0x40 * i))
    syms += [("D", "init_task", BASE + 0x1A1AA40), ("d", "static_thing", BASE + 0x1A1B000)]
    return syms


def align8(buf: bytearray) -> None:
    buf.extend(b"\0" * (-len(buf) % 8))


def kallsyms_blob(
    syms: list[tuple[str, str, int]], layout: str = "6.1", percpu: bool = True, seqs: bool = True
) -> bytes:
    """Bytes holding the tables in the order of ``layout``: "6.1" (offsets, base, num_syms,
    names, markers[, seqs], token table/index) or "6.4" (offsets after token_index)."""
    tokens = token_table()
    n = len(syms)
    names, markers = bytearray(), []
    for i, (typ, name, _addr) in enumerate(syms):
        if i % 256 == 0:
            markers.append(len(names))
        comp = compress((typ + name).encode(), tokens)
        names += bytes([len(comp)]) + comp
    offsets = bytearray()
    for _typ, _name, addr in syms:
        if percpu:
            off = addr if addr < BASE else BASE - 1 - addr
        else:
            off = addr - BASE
        offsets += struct.pack("<i", off)
    table, index = bytearray(), []
    for t in tokens:
        index.append(len(table))
        table += t + b"\0"

    blob = bytearray(b"\x5a" * 40)
    align8(blob)

    def addresses() -> None:
        blob.extend(offsets)
        align8(blob)
        blob.extend(struct.pack("<Q", BASE))
        align8(blob)

    if layout == "6.1":
        addresses()
    blob += struct.pack("<I", n)
    align8(blob)
    blob += names
    align8(blob)
    blob += struct.pack(f"<{len(markers)}I", *markers)
    align8(blob)
    if seqs:
        order = sorted(range(n), key=lambda i: syms[i][1])
        blob += b"".join(i.to_bytes(3, "big") for i in order)
        align8(blob)
    blob += table
    align8(blob)
    blob += struct.pack("<256H", *index)
    align8(blob)
    if layout == "6.4":
        addresses()
    blob += b"\x5a" * 700
    return bytes(blob)


@pytest.mark.parametrize("count", [40, 300, 700])
@pytest.mark.parametrize("layout,seqs", [("6.1", True), ("6.1", False), ("6.4", False)])
def test_names_types_and_addresses_decode(count: int, layout: str, seqs: bool) -> None:
    syms = sample_symbols(count)
    table = decode_kallsyms(kallsyms_blob(syms, layout, seqs=seqs))
    assert list(zip(table.types, table.names, table.addresses, strict=True)) == syms
    assert table.relative_base == BASE and table.absolute_percpu


def test_absolute_percpu_detection_can_be_overridden() -> None:
    syms = [(t, n, a) for t, n, a in sample_symbols(300) if a >= BASE]
    blob = kallsyms_blob(syms, percpu=False)
    table = decode_kallsyms(blob, absolute_percpu=False)
    assert not table.absolute_percpu
    assert table.symbols()["entry_SYSCALL_64"] == BASE + 0xC00080
    assert decode_kallsyms(blob).symbols()["init_task"] == BASE + 0x1A1AA40  # detected


def test_percpu_symbols_keep_their_absolute_offsets() -> None:
    symbols = decode_kallsyms(kallsyms_blob(sample_symbols(300))).symbols()
    assert symbols["current_task"] == 0x1FB80
    assert symbols["__per_cpu_start"] == 0


def test_a_global_symbol_wins_over_a_static_of_the_same_name() -> None:
    syms = sample_symbols(50)
    syms.insert(6, ("t", "dup", BASE + 0xC00100))
    syms.insert(7, ("T", "dup", BASE + 0xC00200))
    syms.sort(key=lambda s: s[2])
    assert decode_kallsyms(kallsyms_blob(syms)).symbols()["dup"] == BASE + 0xC00200


def test_missing_tables_raise_profile_error() -> None:
    with pytest.raises(ProfileError, match="token table"):
        decode_kallsyms(bytes(random.Random(7).randbytes(200_000)))


def test_inconsistent_markers_raise_profile_error() -> None:
    blob = bytearray(kallsyms_blob(sample_symbols(700), seqs=False))
    token_at = blob.find(b"0\x001\x002\x00")
    marker_end = token_at - 0x30 * 2 - 8  # somewhere in the markers: break their order
    start = blob.rfind(struct.pack("<I", 0), 0, marker_end)
    blob[start + 4 : start + 8] = struct.pack("<I", 3)
    with pytest.raises(ProfileError):
        decode_kallsyms(bytes(blob))


def test_random_damage_fails_cleanly_and_quickly() -> None:
    rng = random.Random(99)
    good = kallsyms_blob(sample_symbols(300))
    for _ in range(150):
        blob = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        try:
            table = decode_kallsyms(bytes(blob))
        except ProfileError:
            continue
        assert table.addresses == sorted(table.addresses)
