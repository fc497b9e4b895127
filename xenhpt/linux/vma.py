"""Memory mappings (``vm_area_struct``): what ``/proc/PID/maps`` lists, read from outside.

Where the VMAs of an ``mm_struct`` are depends on the kernel: a maple tree
(``mm->mm_mt``, Linux 6.1+, ``maple_tree.py``) or a linked list (``mm->mmap`` and
``vma->vm_next``, before 6.1). Either way each VMA is checked before it becomes a row: it
must be readable, belong to this mm (``vm_mm``), be page-aligned with start < end in the
user half, and (in a maple tree) lie in the range its slot covers; anything else is a
problem noted beside the rows, not a row.

A mapping is named as ``/proc/PID/maps`` names it (``fs/proc/task_mmu.c``): the file's
path, else a special mapping's own name (``[vdso]``, ``[vvar]``: ``vm_ops`` is
``special_mapping_vmops`` and ``vm_private_data`` its ``vm_special_mapping``), else
``[heap]`` (overlaps ``start_brk..brk``), ``[stack]`` (holds ``start_stack``), else nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import MemoryReadError
from .dentry import DentryReader, FileIdentity, PathRoot
from .kernel import Kernel
from .maple_tree import MapleTreeReader, TreeWalk
from .mm import AddressSpace, MmReader
from .tasks import Task

PAGE = 4096
USER_TOP = 1 << 47  # x86-64 user half (4-level paging; 5-level adds more, still < 2**63)
# (a 32-bit kernel's user space ends where the kernel starts: PAGE_OFFSET, 3 GiB by default)
MAX_VMAS = 1 << 16  # vm.max_map_count defaults to 65530
SPECIAL_NAME_MAX = 64

VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8
VMA_FIELDS = ("vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "vm_mm", "vm_ops",
              "vm_private_data")


@dataclass(frozen=True)
class Mapping:
    """One VMA of a process, named as ``/proc/PID/maps`` names it."""

    address: int  # of the vm_area_struct
    start: int
    end: int
    flags: int  # vm_flags
    offset: int  # in the file, bytes (0 for anonymous memory)
    kind: str  # "file", "heap", "stack", "special" or "anonymous"
    name: bytes  # path or [name]; b"" for anonymous memory. Guest bytes: escape them
    inode: int = 0
    device: int = 0  # s_dev: major << 20 | minor
    complete: bool = True  # False if part of the name could not be read

    @property
    def permissions(self) -> str:
        """``r-xp`` as in /proc/PID/maps: read, write, execute, shared or private."""
        f = self.flags
        return ("r" if f & VM_READ else "-") + ("w" if f & VM_WRITE else "-") + \
            ("x" if f & VM_EXEC else "-") + ("s" if f & VM_SHARED else "p")


@dataclass(frozen=True)
class ProcessMappings:
    """A row group of ``maps``: a process and its mappings, or why they are missing."""

    task: Task
    mappings: list[Mapping]
    unreadable: str | None = None  # "mm_struct unreadable at 0x..." and the like


@dataclass
class MappingWalk:
    mappings: list[Mapping] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class VmaReader:
    """Lists a process's mappings through a kernel profile."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.off = {name: p.offset("vm_area_struct", name) for name in VMA_FIELDS}
        # (every field read is an unsigned long or a pointer: the kernel's word)
        self.size = max(self.off.values()) + kernel.pointer_size
        self.user_top = USER_TOP if kernel.pointer_size == 8 else kernel.kernel_start
        if p.has_field("mm_struct", "mm_mt"):
            self.tree = MapleTreeReader(kernel)
            self.mm_mt = p.offset("mm_struct", "mm_mt")
        else:
            self.tree = None
            self.mmap = p.offset("mm_struct", "mmap")
            self.vm_next = p.offset("vm_area_struct", "vm_next")
        self.special_ops = kernel.symbol("special_mapping_vmops") \
            if kernel.has_symbol("special_mapping_vmops") else None
        self.special_name = p.offset("vm_special_mapping", "name") \
            if p.has_struct("vm_special_mapping") else None
        self.dentries = DentryReader(kernel)

    def mappings(self, task: Task, space: AddressSpace) -> MappingWalk:
        """Every mapping of ``task`` in address order."""
        walk = MappingWalk()
        root = self.dentries.task_root(task.address)
        found: dict[int, Mapping] = {}
        for vma, low, high in self._vmas(space.address, walk, task.pid):
            if vma in found:
                continue
            mapping = self._mapping(vma, space, root, low, high, walk, task.pid)
            if mapping is not None:
                found[vma] = mapping
        walk.mappings = sorted(found.values(), key=lambda m: m.start)
        return walk

    def _vmas(self, mm: int, walk: MappingWalk, pid: int,
              ) -> Iterator[tuple[int, int, int]]:
        """(vma address, first and last address its slot covers) of every VMA."""
        if self.tree is not None:
            tree_walk = TreeWalk()
            for low, high, entry in self.tree.entries(mm + self.mm_mt, tree_walk, MAX_VMAS):
                if entry & 7 or entry < PAGE:
                    continue  # an internal value (XA_ZERO_ENTRY…), not a VMA pointer
                yield entry, low, high
            walk.problems += [f"pid {pid}: {p}" for p in tree_walk.problems]
            return
        seen: set[int] = set()
        try:
            vma = self.kernel.pointer(mm + self.mmap)
            for _ in range(MAX_VMAS):
                if not vma:
                    return
                if vma in seen:
                    walk.problems.append(f"pid {pid}: cycle in the VMA list at {vma:#x}")
                    return
                seen.add(vma)
                yield vma, 0, self.user_top
                vma = self.kernel.pointer(vma + self.vm_next)
            walk.problems.append(f"pid {pid}: more than {MAX_VMAS} VMAs; walk stopped")
        except MemoryReadError as exc:
            walk.problems.append(f"pid {pid}: VMA list unreadable ({exc}); walk stopped")

    def _mapping(self, vma: int, space: AddressSpace, root: PathRoot, low: int, high: int,
                 walk: MappingWalk, pid: int) -> Mapping | None:
        try:
            raw = self.kernel.read(vma, self.size)
        except MemoryReadError:
            walk.problems.append(f"pid {pid}: VMA {vma:#x} unreadable; skipped")
            return None
        v = {name: self.kernel.pointer_at(raw, at) for name, at in self.off.items()}
        start, end = v["vm_start"], v["vm_end"]
        if v["vm_mm"] != space.address or not start < end <= self.user_top or \
                (start | end) & (PAGE - 1) or not low <= start and end - 1 <= high:
            walk.problems.append(f"pid {pid}: VMA {vma:#x} ({start:#x}-{end:#x}) is not "
                                 "a mapping of this process; skipped")
            return None
        common = {"address": vma, "start": start, "end": end, "flags": v["vm_flags"]}
        if v["vm_file"]:
            identity: FileIdentity = self.dentries.file(v["vm_file"], root)
            return Mapping(**common, offset=v["vm_pgoff"] * PAGE, kind="file",
                           name=identity.path, inode=max(identity.inode, 0),
                           device=max(identity.device, 0), complete=identity.complete)
        special = self._special_name(v["vm_ops"], v["vm_private_data"])
        if special is not None:
            return Mapping(**common, offset=0, kind="special", name=special)
        if start <= space.brk and end >= space.start_brk:
            return Mapping(**common, offset=0, kind="heap", name=b"[heap]")
        if start <= space.start_stack <= end:
            return Mapping(**common, offset=0, kind="stack", name=b"[stack]")
        if space.vdso and start == space.vdso:
            return Mapping(**common, offset=0, kind="special", name=b"[vdso]")
        return Mapping(**common, offset=0, kind="anonymous", name=b"")

    def _special_name(self, ops: int, private: int) -> bytes | None:
        """The name of a special mapping (``[vdso]``, ``[vvar]``), or None."""
        if self.special_ops is None or self.special_name is None or ops != self.special_ops:
            return None
        try:
            pointer = self.kernel.pointer(private + self.special_name)
            size = min(SPECIAL_NAME_MAX, PAGE - (pointer & (PAGE - 1)))  # not past its page
            return self.kernel.read(pointer, size).split(b"\0", 1)[0]
        except MemoryReadError:
            return None


def process_mappings(reader: VmaReader, mm: MmReader, tasks: Iterable[Task],
                     problems: list[str]) -> list[ProcessMappings]:
    """The mappings of every user process in ``tasks`` (kernel threads have none)."""
    rows = []
    for task in tasks:
        if task.is_kernel_thread:
            continue
        try:
            space = mm.address_space(task)
        except MemoryReadError:
            rows.append(ProcessMappings(task, [], f"mm_struct unreadable at {task.mm:#x}"))
            continue
        walk = reader.mappings(task, space)
        problems += walk.problems
        rows.append(ProcessMappings(task, walk.mappings))
    return rows
