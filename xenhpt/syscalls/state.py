"""What the printers share with the decoder: the ABI's context and one call's state.

A leaf of ``syscalls/``: the printers (``argfmt``, ``outargs``, ``calls``) and the decoder
(``decode``) all import it, and it imports none of them, so the printers never need the
decoder that runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .memory import ReadFn
from .table import Template
from .xlat import Constants

# An exit printer: (context, call state, argument index, signed return value, read) -> text.
ExitPrinter = Callable[["AbiContext", "EntryState", int, int, ReadFn], str]


class AbiContext:
    """What every printer may know about the calling ABI: word size, ``-s``, constants."""

    def __init__(self, abi: str, word_size: int, string_limit: int) -> None:
        self.abi = abi
        self.word_size = word_size
        self.bits = 8 * word_size
        self.mask = (1 << self.bits) - 1
        self.word_format = "<Q" if word_size == 8 else "<I"
        self.c = Constants.load()
        self.string_limit = string_limit
        self.path_max = self.c.numbers["PATH_MAX"]
        self.at_fdcwd = self.c.numbers["AT_FDCWD"]
        self.o_accmode = self.c.numbers["O_ACCMODE"]


@dataclass(slots=True)
class EntryState:
    """What ``entry`` learnt about one call, kept by the caller until the call returns."""

    template: Template
    args: tuple[int, ...]
    texts: list[str]
    exit_fns: list[tuple[int, ExitPrinter, int]]  # (text index, printer, argument index)
    omitted: set[int] | None = None
    extra: dict[str, int] | None = None  # per-call values kept for the exit
    name: str = field(default="")

    def omit(self, index: int) -> None:
        """Leave argument ``index`` out of the text (openat's mode without O_CREAT...)."""
        if self.omitted is None:
            self.omitted = set()
        self.omitted.add(index)

    def replace_texts(self, texts: list[str], exit_fns: list[tuple[int, ExitPrinter, int]]
                      ) -> None:
        """Print these texts instead of one per argument (clone's labelled fields)."""
        self.texts, self.exit_fns, self.omitted = texts, exit_fns, None

    def shown_texts(self) -> list[str]:
        if not self.omitted:
            return self.texts
        return [t for i, t in enumerate(self.texts) if i not in self.omitted]

    def partial_text(self) -> str:
        """strace's start of an unfinished call: ``read(3, `` (up to the first exit arg)."""
        first_exit = min((i for i, _, _ in self.exit_fns), default=len(self.texts))
        shown = [t for i, t in enumerate(self.texts[:first_exit])
                 if not self.omitted or i not in self.omitted]
        return f"{self.name}({', '.join(shown)}{', ' if first_exit < len(self.texts) else ''}"
