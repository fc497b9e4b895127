"""Which task is running on a vCPU: the strategies of DESIGN.md, chosen from the profile.

1. **per-CPU ``current_task``** (Linux 4.9 .. 6.1, and again in later kernels) or
   **``pcpu_hot.current_task``** (6.2 on): read at per-CPU base + symbol offset. The
   per-CPU base is in GS: ``gs_base`` inside the kernel after ``swapgs``, but
   ``k_gs_base`` in user mode *and* at the first instruction of ``entry_SYSCALL_64``
   (before ``swapgs``). We take whichever of the two is a kernel address, and fall
   back to ``__per_cpu_offset[vcpu]``.
2. **ESP masking** (kernels < 4.9, thread_info at the bottom of the kernel stack):
   ``(rsp & ~(THREAD_SIZE-1))->task``. Only meaningful when ``rsp`` is a kernel stack
   pointer (inside a kernel function, not at the very first entry instruction).
   THREAD_SIZE is not in BTF/DWARF, so 16 and 8 KiB are tried and the candidate is
   accepted only if the task's own ``stack`` field points back at that stack base.
3. **CR3 match**: the task whose ``mm->pgd`` is the page table in CR3 (last resort:
   it names the process, not the thread, and not a kernel thread).
"""

from __future__ import annotations

from ..errors import MemoryReadError, ProfileError
from ..vmi.x86.paging import dtb_from_cr3
from .kernel import Kernel
from .kpti import kernel_dtb
from .tasks import TaskReader

THREAD_SIZES = (0x4000, 0x2000)
# i386: GDT_ENTRY_PERCPU (27) * 8, the selector the kernel loads into FS on entry.
I386_KERNEL_PERCPU = 27 * 8


class CurrentTask:
    """Resolves the running task of a vCPU from its registers."""

    def __init__(self, kernel: Kernel, reader: TaskReader | None = None) -> None:
        self.kernel = kernel
        self.reader = reader or TaskReader(kernel)
        profile = kernel.profile
        self.percpu_offset: int | None = None
        if profile.has_symbol("pcpu_hot") and profile.has_field("pcpu_hot", "current_task"):
            self.percpu_offset = (profile.symbol("pcpu_hot")
                                  + profile.offset("pcpu_hot", "current_task"))
            self.strategy = "pcpu_hot.current_task"
        elif profile.has_symbol("current_task"):
            self.percpu_offset = profile.symbol("current_task")
            self.strategy = "per-CPU current_task"
        elif profile.has_field("thread_info", "task"):
            self.strategy = "ESP masking"
        else:
            self.strategy = "CR3 match"
        # Where the per-CPU base is: GS (x86-64), or FS while it holds the kernel's per-CPU
        # selector (i386); else the kernel's table of bases by CPU number.
        self.percpu_segment = "gs" if kernel.pointer_size == 8 else "fs"
        self.percpu_selector = 0 if kernel.pointer_size == 8 else I386_KERNEL_PERCPU
        self.percpu_offsets = (kernel.symbol("__per_cpu_offset")
                               if kernel.has_symbol("__per_cpu_offset") else None)
        self._stack_field = (profile.offset("task_struct", "stack")
                             if profile.has_field("task_struct", "stack") else None)

    def address(self, vcpu: int, registers: dict[str, int]) -> int | None:
        """The ``task_struct`` address running on ``vcpu``, or None if it cannot be told."""
        if self.percpu_offset is not None:
            found = self._from_percpu(vcpu, registers)
            if found is not None:
                return found
        if self.strategy == "ESP masking":
            found = self._from_stack(registers["rsp"])
            if found is not None:
                return found
        return self._from_cr3(registers["cr3"])

    def _from_percpu(self, vcpu: int, registers: dict[str, int]) -> int | None:
        assert self.percpu_offset is not None
        k = self.kernel
        if self.percpu_segment == "gs":
            bases = [b for b in (registers.get("gs_base", 0), registers.get("k_gs_base", 0))
                     if k.is_kernel_address(b)]
        else:
            bases = ([registers["fs_base"]]
                     if registers.get("fs") == self.percpu_selector and "fs_base" in registers
                     else [])
        if not bases and self.percpu_offsets is not None:
            try:
                bases.append(k.pointer(self.percpu_offsets + k.pointer_size * vcpu))
            except MemoryReadError:
                pass
        mask = k.word_max
        for base in bases:
            try:
                task = k.pointer((base + self.percpu_offset) & mask)
            except MemoryReadError:
                continue
            if k.is_kernel_address(task):
                return task
        return None

    def _from_stack(self, rsp: int) -> int | None:
        k = self.kernel
        if not k.is_kernel_address(rsp):
            return None
        task_offset = k.profile.offset("thread_info", "task")
        for size in THREAD_SIZES:
            base = rsp & ~(size - 1)
            try:
                task = k.pointer(base + task_offset)
                if not k.is_kernel_address(task):
                    continue
                # Accept only if the task agrees that this is its stack.
                if (self._stack_field is None
                        or k.pointer(task + self._stack_field) == base):
                    return task
            except MemoryReadError:
                continue
        return None

    def _from_cr3(self, cr3: int) -> int | None:
        # (PAE: a user PDPT is 32-byte aligned, CR3 bits 5..11 are part of its address.)
        wanted = {dtb_from_cr3(cr3, self.kernel.layout.levels), kernel_dtb(cr3)}
        try:
            walk = self.reader.processes()
        except (MemoryReadError, ProfileError):
            return None
        for task in walk.tasks:
            if task.pgd and task.pgd in wanted:
                return task.address
        return None
