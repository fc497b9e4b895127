"""A scan of physical memory for ``task_struct``s: processes no list leads to.

A rootkit can unlink a process from every structure the kernel walks (the task list,
its parent's children, the pid IDR) and, while it sleeps, it is on no runqueue either;
its ``task_struct`` is still in memory. This finds it by a property every thread-group
leader has: its ``group_leader`` points at itself. In the kernel's direct map a
``task_struct`` at physical ``T`` is at ``page_offset_base + T`` (``PAGE_OFFSET + T`` on
a 32-bit kernel, whose tasks are in low memory), so the pointer at
``T + offsetof(group_leader)`` holds exactly that value. Within 64 KiB of memory the
bytes above the lowest two of those values take at most two values, so ``bytes.find``
over each window finds the candidates at C speed (few with a 64-bit kernel's six bytes,
more with a 32-bit one's two); each is then checked exactly and validated as a
task (pid and tgid plausible and equal, name printable, list and parent and credential
pointers in the kernel's part of the address space, not a task that has died:
``TASK_DEAD`` or ``EXIT_DEAD``, whose freed memory may still look like one).

It reads all of guest memory (a second or so per 512 MiB), so ``psxview`` runs it only
when asked (``--scan``). A task whose ``task_struct`` lies in memory the target cannot
read is not found; nothing here raises for hostile bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import MemoryReadError
from .tasks import COMM_LEN, MAX_TASKS, Task, TaskReader, Walk

CHUNK = 1 << 20  # physical memory read at a time
WINDOW = 1 << 16  # the span over which a self pointer's bytes above the low two take ≤ 2 values
DEFAULT_PAGE_OFFSET = 0xFFFF_8880_0000_0000  # the direct map without KASLR (4-level)
PID_MAX_LIMIT = 1 << 22
TASK_DEAD = 0x80
EXIT_DEAD = 0x10

Progress = Callable[[int, int], None]


def page_offset(reader: TaskReader) -> int:
    """Where the kernel's direct map of physical memory starts (KASLR moves it)."""
    k = reader.kernel
    if k.pointer_size == 4:
        return k.kernel_start  # PAGE_OFFSET: low memory is mapped from the kernel's start
    if k.has_symbol("page_offset_base"):
        try:
            return k.u64(k.symbol("page_offset_base"))
        except MemoryReadError:
            pass
    return DEFAULT_PAGE_OFFSET


def scan_for_tasks(reader: TaskReader, walk: Walk,
                   progress: Progress | None = None) -> list[Task]:
    """Every thread-group leader whose ``task_struct`` is in readable physical memory."""
    k = reader.kernel
    p = k.profile
    leader_at = p.offset("task_struct", "group_leader")
    base = page_offset(reader)
    target = k.target
    size = target.physical_size
    word, mask = k.pointer_size, k.word_max
    candidates: list[int] = []
    for start in range(0, size, CHUNK):
        if progress is not None:
            progress(start, size)
        try:
            data = target.read_physical(start, min(CHUNK, size - start))
        except MemoryReadError:
            continue  # a hole in the snapshot, or memory the backend cannot read
        for window in range(0, len(data), WINDOW):
            first = (base + start + window - leader_at) & mask
            last = (first + WINDOW - word) & mask
            for high in {first >> 16, last >> 16}:
                needle = high.to_bytes(word - 2, "little")
                at = data.find(needle, window + 2, window + WINDOW + word - 2)
                while at != -1:
                    q = at - 2
                    if q % word == 0:
                        value = k.pointer_at(data, q)
                        if value == (base + start + q - leader_at) & mask:
                            candidates.append(value)  # the task's virtual address
                    at = data.find(needle, at + 1, window + WINDOW + word - 2)
        if len(candidates) > MAX_TASKS:
            walk.problems.append("memory scan: too many candidates; scan stopped")
            break
    if progress is not None:
        progress(size, size)
    found = []
    for address in dict.fromkeys(candidates):
        task = validated(reader, address)
        if task is not None:
            found.append(task)
    return found


def validated(reader: TaskReader, address: int) -> Task | None:
    """The task at ``address`` if it looks like a live thread-group leader, else None."""
    k = reader.kernel
    p = k.profile
    try:
        task = reader.read(address)
        exit_state = k.u32(address + p.offset("task_struct", "exit_state"))
        tasks = address + reader.off["tasks"]
        links = [k.pointer(tasks), k.pointer(tasks + k.pointer_size),
                 k.pointer(address + reader.off["cred"])]
    except MemoryReadError:
        return None
    comm = task.comm
    if not (0 < task.pid < PID_MAX_LIMIT and task.pid == task.tid):
        return None
    if not comm or len(comm) >= COMM_LEN or not all(0x20 <= b < 0x7F for b in comm):
        return None
    if task.state & TASK_DEAD or exit_state & EXIT_DEAD:
        return None
    if not all(k.is_kernel_address(link) for link in [*links, task.parent_address]):
        return None
    return task
