"""A copy of an ISF profile that LibVMI's ``volatility_ist`` reader gets right.

Our ISF stays the standard file Volatility 3 reads; LibVMI is handed a converted copy,
made once and cached under ``~/.cache/xenhpt/libvmi``. Two things differ, both measured
with the PyPI ``libvmi`` 3.7.1 wheel on a raw lab snapshot (tests/test_forensic_peers.py):

* **Addresses as signed 64-bit.** The wheel bundles json-c 0.13 (``libjson-c.so.4``), which
  has no ``json_object_get_uint64``, so LibVMI reads every address with
  ``json_object_get_int64``; json-c saturates a number above 2^63-1 to 0x7fffffffffffffff,
  so ``init_task`` at 0xffffffff82a1aa40 becomes 0x7fffffffffffffff and the kernel search
  fails. Written as ``-2103334336`` it comes back as 0xffffffff82a1aa40.
* **A ``phys_startup_64`` symbol.** In file mode LibVMI has no CR3; ``linux_filemode_init``
  (libvmi/os/linux/core.c) computes the kernel's virtual-to-physical "boundary" from
  ``startup_64 - phys_startup_64`` and gives up at once (no brute-force page-table
  search) when that is unknown. Old kernels' linker scripts defined ``phys_startup_64``
  (= ``startup_64 - __START_KERNEL_map``); 6.x kernels and so BTF/kallsyms-built or
  dwarf2json ISFs lack it, so the copy adds that link-time value. With physical KASLR the
  guess misses and LibVMI falls back to its brute-force search, which then succeeds.

Only what LibVMI reads is kept: ``metadata``, ``user_types``, ``base_types`` and each
symbol's address (plus the ``linux_banner`` text, to tell copies apart); symbol types and
enums are dropped (lab ISF: 10.1 MB -> 8.8 MB). json-c parsing the copy is nearly all of
LibVMI's init time (0.18 s of 0.19 s on the nokaslr lab snapshot), so ``minimal=True``
keeps only what LibVMI's own Linux layer looks up (:data:`LINUX_INIT_SYMBOLS`,
``task_struct`` and ``mm_struct`` with every struct embedded in them): 62 KB, init in
1.4 ms (with physical KASLR LibVMI's page-directory search adds 0.2 s either way), but
then ``translate_ksym2v``/``get_kernel_struct_offset`` know nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from xenhpt.errors import ProfileError
from xenhpt.profile.isf import _read_json, default_cache_dir

COPY_FORMAT = 1
MASK64 = (1 << 64) - 1
# Where x86-64 links the kernel image: virtual = physical + __START_KERNEL_map.
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
# What libvmi/os/linux/core.c looks up itself (page tables, the kernel's load address, the
# task list), and the structs whose fields it asks for (tasks, mm, pid, comm; pgd).
LINUX_INIT_SYMBOLS = ("init_task", "linux_banner", "startup_64", "phys_startup_64",
                      "startup_32", "phys_startup_32", "swapper_pg_dir", "init_level4_pgt",
                      "init_top_pgt")
LINUX_INIT_TYPES = ("task_struct", "mm_struct")


def as_int64(address: int) -> int:
    """``address`` (any int, read as 64 bits) as a signed 64-bit number."""
    address &= MASK64
    return address - (1 << 64) if address >= 1 << 63 else address


def libvmi_copy(isf_path: Path, cache_dir: Path | None = None, *,
                minimal: bool = False) -> Path:
    """Path of a LibVMI-ready copy of the ISF at ``isf_path``, made now or reused.

    The copy is keyed by the ISF's resolved path, size and mtime, so a rebuilt ISF gets a
    new copy (and its stale one is removed). ``cache_dir`` defaults to ``~/.cache/xenhpt``.
    ``minimal`` keeps only what LibVMI's Linux initialisation reads (see the module doc).
    Raises ProfileError if the ISF is missing or not an ISF.
    """
    isf_path = Path(isf_path)
    try:
        st = isf_path.stat()
    except OSError as exc:
        raise ProfileError(f"profile not found: {isf_path} ({exc.strerror or exc})") from None
    source = str(isf_path.resolve())
    key = hashlib.sha256(f"{source}:{minimal}".encode()).hexdigest()[:16]
    stamp = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{COPY_FORMAT}".encode()).hexdigest()
    directory = (cache_dir or default_cache_dir()) / "libvmi"
    copy = directory / f"{key}-{stamp[:16]}.json"
    if copy.is_file():
        return copy
    content = convert(_read_json(isf_path), isf_path, minimal)
    content["metadata"]["xenhpt_libvmi_copy"] = {"source": source, "format": COPY_FORMAT}
    directory.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            json.dump(content, f, separators=(",", ":"))
        os.replace(tmp, copy)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProfileError(f"cannot write the LibVMI copy of {isf_path} in {directory}: "
                           f"{exc.strerror or exc}") from None
    for stale in directory.glob(f"{key}-*.json"):
        if stale != copy:
            stale.unlink(missing_ok=True)
    return copy


def convert(isf: dict[str, Any], path: Path, minimal: bool = False) -> dict[str, Any]:
    """The LibVMI form of a parsed ISF (see the module docstring for what changes)."""
    symbols_in = isf.get("symbols")
    user_types = isf.get("user_types")
    if not isinstance(symbols_in, dict) or not isinstance(user_types, dict) or not user_types:
        raise ProfileError(f"profile {path} is not an ISF (no user_types or symbols)")
    symbols: dict[str, dict[str, Any]] = {}
    for name, symbol in symbols_in.items():
        if not isinstance(symbol, dict) or not isinstance(symbol.get("address"), int):
            continue
        entry: dict[str, Any] = {"address": as_int64(symbol["address"])}
        if name == "linux_banner" and isinstance(symbol.get("constant_data"), str):
            entry["constant_data"] = symbol["constant_data"]
        symbols[name] = entry
    startup = symbols.get("startup_64", {}).get("address")
    if "phys_startup_64" not in symbols and startup is not None \
            and startup & MASK64 >= START_KERNEL_MAP:
        symbols["phys_startup_64"] = {"address": (startup & MASK64) - START_KERNEL_MAP}
    if minimal:
        symbols = {name: symbols[name] for name in LINUX_INIT_SYMBOLS if name in symbols}
        user_types = embedded_closure(user_types, LINUX_INIT_TYPES)
    metadata = isf.get("metadata")
    base_types = isf.get("base_types")
    return {
        "metadata": dict(metadata) if isinstance(metadata, dict) else {},
        "base_types": base_types if isinstance(base_types, dict) else {},
        "user_types": user_types,
        "enums": {},
        "symbols": symbols,
    }


def embedded_closure(user_types: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    """``roots`` and every struct/union embedded in them, however deep: all the types
    LibVMI's field search (which descends into embedded members by type name) can reach."""
    kept: dict[str, Any] = {}
    pending = [name for name in roots if name in user_types]
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        kept[name] = user_types[name]
        fields = kept[name].get("fields") if isinstance(kept[name], dict) else None
        for field in fields.values() if isinstance(fields, dict) else ():
            ftype = field.get("type") if isinstance(field, dict) else None
            if isinstance(ftype, dict) and ftype.get("kind") in ("struct", "union") \
                    and ftype.get("name") in user_types:
                pending.append(ftype["name"])
    return kept
