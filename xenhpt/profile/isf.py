"""Read a Volatility 3 ISF profile: symbol addresses, struct layouts, the kernel banner.

``Profile`` is what the ``linux`` layer asks "where is ``init_task``", "at which offset is
``task_struct.comm``". It reads any standard ISF (ours or dwarf2json's), plain or
``.json.xz``/``.json.gz``.

Load time: our BTF-built ISF for Debian 6.1 is 10 MB of JSON (1.1 MB as .xz) and loads in
≈ 0.16 s plain / 0.2 s xz; dwarf2json ISFs are several times larger and cost seconds as .xz.
So large or compressed ISFs are cached after the first load as a ``marshal`` file of just
what a Profile needs, under ``~/.cache/xenhpt/isf``, keyed by the ISF's path, size and
mtime (marshal: fastest stdlib loader, and unlike pickle it cannot run code). The ISF on
disk stays the standard file Volatility reads.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import lzma
import marshal
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from xenhpt.errors import ProfileError

MASK64 = (1 << 64) - 1
MAX_ISF_BYTES = 2 << 30  # decompressed; dwarf2json ISFs are < 200 MB
MAX_NESTING = 16  # anonymous-member nesting followed when flattening
CACHE_FORMAT = 4  # 2: each user type marshalled on its own, decoded on first use;
#                   3: array symbols' lengths; 4: symbols in buckets, decoded on first use
SYMBOL_BUCKETS = 256
CACHE_MIN_BYTES = 4 << 20  # plain ISFs smaller than this load as fast as the cache


def open_isf(path: Path) -> IO[bytes]:
    """Open an ISF for reading bytes, decompressing ``.xz``/``.gz`` transparently."""
    name = path.name
    try:
        if name.endswith(".xz"):
            return lzma.open(path, "rb")
        if name.endswith(".gz"):
            return gzip.open(path, "rb")
        return path.open("rb")
    except OSError as exc:
        raise ProfileError(f"cannot open profile {path}: {exc.strerror or exc}") from None


def default_cache_dir() -> Path:
    """``~/.cache/xenhpt`` (``$XDG_CACHE_HOME/xenhpt`` if that is set)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xenhpt"


def decode_banner(constant_data: str) -> str | None:
    """The banner text of a base64 ``constant_data`` (NUL and trailing newline removed)."""
    try:
        raw = base64.b64decode(constant_data, validate=True)
    except (ValueError, TypeError):
        return None
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").rstrip()


class Profile:
    """Symbols and types of one kernel build, from an ISF file. Load with :meth:`load`."""

    def __init__(self, path: Path, content: dict[str, Any]) -> None:
        self.path = path
        self._symbols: Mapping[str, int] = content["symbols"]
        self._user_types: Mapping[str, Any] = content["user_types"]
        self._base_types: dict[str, Any] = content["base_types"]
        self._enums: dict[str, Any] = content["enums"]
        self._banner: str | None = content["banner"]
        self._array_lengths: dict[str, int] = content.get("array_lengths", {})
        self._flat: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: Path | str, cache_dir: Path | None = None, use_cache: bool = True
    ) -> Profile:
        """Load an ISF file (``.json``, ``.json.xz``, ``.json.gz``); ProfileError if it is
        missing or not an ISF. ``cache_dir`` defaults to ``~/.cache/xenhpt``."""
        path = Path(path)
        try:
            st = path.stat()
        except OSError as exc:
            raise ProfileError(f"profile not found: {path} ({exc.strerror or exc})") from None
        cacheable = use_cache and (st.st_size >= CACHE_MIN_BYTES or not path.name.endswith(".json"))
        cache_file = None
        stamp = [st.st_size, st.st_mtime_ns, CACHE_FORMAT]
        if cacheable:
            # One cache file per ISF path, so a rebuilt ISF replaces its stale entry; and
            # per format, so checkouts of two xenhpt versions do not rewrite each other's.
            digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
            name = f"{digest}.v{CACHE_FORMAT}.marshal"
            cache_file = (cache_dir or default_cache_dir()) / "isf" / name
            content = _read_cache(cache_file, stamp)
            if content is not None:
                return cls(path, content)
        content = _compact(_read_json(path), path)
        if cache_file is not None:
            _write_cache(cache_file, content, stamp)
        return cls(path, content)

    # -- symbols -------------------------------------------------------------------------
    def symbol(self, name: str) -> int | None:
        """Link-time address of symbol ``name`` (unsigned), or None if the profile lacks it."""
        return self._symbols.get(name)

    def has_symbol(self, name: str) -> bool:
        return name in self._symbols

    @property
    def symbols(self) -> Mapping[str, int]:
        """All symbols, name → address (iterating them decodes every cached bucket)."""
        return self._symbols

    def array_length(self, name: str) -> int | None:
        """Element count of a symbol the ISF types as an array (``sys_call_table``), or
        None if it gives no such type (LibVMI-style ISFs carry addresses only)."""
        return self._array_lengths.get(name)

    @property
    def banner(self) -> str | None:
        """The ``linux_banner`` this profile was built for (``Linux version ...``), if known."""
        return self._banner

    # -- types ---------------------------------------------------------------------------
    def has_struct(self, struct: str) -> bool:
        return struct in self._user_types

    def size(self, struct: str) -> int:
        """Size in bytes of a struct/union or base type (``pointer``, ``int``, ...)."""
        t = self._user_types.get(struct) or self._base_types.get(struct)
        if not isinstance(t, dict) or not isinstance(t.get("size"), int):
            raise ProfileError(f"profile {self.path.name} has no (sized) type {struct}")
        return t["size"]

    def fields(self, struct: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """Fields of ``struct`` → (byte offset, ISF type descriptor), with the members of
        anonymous structs/unions lifted into the parent as C (and Volatility) does."""
        flat = self._flat.get(struct)
        if flat is None:
            if not isinstance(self._user_types.get(struct), dict):
                raise ProfileError(f"profile {self.path.name} has no struct {struct}")
            flat = {}
            self._flatten(struct, 0, flat, 0)
            self._flat[struct] = flat
        return flat

    def _flatten(self, struct: str, base: int, out: dict, depth: int) -> None:
        fields = self._user_types.get(struct, {}).get("fields", {})
        for name, field in fields.items() if isinstance(fields, dict) else ():
            if not isinstance(field, dict) or not isinstance(field.get("offset", 0), int):
                continue  # malformed entry in a hand-edited ISF: not a field we can use
            offset = base + field.get("offset", 0)
            ftype = field.get("type", {})
            if not isinstance(ftype, dict):
                continue
            if (
                field.get("anonymous")
                and depth < MAX_NESTING
                and ftype.get("name") in self._user_types
            ):
                self._flatten(ftype["name"], offset, out, depth + 1)
            else:
                out.setdefault(name, (offset, ftype))

    def _resolve(self, struct: str, field: str) -> tuple[int, dict[str, Any]] | None:
        # "a.b.c" walks into embedded structs: offset("task_struct", "thread.sp")
        offset = 0
        parts = field.split(".")
        for i, part in enumerate(parts):
            entry = self.fields(struct).get(part)
            if entry is None:
                return None
            offset += entry[0]
            if i < len(parts) - 1:
                ftype = entry[1]
                if ftype.get("kind") not in ("struct", "union"):
                    return None
                struct = ftype["name"]
                if struct not in self._user_types:
                    return None
        return offset, entry[1]

    def has_field(self, struct: str, field: str) -> bool:
        return struct in self._user_types and self._resolve(struct, field) is not None

    def offset(self, struct: str, field: str) -> int:
        """Byte offset of ``struct.field`` (``field`` may be a dotted path)."""
        found = self._resolve(struct, field)
        if found is None:
            raise ProfileError(f"profile {self.path.name} has no field {struct}.{field}")
        return found[0]

    def field_type(self, struct: str, field: str) -> dict[str, Any]:
        """The ISF type descriptor of ``struct.field``, e.g. ``{"kind": "pointer", ...}``."""
        found = self._resolve(struct, field)
        if found is None:
            raise ProfileError(f"profile {self.path.name} has no field {struct}.{field}")
        return found[1]

    def enum_constants(self, enum: str) -> dict[str, int]:
        """Constants of enum ``enum`` (name → value)."""
        e = self._enums.get(enum)
        if e is None:
            raise ProfileError(f"profile {self.path.name} has no enum {enum}")
        return dict(e.get("constants", {}))

    def __repr__(self) -> str:
        counts = f"{len(self._symbols)} symbols, {len(self._user_types)} types"
        return f"Profile({str(self.path)!r}, {counts})"


def _read_json(path: Path) -> dict[str, Any]:
    # Read in chunks: f.read(limit) would reserve the whole 2 GiB bound up front, which
    # fails with MemoryError on a small Dom0 (seen in the Xen lab's 1 GiB dom0).
    chunks = []
    total = 0
    with open_isf(path) as f:
        try:
            while chunk := f.read(1 << 24):
                total += len(chunk)
                if total > MAX_ISF_BYTES:
                    raise ProfileError(f"profile {path} is larger than {MAX_ISF_BYTES} bytes")
                chunks.append(chunk)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ProfileError(f"cannot read profile {path}: {exc}") from None
    data = b"".join(chunks)
    try:
        isf = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {path} is not valid JSON: {exc}") from None
    if not isinstance(isf, dict):
        raise ProfileError(f"profile {path} is not an ISF (top level is not an object)")
    return isf


def _compact(isf: dict[str, Any], path: Path) -> dict[str, Any]:
    """The parts of an ISF a Profile uses, validated just enough to use them safely."""
    sections = {}
    for key in ("symbols", "user_types", "base_types", "enums"):
        value = isf.get(key, {})
        if not isinstance(value, dict):
            raise ProfileError(f"profile {path}: '{key}' is not an object")
        sections[key] = value
    if not sections["user_types"] or not sections["symbols"]:
        raise ProfileError(f"profile {path} is not an ISF (no user_types or symbols)")
    symbols: dict[str, int] = {}
    array_lengths: dict[str, int] = {}
    banner = None
    for name, sym in sections["symbols"].items():
        if not isinstance(sym, dict) or not isinstance(sym.get("address"), int):
            continue
        symbols[name] = sym["address"] & MASK64  # LibVMI-style copies store int64
        stype = sym.get("type")
        if isinstance(stype, dict) and stype.get("kind") == "array" and \
                isinstance(stype.get("count"), int):
            array_lengths[name] = stype["count"]
        if name == "linux_banner" and isinstance(sym.get("constant_data"), str):
            banner = decode_banner(sym["constant_data"])
    return {
        "symbols": symbols,
        "user_types": sections["user_types"],
        "base_types": sections["base_types"],
        "enums": sections["enums"],
        "banner": banner,
        "array_lengths": array_lengths,
    }


class _LazyTypes(Mapping[str, Any]):
    """User types kept marshalled one by one: a command reads a handful of the thousands
    of structs in a kernel, so decoding all of them on every load wasted most of it."""

    def __init__(self, packed: dict[str, bytes]) -> None:
        self._packed = packed
        self._decoded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        try:
            return self._decoded[name]
        except KeyError:
            value = self._decoded[name] = marshal.loads(self._packed[name])
            return value

    def __contains__(self, name: object) -> bool:
        return name in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def _bucket(name: str) -> int:
    # A stable hash (str's hash() is randomised per process): the bucket a name was
    # written to must be the one the next process reads.
    return zlib.crc32(name.encode("utf-8", "surrogateescape")) % SYMBOL_BUCKETS


class _LazySymbols(Mapping[str, int]):
    """Symbols kept in marshalled buckets: a view looks up a dozen of a kernel's 80 000,
    and decoding them all was the largest part of loading a profile (50–100 ms)."""

    def __init__(self, buckets: list[bytes], count: int) -> None:
        self._buckets = buckets
        self._decoded: list[dict[str, int] | None] = [None] * len(buckets)
        self._count = count

    def _get_bucket(self, index: int) -> dict[str, int]:
        found = self._decoded[index]
        if found is None:
            found = self._decoded[index] = marshal.loads(self._buckets[index])
        return found

    def __getitem__(self, name: str) -> int:
        return self._get_bucket(_bucket(name))[name]

    def get(self, name: str, default: Any = None) -> Any:  # (the hot path: no KeyError)
        return self._get_bucket(_bucket(name)).get(name, default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._get_bucket(_bucket(name))

    def __iter__(self) -> Iterator[str]:
        for index in range(len(self._buckets)):
            yield from self._get_bucket(index)

    def items(self) -> Iterator[tuple[str, int]]:  # type: ignore[override]
        for index in range(len(self._buckets)):
            yield from self._get_bucket(index).items()

    def values(self) -> Iterator[int]:  # type: ignore[override]
        for index in range(len(self._buckets)):
            yield from self._get_bucket(index).values()

    def __len__(self) -> int:
        return self._count


def _read_cache(cache_file: Path, stamp: list[int]) -> dict[str, Any] | None:
    try:
        content = marshal.loads(cache_file.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(content, dict) or content.get("stamp") != stamp:
        return None  # the ISF changed since (or another cache format)
    content["user_types"] = _LazyTypes(content["user_types"])
    content["symbols"] = _LazySymbols(content["symbols"], content["symbol_count"])
    return content


def _write_cache(cache_file: Path, content: dict[str, Any], stamp: list[int]) -> None:
    # A cache is an optimisation: failing to write one (read-only home) is not an error.
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        packed = {name: marshal.dumps(t) for name, t in content["user_types"].items()}
        buckets: list[dict[str, int]] = [{} for _ in range(SYMBOL_BUCKETS)]
        for name, address in content["symbols"].items():
            buckets[_bucket(name)][name] = address
        tmp.write_bytes(marshal.dumps({
            **content, "user_types": packed, "stamp": stamp,
            "symbols": [marshal.dumps(b) for b in buckets],
            "symbol_count": len(content["symbols"])}))
        os.replace(tmp, cache_file)
    except (OSError, ValueError):
        tmp.unlink(missing_ok=True)
