"""System-call templates per ABI, loaded from the generated ``data/<abi>.json`` tables.

A ``Template`` says what one system call is for one ABI: its number, name, kernel entry point,
argument kinds (see ``kinds.py``), return kind and strace trace classes. ``resolve_selection``
turns strace's ``-e trace=`` syntax into a set of numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

ABIS = ("x86_64", "i386")
CLASSES = ("%file", "%process", "%network", "%memory", "%signal", "%desc")
_CLASS_ALIASES = {"%net": "%network"}


@dataclass(frozen=True)
class ArgSpec:
    """One argument: its C name, its kind, and for buffers the index of its length argument."""

    name: str
    kind: str
    length_arg: int | None = None


@dataclass(frozen=True)
class Template:
    """What the tables know about one system call of one ABI."""

    name: str
    nr: int
    abi: str
    entry: str | None
    args: tuple[ArgSpec, ...]
    classes: frozenset[str]
    ret: str = "int"
    # i386 only: the handler on an i386 kernel, where ``entry`` is a 64-bit kernel's
    # compat one (sys_old_mmap for mmap, whose compat handler is compat_sys_ia32_mmap)
    entry_native: str | None = None

    def arg_index(self, name: str) -> int | None:
        """Position of the argument called ``name`` (as in the kernel prototype), if any."""
        for index, spec in enumerate(self.args):
            if spec.name == name:
                return index
        return None

    @staticmethod
    def unknown(abi: str, nr: int) -> Template:
        """A number the tables do not know: strace prints ``syscall_0x1c8(0x1, ...)``."""
        return _unknown_template(abi, nr)


@lru_cache(maxsize=1024)
def _unknown_template(abi: str, nr: int) -> Template:
    args = tuple(ArgSpec(f"arg{i}", "hex") for i in range(6))
    return Template(f"syscall_{nr:#x}", nr, abi, None, args, frozenset())


def _data_text(name: str) -> str:
    return resources.files("xenhpt.syscalls").joinpath("data", name).read_text("utf-8")


def _templates(abi: str, entries: list[dict[str, object]], number_key: str = "nr"
               ) -> list[Template]:
    out = []
    for entry in entries:
        raw_args = entry.get("args") or []
        assert isinstance(raw_args, list)
        args = tuple(ArgSpec(str(a["name"]), str(a["kind"]),
                             int(a["len"]) if "len" in a else None) for a in raw_args)
        classes = entry.get("classes") or []
        assert isinstance(classes, list)
        nr = entry.get(number_key, -1)
        assert isinstance(nr, int)
        out.append(Template(str(entry["name"]), nr, abi,
                            str(entry["entry"]) if entry.get("entry") else None, args,
                            frozenset(str(c) for c in classes), str(entry.get("ret", "int")),
                            str(entry["entry_native"]) if entry.get("entry_native") else None))
    return out


class SyscallTable:
    """All system calls of one ABI (``x86_64`` or ``i386``)."""

    def __init__(self, abi: str, word_size: int, templates: list[Template],
                 socketcall: dict[int, Template], metadata: dict[str, object]) -> None:
        self.abi = abi
        self.word_size = word_size
        self.metadata = metadata
        self.socketcall = socketcall
        self._by_number = {t.nr: t for t in templates}
        self._by_name: dict[str, Template] = {}
        for template in templates:
            self._by_name.setdefault(template.name, template)

    @staticmethod
    @cache
    def load(abi: str) -> SyscallTable:
        """The table of ``abi``, read once from the packaged JSON."""
        if abi not in ABIS:
            raise ValueError(f"unknown ABI {abi!r} (known: {', '.join(ABIS)})")
        data = json.loads(_data_text(f"{abi}.json"))
        templates = _templates(abi, data["syscalls"])
        socketcall = {}
        for number, entry in (data.get("socketcall") or {}).items():
            sub = _templates(abi, [{**entry, "nr": int(number)}])[0]
            socketcall[int(number)] = sub
        meta = data["metadata"]
        return SyscallTable(abi, int(meta["word_size"]), templates, socketcall, meta)

    def by_number(self, nr: int) -> Template | None:
        return self._by_number.get(nr)

    def by_name(self, name: str) -> Template | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Template]:
        return iter(sorted(self._by_number.values(), key=lambda t: t.nr))

    def __len__(self) -> int:
        return len(self._by_number)

    def names_in_class(self, trace_class: str) -> set[str]:
        """Names of the calls in a strace class such as ``%file`` (``%net`` = ``%network``)."""
        wanted = _CLASS_ALIASES.get(trace_class, trace_class)
        return {t.name for t in self._by_number.values() if wanted in t.classes}

    def numbers_in_class(self, trace_class: str) -> set[int]:
        wanted = _CLASS_ALIASES.get(trace_class, trace_class)
        return {t.nr for t in self._by_number.values() if wanted in t.classes}


class SelectionError(ValueError):
    """A ``-e trace=`` expression names something that does not exist."""


def resolve_selection(expr: str, abi: str) -> set[int]:
    """The system-call numbers selected by strace's ``-e trace=`` syntax.

    A comma list of names (``openat``), classes (``%file``, ``%process``, ``%network`` or
    ``%net``, ``%memory``, ``%signal``, ``%desc``; the bare words ``file``... work too, as in
    old strace), ``/regex`` (matched against names), ``all`` and ``none``; ``?name`` ignores
    an unknown name, ``name@64``/``name@32`` limits a name to one ABI. A leading ``!`` selects
    the complement: ``!read,write`` is everything but those two.
    """
    table = SyscallTable.load(abi)
    everything = {t.nr for t in table}
    expr = expr.strip()
    if expr.startswith("trace="):
        expr = expr[len("trace="):]
    negate = expr.startswith("!")
    if negate:
        expr = expr[1:]
    selected: set[int] = set()
    for token in (t.strip() for t in expr.split(",")):
        if not token:
            continue
        optional = token.startswith("?")
        token = token.lstrip("?")
        selected |= _resolve_token(table, token, optional, everything)
    return everything - selected if negate else selected


def _resolve_token(table: SyscallTable, token: str, optional: bool, everything: set[int]
                   ) -> set[int]:
    if "@" in token:
        token, _, personality = token.partition("@")
        wanted_abi = {"64": "x86_64", "32": "i386"}.get(personality)
        if wanted_abi is None:
            raise SelectionError(f"unknown personality @{personality}")
        if wanted_abi != table.abi:
            return set()
    if token == "all":
        return set(everything)
    if token == "none":
        return set()
    if token.startswith("/"):
        try:
            pattern = re.compile(token[1:])
        except re.error as exc:
            raise SelectionError(f"bad regular expression {token[1:]!r}: {exc}") from exc
        return {t.nr for t in table if pattern.search(t.name)}
    as_class = token if token.startswith("%") else f"%{token}"
    as_class = _CLASS_ALIASES.get(as_class, as_class)
    if as_class in CLASSES and (token.startswith("%") or table.by_name(token) is None):
        return table.numbers_in_class(as_class)
    if token.startswith("%"):
        raise SelectionError(f"unknown trace class {token!r}")
    numbers = {t.nr for t in table if t.name == token}
    if not numbers and not optional:
        if _known_elsewhere(token, table.abi):
            return set()
        raise SelectionError(f"unknown system call {token!r}")
    return numbers


def _known_elsewhere(name: str, abi: str) -> bool:
    """``trace=mmap2`` on x86_64 is not an error: the name exists for the other ABI."""
    return any(SyscallTable.load(other).by_name(name) for other in ABIS if other != abi)


ABIS = ("x86_64", "i386")


def parse_selection(expression: str) -> dict[str, set[int]] | None:
    """A whole ``-e trace=SET`` → the numbers per ABI (None: every call).

    The one reading of ``-e`` for every command (trace, control): ``SelectionError`` names
    what does not exist, or an empty set.
    """
    expression = expression.strip().removeprefix("trace=")
    if expression in ("all", "%all"):
        return None
    if not expression:
        raise SelectionError("-e trace= names no system call (give names or classes, "
                             "e.g. -e trace=openat,%process)")
    try:
        return {abi: resolve_selection(expression, abi) for abi in ABIS}
    except SelectionError as exc:
        raise SelectionError(f"-e {expression}: {exc}") from None
