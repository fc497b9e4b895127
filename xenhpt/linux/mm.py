"""A process's address space (``mm_struct``) and the strings the kernel keeps in it.

``execve`` copies a process's argv and environment onto its user stack, NUL-separated,
and records where: ``mm->arg_start..arg_end`` and ``mm->env_start..env_end``. Those two
areas are what ``/proc/PID/cmdline`` and ``/proc/PID/environ`` show, and what ``psaux``
and ``envars`` read here, through the process's own page tables.

The guest controls all of it: an area's length is capped, and a page that is not
present (never touched, swapped out, or outside the snapshot) ends the strings read so
far with the address where reading stopped, instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import MemoryReadError
from .kernel import Kernel
from .tasks import Task

PAGE = 4096
# Linux's own cap is 1/4 of the stack rlimit (2 MiB by default); larger is not worth
# printing and a guest can claim any length here.
MAX_AREA_BYTES = 256 << 10

MM_FIELDS = ("arg_start", "arg_end", "env_start", "env_end", "start_brk", "brk",
             "start_stack")


@dataclass(frozen=True)
class AddressSpace:
    """The parts of one ``mm_struct`` the views use (user virtual addresses)."""

    address: int  # of the mm_struct
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    start_brk: int
    brk: int
    start_stack: int
    vdso: int  # mm->context.vdso, 0 if the profile or the mm has none


@dataclass(frozen=True)
class UserStrings:
    """NUL-separated strings read from a user area, and how far reading got.

    ``unreadable_at`` is the first address that could not be read (the strings before
    it are complete); ``truncated`` says the area was longer than MAX_AREA_BYTES.
    """

    strings: tuple[bytes, ...]
    unreadable_at: int | None = None
    truncated: bool = False

    @property
    def complete(self) -> bool:
        return self.unreadable_at is None and not self.truncated


@dataclass(frozen=True)
class ProcessStrings:
    """A row of ``psaux`` or ``envars``: a process and its argv or environment.

    ``strings`` is None for a kernel thread: it has no user memory.
    """

    task: Task
    strings: UserStrings | None


class MmReader:
    """Reads ``mm_struct``s and user memory through a kernel profile."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.off = {name: p.offset("mm_struct", name) for name in MM_FIELDS}
        self.vdso = (p.offset("mm_struct", "context.vdso")
                     if p.has_field("mm_struct", "context.vdso") else None)

    def address_space(self, task: Task) -> AddressSpace:
        """The ``mm_struct`` of ``task``; MemoryReadError if it is unreadable."""
        k = self.kernel
        end = max(self.off.values()) + k.pointer_size
        raw = k.read(task.mm, end)
        # (unsigned long fields: as wide as a pointer)
        values = {name: k.pointer_at(raw, at) for name, at in self.off.items()}
        vdso = 0
        if self.vdso is not None:
            try:
                vdso = k.pointer(task.mm + self.vdso)
            except MemoryReadError:
                vdso = 0
        return AddressSpace(address=task.mm, vdso=vdso, **values)

    def read_user(self, task: Task, start: int, end: int,
                  limit: int = MAX_AREA_BYTES) -> tuple[bytes, int | None, bool]:
        """Bytes of ``task``'s memory in ``[start, end)``, page by page.

        Returns (bytes read, first unreadable address or None, truncated by ``limit``).
        """
        truncated = end - start > limit
        end = min(end, start + limit)
        chunks = []
        at = start
        while at < end:
            size = min(end, (at | (PAGE - 1)) + 1) - at
            try:
                chunks.append(self.kernel.target.read_virtual(task.pgd, at, size))
            except MemoryReadError:
                return b"".join(chunks), at, truncated
            at += size
        return b"".join(chunks), None, truncated

    def strings(self, task: Task, start: int, end: int) -> UserStrings:
        """The NUL-separated strings in ``[start, end)`` of ``task``'s memory."""
        if end == start:
            return UserStrings(())
        if not task.pgd or end < start:
            return UserStrings((), start)  # no page tables, or a corrupt area
        data, unreadable, truncated = self.read_user(task, start, end)
        parts = data.split(b"\0")
        if data.endswith(b"\0"):
            parts.pop()  # the terminator of the last string, not an empty string
        return UserStrings(tuple(parts), unreadable, truncated)

    def command_line(self, task: Task, space: AddressSpace) -> UserStrings:
        return self.strings(task, space.arg_start, space.arg_end)

    def environment(self, task: Task, space: AddressSpace) -> UserStrings:
        return self.strings(task, space.env_start, space.env_end)


def process_strings(reader: MmReader, tasks: Iterable[Task], which: str) -> list[ProcessStrings]:
    """argv (``which="arguments"``) or environment (``"environment"``) of every task."""
    rows = []
    for task in tasks:
        if task.is_kernel_thread:
            rows.append(ProcessStrings(task, None))
            continue
        try:
            space = reader.address_space(task)
        except MemoryReadError:
            rows.append(ProcessStrings(task, UserStrings((), task.mm)))  # its mm_struct
            continue
        read = reader.command_line if which == "arguments" else reader.environment
        rows.append(ProcessStrings(task, read(task, space)))
    return rows
