"""A raw snapshot of a 32-bit guest, synthetic: the kernel is found (banner, swapper_pg_dir,
PAE or 32-bit paging tried in turn, since a raw file has no CR4) and its task list is read
with 4-byte pointers, through the same code as ``xenhpt ps guest.raw``."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from xenhpt.cli.process import read_processes
from xenhpt.linux.kernel import Kernel
from xenhpt.vmi.snapshot.target import open_snapshot

from .synthetic_kernel import write_isf

PAGE_OFFSET = 0xC000_0000
BANNER = b"Linux version 6.1.0-synthetic-686-pae (test) #1 SMP\n\0"
# Symbol addresses as in Debian's 6.1 686-pae (System.map of its -dbg package).
SYMBOLS = {"linux_banner": 0xC1A2_C180, "swapper_pg_dir": 0xC1E9_8000,
           "init_task": 0xC1C5_F4C0, "_text": 0xC100_0000}
MEMORY = 32 << 20
P, PS = 1, 1 << 7
TASK_SIZE = 0x80
TASK_FIELDS = {
    "__state": (0x00, "u32"), "flags": (0x04, "u32"), "tasks": (0x10, ("struct", "list_head")),
    "pid": (0x20, "u32"), "tgid": (0x24, "u32"), "real_parent": (0x28, "ptr"),
    "mm": (0x2C, "ptr"), "children": (0x30, ("struct", "list_head")),
    "sibling": (0x38, ("struct", "list_head")), "start_time": (0x40, "u64"),
    "cred": (0x48, "ptr"), "thread_group": (0x4C, ("struct", "list_head")),
    "comm": (0x60, ("array", 4)),
}
STRUCTS = {
    "task_struct": (TASK_SIZE, TASK_FIELDS),
    "list_head": (8, {"next": (0, "ptr"), "prev": (4, "ptr")}),
    "mm_struct": (0x40, {"pgd": (0x24, "ptr")}),
    "cred": (0x20, {"uid": (4, "u32")}),
}


def _pa(va: int) -> int:
    return va - PAGE_OFFSET


class RawImage:
    """Guest-physical memory of the synthetic guest, written into a sparse raw file."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w+b")
        self.file.truncate(MEMORY)

    def write(self, address: int, data: bytes) -> None:
        self.file.seek(address)
        self.file.write(data)

    def close(self) -> None:
        self.file.close()


def _task(image: RawImage, va: int, pid: int, comm: bytes, parent: int,
          next_task: int, prev_task: int, cred: int) -> None:
    raw = bytearray(TASK_SIZE)
    struct.pack_into("<II", raw, 0x20, pid, pid)
    struct.pack_into("<I", raw, 0x28, parent)
    struct.pack_into("<II", raw, 0x10, next_task + 0x10, prev_task + 0x10)
    for head in (0x30, 0x4C):  # no children, no other threads: empty lists
        struct.pack_into("<II", raw, head, va + head, va + head)
    struct.pack_into("<I", raw, 0x48, cred)
    raw[0x60:0x60 + len(comm)] = comm
    image.write(_pa(va), bytes(raw))


def _guest(tmp_path: Path, levels: int) -> tuple[Path, Path]:
    image = RawImage(tmp_path / f"i386-{levels}.raw")
    top = _pa(SYMBOLS["swapper_pg_dir"])
    if levels == 3:  # PDPT entry 3 -> a directory of 2 MiB pages for the kernel's lowmem
        directory = top + 0x1000
        image.write(top + 3 * 8, struct.pack("<Q", directory | P))
        for i in range(MEMORY >> 21):
            image.write(directory + 8 * i, struct.pack("<Q", (i << 21) | P | PS))
    else:  # one 4 MiB page per directory entry from PAGE_OFFSET >> 22 = 768
        for i in range(MEMORY >> 22):
            image.write(top + 4 * (768 + i), struct.pack("<I", (i << 22) | P | PS))
    image.write(_pa(SYMBOLS["linux_banner"]), BANNER)
    swapper, init, shell = SYMBOLS["init_task"], 0xC150_0000, 0xC150_1000
    cred = 0xC160_0000
    image.write(_pa(cred), struct.pack("<II", 0, 0))
    _task(image, swapper, 0, b"swapper/0", swapper, init, shell, cred)
    _task(image, init, 1, b"init", swapper, shell, swapper, cred)
    _task(image, shell, 42, b"sh", init, swapper, init, cred)
    image.close()
    banner = {"address": SYMBOLS["linux_banner"],
              "constant_data": base64.b64encode(BANNER).decode()}
    isf = write_isf(tmp_path / f"i386-{levels}.json", STRUCTS,
                    {**SYMBOLS, "linux_banner": banner}, pointer_size=4)
    return tmp_path / f"i386-{levels}.raw", isf


@pytest.mark.parametrize("levels", [3, 2], ids=["pae", "non-pae"])
def test_a_raw_i386_snapshot_is_located_and_its_tasks_read(tmp_path: Path, levels: int) -> None:
    raw, isf = _guest(tmp_path, levels)
    with open_snapshot(raw) as target:
        kernel = Kernel.open(target, isf)
        assert (kernel.layout.levels, kernel.slide) == (levels, 0)
        assert kernel.dtb == _pa(SYMBOLS["swapper_pg_dir"])
        assert kernel.pointer_size == 4 and kernel.kernel_start == PAGE_OFFSET
        walk = read_processes(kernel)
    assert not walk.problems
    rows = {(t.pid, t.ppid, t.comm) for t in walk.tasks}
    assert rows == {(0, 0, b"swapper/0"), (1, 0, b"init"), (42, 1, b"sh")}
    assert all(PAGE_OFFSET <= t.address < 1 << 32 for t in walk.tasks)
