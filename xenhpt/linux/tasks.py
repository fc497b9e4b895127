"""Tasks (``task_struct``) and the walks over them: all processes, threads, children.

Every offset comes from the profile. Guest memory is hostile input: each walk is
bounded, remembers what it visited, and reports a cycle or a broken link as a
``problem`` next to what it did read, instead of looping or crashing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import MemoryReadError
from .kernel import Kernel

# More tasks than any sane guest has; a longer list is corrupt or hostile.
MAX_TASKS = 1 << 17
COMM_LEN = 16


@dataclass(frozen=True)
class Task:
    """One ``task_struct``: a thread; the thread-group leader stands for its process."""

    address: int
    pid: int  # the process id (task_struct.tgid)
    tid: int  # the thread id (task_struct.pid)
    comm: bytes  # raw, guest-controlled: escape before printing
    state: int
    parent_address: int  # real_parent: who forked it
    ppid: int
    uid: int
    mm: int
    pgd: int  # physical address of its page tables (0 for kernel threads)
    start_time: int  # ns since boot
    flags: int

    @property
    def is_kernel_thread(self) -> bool:
        return self.mm == 0


@dataclass
class Walk:
    """What a walk found, plus anything suspicious it had to stop at."""

    tasks: list[Task] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class TaskReader:
    """Reads tasks through a kernel profile; caches the offsets it needs."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.size = p.size("task_struct")
        self.off = {name: p.offset("task_struct", name) for name in (
            "tasks", "pid", "tgid", "comm", "real_parent", "mm", "children", "sibling",
            "start_time", "flags", "cred")}
        self.off["state"] = p.offset("task_struct", "__state" if p.has_field(
            "task_struct", "__state") else "state")
        # Threads of a process: signal->thread_head/thread_node (>= 6.1), else thread_group.
        if p.has_field("task_struct", "thread_node") and p.has_field("signal_struct",
                                                                      "thread_head"):
            self.thread_link = p.offset("task_struct", "thread_node")
            self.thread_head = ("signal", p.offset("task_struct", "signal"),
                                p.offset("signal_struct", "thread_head"))
        else:
            self.thread_link = p.offset("task_struct", "thread_group")
            self.thread_head = None
        self.mm_pgd = p.offset("mm_struct", "pgd")
        self.cred_uid = p.offset("cred", "uid")
        self.init_task = kernel.symbol("init_task")

    def read(self, address: int) -> Task:
        """The task at ``address``; MemoryReadError if its memory is not readable."""
        k = self.kernel
        raw = k.read(address, self.size)
        o = self.off

        def pointer(name: str) -> int:
            return k.pointer_at(raw, o[name])

        def i32(name: str) -> int:
            return struct.unpack_from("<i", raw, o[name])[0]

        parent = pointer("real_parent")
        mm = pointer("mm")
        pgd = 0
        uid = -1
        try:
            ppid = k.u32(parent + o["tgid"]) if parent and parent != address else 0
        except MemoryReadError:
            ppid = -1
        try:
            if mm:
                pgd = k.physical(k.pointer(mm + self.mm_pgd))
        except MemoryReadError:
            pgd = 0
        try:
            cred = pointer("cred")
            uid = k.u32(cred + self.cred_uid) if cred else -1
        except MemoryReadError:
            uid = -1
        comm = raw[o["comm"] : o["comm"] + COMM_LEN].split(b"\0", 1)[0]
        return Task(address=address, pid=i32("tgid"), tid=i32("pid"), comm=comm,
                    state=struct.unpack_from("<I", raw, o["state"])[0],
                    parent_address=parent, ppid=ppid, uid=uid, mm=mm, pgd=pgd,
                    start_time=struct.unpack_from("<Q", raw, o["start_time"])[0],
                    flags=struct.unpack_from("<I", raw, o["flags"])[0])

    def _list(self, head: int, link_offset: int, walk: Walk, what: str,
              limit: int = MAX_TASKS) -> Iterator[int]:
        """Addresses of the structures linked from the list_head at ``head``."""
        seen = {head}
        try:
            node = self.kernel.pointer(head)
        except MemoryReadError:
            walk.problems.append(f"{what}: list head {head:#x} unreadable")
            return
        for _ in range(limit):
            if node == head:
                return
            if node in seen:
                walk.problems.append(f"{what}: cycle at {node:#x}; walk stopped")
                return
            seen.add(node)
            yield node - link_offset
            try:
                node = self.kernel.pointer(node)
            except MemoryReadError:
                walk.problems.append(f"{what}: link {node:#x} unreadable; walk stopped")
                return
        walk.problems.append(f"{what}: more than {limit} entries; walk stopped")

    def processes(self, include_swapper: bool = False) -> Walk:
        """Every thread-group leader, from ``init_task.tasks``."""
        walk = Walk()
        try:
            swapper = self.read(self.init_task)
        except MemoryReadError as exc:
            raise MemoryReadError(self.init_task, "init_task is unreadable (truncated snapshot "
                                  f"or wrong profile?): {exc}") from None
        if include_swapper:
            walk.tasks.append(swapper)
        head = self.init_task + self.off["tasks"]
        for address in self._list(head, self.off["tasks"], walk, "task list"):
            try:
                walk.tasks.append(self.read(address))
            except MemoryReadError:
                walk.problems.append(f"task {address:#x} unreadable; skipped")
        return walk

    def threads(self, leader: Task, walk: Walk) -> list[Task]:
        """All threads of ``leader``'s process (the leader included)."""
        if self.thread_head is not None:
            _, signal_off, head_off = self.thread_head
            try:
                head = self.kernel.pointer(leader.address + signal_off) + head_off
            except MemoryReadError:
                walk.problems.append(f"pid {leader.pid}: signal_struct unreadable")
                return [leader]
            addresses = list(self._list(head, self.thread_link, walk, f"threads of {leader.pid}"))
        else:
            head = leader.address + self.thread_link
            addresses = [leader.address] + list(
                self._list(head, self.thread_link, walk, f"threads of {leader.pid}"))
        threads = []
        for address in addresses:
            try:
                threads.append(leader if address == leader.address else self.read(address))
            except MemoryReadError:
                walk.problems.append(f"thread {address:#x} unreadable; skipped")
        return threads or [leader]

    def children(self, task: Task, walk: Walk) -> list[Task]:
        """Children of ``task`` through ``children``/``sibling``."""
        head = task.address + self.off["children"]
        out = []
        for address in self._list(head, self.off["sibling"], walk, f"children of {task.pid}"):
            try:
                out.append(self.read(address))
            except MemoryReadError:
                walk.problems.append(f"child {address:#x} of pid {task.pid} unreadable")
        return out
