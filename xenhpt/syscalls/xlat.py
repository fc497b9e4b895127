"""Named constants (flag sets, value sets, errno, signals) from ``data/constants.json``.

The tables are generated from the kernel headers by ``tools/gen_syscall_tables.py``; this
module only prints with them, the way strace does: flags as ``O_CREAT|O_EXCL|0x40000000``
(unknown bits last, in hex; nothing set is ``0``; only unknown bits: ``0x1 /* O_??? */``),
values by name or, when unknown, as ``0x63 /* AF_??? */``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

_CACHE_LIMIT = 4096  # guest-chosen values must not grow the caches without bound


def _hex(value: int) -> str:
    return f"{value:#x}" if value else "0"


class FlagSet:
    """Bit flags printed ``A|B|0x...`` in the table's order (combined flags first).

    ``unknown`` is strace's comment for a value with no known bit (``0x1 /* O_??? */``).
    """

    def __init__(self, entries: list[tuple[str, int]], unknown: str | None = None) -> None:
        self.entries = tuple((value, name) for name, value in entries)
        self.names = {name: value for name, value in entries}
        self.unknown = unknown
        self._cache: dict[tuple[int, str], str] = {}

    def split(self, value: int) -> tuple[list[str], int]:
        """The names of the flags set in ``value`` and the bits no name covers."""
        names = []
        for bits, name in self.entries:
            if value & bits == bits:
                names.append(name)
                value &= ~bits
        return names, value

    def format(self, value: int, zero: str = "0", alone: bool = True) -> str:
        """``alone=False`` when the text follows other names (``O_RDONLY|0x40000000``): then
        unknown bits get no comment."""
        # (keyed by the zero text too: clone's flags print 0 as "", unshare's as "0")
        cached = self._cache.get((value, zero)) if alone else None
        if cached is not None:
            return cached
        names, rest = self.split(value)
        if rest and not names and alone and self.unknown:
            return f"{rest:#x} /* {self.unknown} */"
        if rest:
            names.append(f"{rest:#x}")
        text = "|".join(names) if names else zero
        if alone and len(self._cache) < _CACHE_LIMIT:
            self._cache[(value, zero)] = text
        return text


class ValueSet:
    """One-of values printed by name, or ``0x63 /* AF_??? */`` when unknown."""

    def __init__(self, entries: list[tuple[str, int]], unknown: str | None = None) -> None:
        self.by_value: dict[int, str] = {}
        for name, value in entries:
            self.by_value.setdefault(value, name)
        self.names = {name: value for name, value in entries}
        self.prefix = _common_prefix([name for name, _ in entries])
        self.unknown = unknown or f"{self.prefix}???"

    def get(self, value: int) -> str | None:
        return self.by_value.get(value)

    def format(self, value: int) -> str:
        name = self.by_value.get(value)
        if name is not None:
            return name
        return f"{_hex(value)} /* {self.unknown} */"


def _common_prefix(names: list[str]) -> str:
    first = names[0]
    end = first.find("_", 1 if not first.startswith("__") else 2)
    prefix = first[:end + 1] if end > 0 else first
    if all(n.startswith(prefix) for n in names):
        return prefix
    return ""


@dataclass(frozen=True)
class Errno:
    number: int
    name: str
    message: str
    restart: bool  # kernel-internal restart code: strace prints "= ? ERESTARTSYS (...)"


class Constants:
    """Every table of ``data/constants.json`` and ``data/errno.json``."""

    def __init__(self, data: dict[str, object], errno: list[dict[str, object]]) -> None:
        numbers = data["numbers"]
        groups = data["groups"]
        assert isinstance(numbers, dict) and isinstance(groups, dict)
        self.numbers: dict[str, int] = {str(k): int(v) for k, v in numbers.items()}
        self.flags: dict[str, FlagSet] = {}
        self.values: dict[str, ValueSet] = {}
        for name, group in groups.items():
            entries = [(str(n), int(v)) for n, v in group["entries"]]
            unknown = group.get("unknown")
            if group["type"] == "flags":
                self.flags[name] = FlagSet(entries, unknown)
            else:
                self.values[name] = ValueSet(entries, unknown)
        self.errno = {int(e["nr"]): Errno(int(e["nr"]), str(e["name"]), str(e["message"]),
                                          bool(e.get("restart"))) for e in errno}
        self.signal_names = {value: name for value, name in self.values["signals"].by_value.items()}
        self.sigrtmin = self.numbers["SIGRTMIN"]
        self.nsig = self.numbers["_NSIG"]

    @staticmethod
    @cache
    def load() -> Constants:
        base = resources.files("xenhpt.syscalls").joinpath("data")
        data = json.loads(base.joinpath("constants.json").read_text("utf-8"))
        errno = json.loads(base.joinpath("errno.json").read_text("utf-8"))["errno"]
        return Constants(data, errno)

    def errno_number(self, name: str) -> int:
        for number, info in self.errno.items():
            if info.name == name:
                return number
        raise KeyError(name)

    def signal_name(self, number: int) -> str | None:
        """``SIGTERM``; real-time ones as strace names them (``SIGRTMIN``, ``SIGRT_1``)."""
        name = self.signal_names.get(number)
        if name is not None:
            return name
        if number == self.sigrtmin:
            return "SIGRTMIN"
        if self.sigrtmin < number <= self.nsig:
            return f"SIGRT_{number - self.sigrtmin}"
        return None

    def signal(self, number: int) -> str:
        return self.signal_name(number) or str(number)
