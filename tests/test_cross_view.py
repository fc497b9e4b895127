"""psxview's pid-IDR walk on a synthetic kernel: it finds the task a struct pid leads to,
and a node that points back at itself is walked once, with a problem line."""

from __future__ import annotations

from pathlib import Path

from xenhpt.linux.cross_view import pid_idr_tasks
from xenhpt.linux.tasks import TaskReader, Walk

from .synthetic_kernel import SparseMemory, kernel, write_isf

K = 0xFFFF_8880_0000_0000
INIT_TASK, TASK, PID_NS, XA_NODE, PID = K + 0x1000, K + 0x2000, K + 0x3000, K + 0x4000, K + 0x5000
TASK_FIELDS = {"__state": (0, "u32"), "flags": (4, "u32"), "tasks": (0x10, ("struct", "lh")),
               "pid": (0x20, "u32"), "tgid": (0x24, "u32"), "real_parent": (0x28, "ptr"),
               "children": (0x30, ("struct", "lh")), "sibling": (0x40, ("struct", "lh")),
               "mm": (0x50, "ptr"), "start_time": (0x58, "u64"), "cred": (0x60, "ptr"),
               "thread_group": (0x68, ("struct", "lh")), "comm": (0x80, ("array", 2)),
               "pid_links": (0xA0, ("array", 4))}
STRUCTS = {
    "task_struct": (0x200, TASK_FIELDS),
    "lh": (0x10, {"next": (0, "ptr"), "prev": (8, "ptr")}),
    "mm_struct": (0x100, {"pgd": (0x48, "ptr")}),
    "cred": (0x20, {"uid": (4, "u32")}),
    "pid_namespace": (0x40, {"idr": (0x8, ("struct", "idr"))}),
    "idr": (0x18, {"idr_rt": (0, ("struct", "xarray"))}),
    "xarray": (0x10, {"xa_head": (8, "ptr")}),
    "xa_node": (0x240, {"shift": (0, "u32"), "slots": (40, ("array", 64))}),
    "pid": (0x70, {"tasks": (0x10, ("array", 4)), "numbers": (0x60, ("array", 1))}),
}


def test_pid_idr_finds_the_leader_and_survives_a_self_referencing_node(
        tmp_path: Path) -> None:
    memory = SparseMemory()
    isf = write_isf(tmp_path / "k.json", STRUCTS, {"init_task": INIT_TASK,
                                                   "init_pid_ns": PID_NS})
    for task, pid in ((INIT_TASK, 0), (TASK, 42)):
        memory.u32(task + 0x20, pid)
        memory.u32(task + 0x24, pid)
        memory.write(task + 0x80, b"sh\0" if pid else b"swapper\0")
    memory.u64(PID_NS + 0x8 + 8, XA_NODE | 2)  # xa_head: an internal node
    memory.u64(XA_NODE + 40, XA_NODE | 2, PID, 0, 0)  # slot 0 loops back, slot 1: a pid
    memory.write(XA_NODE + 40 + 32, bytes(60 * 8))
    memory.u64(PID + 0x10, TASK + 0xA0)  # tasks[PIDTYPE_PID].first: the task's pid_links[0]
    reader = TaskReader(kernel(memory, isf))
    walk = Walk()
    found = pid_idr_tasks(reader, walk)
    assert [(t.pid, t.comm, t.address) for t in found] == [(42, b"sh", TASK)]
    assert len(walk.problems) == 1 and "seen twice" in walk.problems[0]
