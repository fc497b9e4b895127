"""current_task() strategies on synthetic kernel memory (no guest needed).

The ESP-masking case is laid out like a Linux 3.2 x86_64 kernel: thread_info at the
bottom of an 8 KiB kernel stack, ``thread_info.task`` at offset 0, no per-CPU
``current_task`` symbol in the profile.
"""

from __future__ import annotations

import struct
from pathlib import Path

from xenhpt.errors import MemoryReadError
from xenhpt.linux.banner import Banner
from xenhpt.linux.current import CurrentTask
from xenhpt.linux.kernel import Kernel, KernelLayout
from xenhpt.profile.isf import Profile


def _field(offset: int, kind: str = "base", name: str = "long unsigned int") -> dict:
    return {"offset": offset, "type": {"kind": kind, "name": name}}


def _profile(symbols: dict[str, int], base_types: dict | None = None) -> Profile:
    ptr = {"kind": "pointer", "subtype": {"kind": "struct", "name": "task_struct"}}
    task_fields = {
        "state": _field(0x0, name="long int"), "stack": {"offset": 0x8, "type": ptr},
        "flags": _field(0x14, name="unsigned int"), "tasks": _field(0x100, "struct", "list_head"),
        "mm": {"offset": 0x130, "type": ptr}, "pid": _field(0x150, name="int"),
        "tgid": _field(0x154, name="int"), "real_parent": {"offset": 0x158, "type": ptr},
        "children": _field(0x168, "struct", "list_head"),
        "sibling": _field(0x178, "struct", "list_head"),
        "thread_group": _field(0x198, "struct", "list_head"),
        "start_time": _field(0x200), "cred": {"offset": 0x260, "type": ptr},
        "comm": {"offset": 0x270, "type": {"kind": "array", "count": 16,
                                           "subtype": {"kind": "base", "name": "char"}}},
    }
    content = {
        "symbols": symbols,
        "user_types": {
            "task_struct": {"kind": "struct", "size": 0x600, "fields": task_fields},
            "thread_info": {"kind": "struct", "size": 0x68,
                            "fields": {"task": {"offset": 0, "type": ptr},
                                       "flags": _field(0x10, name="unsigned int")}},
            "list_head": {"kind": "struct", "size": 16,
                          "fields": {"next": _field(0), "prev": _field(8)}},
            "mm_struct": {"kind": "struct", "size": 0x300, "fields": {"pgd": _field(0x48)}},
            "cred": {"kind": "struct", "size": 0x80, "fields": {"uid": _field(4, name="int")}},
            "pcpu_hot": {"kind": "struct", "size": 64,
                         "fields": {"current_task": {"offset": 0, "type": ptr}}},
        },
        "base_types": base_types or {}, "enums": {}, "banner": None,
    }
    return Profile(Path("synthetic-3.2.json"), content)


class FlatKernelMemory:
    """Kernel virtual memory as a sparse dict, mapped 1:1 (enough for these walks)."""

    def __init__(self) -> None:
        self.bytes: dict[int, int] = {}

    def put(self, address: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.bytes[address + i] = b

    def put_u64(self, address: int, value: int) -> None:
        self.put(address, struct.pack("<Q", value))

    def read(self, dtb: int, address: int, size: int) -> bytes:
        try:
            return bytes(self.bytes[address + i] for i in range(size))
        except KeyError:
            raise MemoryReadError(address) from None

    def translate(self, dtb: int, address: int) -> int:
        return address & 0xFFFF_FFFF

    def flush(self) -> None:
        pass


class SyntheticTarget:
    """The memory half of a Target, over :class:`FlatKernelMemory`."""

    live = False
    vcpu_count = 1
    physical_size = 1 << 32
    description = "synthetic"
    capture_file = None
    paging_levels = 4

    def __init__(self) -> None:
        self.memory = FlatKernelMemory()
        self.kernel_paging: tuple[int, object] | None = None

    def read_physical(self, address: int, size: int) -> bytes:
        raise MemoryReadError(address)

    def read_virtual(self, dtb: int, address: int, size: int) -> bytes:
        return self.memory.read(dtb, address, size)

    def translate(self, dtb: int, address: int) -> int:
        return self.memory.translate(dtb, address)

    def set_kernel_paging(self, levels: int, kernel_tables: object) -> None:
        self.kernel_paging = (levels, kernel_tables)

    def flush_translations(self) -> None:
        pass


INIT_TASK = 0xFFFF_FFFF_8180_D020


def _kernel(symbols: dict[str, int]) -> tuple[Kernel, FlatKernelMemory]:
    target = SyntheticTarget()
    memory = target.memory
    # An empty task list: init_task.tasks points at itself.
    memory.put_u64(INIT_TASK + 0x100, INIT_TASK + 0x100)
    layout = KernelLayout(slide=0, dtb=0x1000, banner=Banner("Linux version 3.2.0", "3.2.0", 0))
    return Kernel(target, _profile({"init_task": INIT_TASK, **symbols}), layout), memory


def test_esp_masking_finds_the_task_on_an_8k_stack_like_linux_3_2() -> None:
    kernel, memory = _kernel({})
    stack = 0xFFFF_8800_1234_6000  # 8 KiB aligned, not 16 KiB aligned
    task = 0xFFFF_8800_1A2B_0000
    memory.put_u64(stack, task)  # thread_info.task
    memory.put_u64(task + 0x8, stack)  # task_struct.stack points back
    current = CurrentTask(kernel)
    assert current.strategy == "ESP masking"
    rsp = stack + 0x1E58
    assert current.address(0, {"rsp": rsp, "cr3": 0x1000, "gs_base": 0,
                                "k_gs_base": 0}) == task


def test_esp_masking_rejects_a_thread_info_the_task_does_not_confirm() -> None:
    kernel, memory = _kernel({})
    stack = 0xFFFF_8800_1234_6000
    task = 0xFFFF_8800_1A2B_0000
    memory.put_u64(stack, task)
    memory.put_u64(task + 0x8, 0xFFFF_8800_DEAD_0000)  # a different stack: not ours
    current = CurrentTask(kernel)
    assert current.address(0, {"rsp": stack + 0x100, "cr3": 0x1000}) is None


def test_esp_masking_ignores_a_user_stack_pointer() -> None:
    kernel, _ = _kernel({})
    assert CurrentTask(kernel).address(0, {"rsp": 0x7FFD_1234_5678, "cr3": 0x1000}) is None


def test_per_cpu_current_task_is_read_through_whichever_gs_base_is_the_kernels() -> None:
    kernel, memory = _kernel({"current_task": 0x1FB80})
    percpu = 0xFFFF_8880_1F20_0000
    task = 0xFFFF_8880_0539_A0C0
    memory.put_u64(percpu + 0x1FB80, task)
    current = CurrentTask(kernel)
    assert current.strategy == "per-CPU current_task"
    # At the first instruction of entry_SYSCALL_64: user GS active, kernel's in k_gs_base.
    assert current.address(0, {"gs_base": 0x7F00_0000_1000, "k_gs_base": percpu,
                                "rsp": 0x7FFD_0000_0000, "cr3": 0x1000}) == task
    # After swapgs it is the other way round.
    assert current.address(0, {"gs_base": percpu, "k_gs_base": 0, "rsp": 0,
                                "cr3": 0x1000}) == task


def test_pcpu_hot_is_preferred_when_the_profile_has_it() -> None:
    kernel, memory = _kernel({"pcpu_hot": 0x2_0000, "current_task": 0x1FB80})
    percpu = 0xFFFF_8880_1F20_0000
    memory.put_u64(percpu + 0x2_0000, 0xFFFF_8880_0000_1000)
    current = CurrentTask(kernel)
    assert current.strategy == "pcpu_hot.current_task"
    assert current.address(0, {"gs_base": percpu, "k_gs_base": 0, "rsp": 0,
                                "cr3": 0x1000}) == 0xFFFF_8880_0000_1000


# i386 (6.1 686-pae): 4-byte pointers, per-CPU symbols are addresses in .data..percpu and
# the base (__per_cpu_offset[cpu], FS's base in the kernel) a delta added to them.
I386_POINTER = {"pointer": {"kind": "int", "size": 4, "signed": False, "endian": "little"}}
I386_INIT_TASK = 0xC1C5_F4C0
I386_CURRENT_TASK = 0xC1E8_0808
I386_PER_CPU_OFFSET = 0xC1BD_76A0


def _i386_kernel(symbols: dict[str, int]) -> tuple[Kernel, FlatKernelMemory]:
    target = SyntheticTarget()
    target.paging_levels = 3
    memory = target.memory
    memory.put(I386_INIT_TASK + 0x100, struct.pack("<I", I386_INIT_TASK + 0x100))
    layout = KernelLayout(slide=0, dtb=0x1E98000, levels=3,
                          banner=Banner("Linux version 6.1.0", "6.1.0", 0))
    profile = _profile({"init_task": I386_INIT_TASK, "_text": 0xC100_0000, **symbols},
                       I386_POINTER)
    return Kernel(target, profile, layout), memory


def test_i386_current_task_is_read_at_per_cpu_offset_plus_the_symbol() -> None:
    kernel, memory = _i386_kernel({"current_task": I386_CURRENT_TASK,
                                   "__per_cpu_offset": I386_PER_CPU_OFFSET})
    assert kernel.pointer_size == 4 and kernel.kernel_start == 0xC000_0000
    delta, task = 0x3300_0000, 0xC250_3A00  # a base that looks like a user address
    memory.put(I386_PER_CPU_OFFSET, struct.pack("<II", 0x32F0_0000, delta))
    memory.put(I386_CURRENT_TASK + delta, struct.pack("<I", task))
    current = CurrentTask(kernel)
    assert current.strategy == "per-CPU current_task"
    # At entry_INT80_32 FS still holds the user's selector: __per_cpu_offset[vcpu] is used.
    assert current.address(1, {"fs": 0, "fs_base": 0, "rsp": 0xBF80_0000,
                                "cr3": 0x1E98000}) == task
    # Inside the kernel FS is __KERNEL_PERCPU and its base the per-CPU delta.
    assert current.address(0, {"fs": 0xD8, "fs_base": delta, "rsp": 0xC250_0000,
                                "cr3": 0x1E98000}) == task


def test_i386_esp_masking_reads_4_byte_pointers_on_an_8k_stack() -> None:
    kernel, memory = _i386_kernel({})
    stack, task = 0xC7A4_6000, 0xC250_3A00  # 8 KiB aligned, not 16 KiB aligned
    memory.put(stack, struct.pack("<I", task))  # thread_info.task
    memory.put(task + 0x8, struct.pack("<I", stack))  # task_struct.stack points back
    current = CurrentTask(kernel)
    assert current.strategy == "ESP masking"
    assert current.address(0, {"rsp": stack + 0x1E58, "cr3": 0x1000}) == task
    assert current.address(0, {"rsp": 0xBFFF_F000, "cr3": 0x1000}) is None  # user stack
