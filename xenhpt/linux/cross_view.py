"""Cross-view of the processes (``psxview``): the same processes found two ways.

A rootkit hides a process by unlinking it from one list, usually ``init_task.tasks``
(what ``ps`` and ``/proc`` enumerate), and rarely from every list the kernel keeps. So
the processes are collected from independent structures and set side by side:

- ``tasks``: the task list, ``init_task.tasks`` (``tasks.py``);
- ``children``: the process tree, from ``init_task`` down every ``children`` list
  (``copy_process()`` links each new thread-group leader on its parent's ``children``
  and on the task list, so the two agree on an untouched kernel);
- ``pid idr``: the pid allocator, ``init_pid_ns.idr`` (an xarray of ``struct pid``:
  64-slot nodes, an internal entry marks a node), each pid's ``tasks[PIDTYPE_PID]``
  leading to its task through ``task_struct.pid_links``; the thread-group leaders;
- ``runqueue``: what every CPU runs or has runnable (``runqueues.py``), each thread
  counted for its process (``group_leader``);
- ``memory scan``, when asked: every ``task_struct`` of a thread-group leader found in
  physical memory (``task_scan.py``), linked from anywhere or not.

A process missing from one of the first three (the complete views) is flagged. The
runqueue holds only runnable tasks, and the scan misses a task in unreadable memory, so
missing from those says nothing; a process found there and nowhere else is a row,
flagged for the views it is missing from. Every walk is
bounded and cycle-checked; what it could not read is a problem line, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MemoryReadError
from .runqueues import runqueue_task_addresses
from .task_scan import Progress, scan_for_tasks
from .tasks import MAX_TASKS, Task, TaskReader, Walk

VIEWS = ("tasks", "children", "pid idr", "runqueue")
SCAN = "memory scan"
# Views that hold every process: missing from one of these is suspicious.
COMPLETE_VIEWS = ("tasks", "children", "pid idr")
XA_CHUNK = 64  # slots of an xa_node
MAX_XA_NODES = 1 << 14  # 1M pids at most in a pid namespace (PID_MAX_LIMIT 4M: 64K nodes)


@dataclass(frozen=True)
class CrossViewRow:
    """One process and the views it was found in."""

    task: Task
    found: dict[str, bool]

    @property
    def flagged(self) -> bool:
        return not all(self.found[view] for view in COMPLETE_VIEWS)


@dataclass
class CrossView:
    rows: list[CrossViewRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    views: tuple[str, ...] = VIEWS  # the columns, in order (SCAN added when it ran)


def process_tree_tasks(reader: TaskReader, root: Task, walk: Walk) -> list[Task]:
    """Every task below ``root`` in the children lists (breadth first, bounded)."""
    found: list[Task] = []
    seen = {root.address}
    queue = [root]
    while queue and len(found) < MAX_TASKS:
        parent = queue.pop(0)
        for child in reader.children(parent, walk):
            if child.address in seen:
                walk.problems.append(f"process tree: task {child.address:#x} reached twice")
                continue
            seen.add(child.address)
            found.append(child)
            queue.append(child)
    return found


def pid_idr_tasks(reader: TaskReader, walk: Walk) -> list[Task]:
    """The thread-group leaders that init_pid_ns's pid IDR leads to."""
    k = reader.kernel
    p = k.profile
    if not (k.has_symbol("init_pid_ns") and p.has_field("pid_namespace", "idr")):
        walk.problems.append("pid idr: not in this profile; view left empty")
        return []
    head = k.symbol("init_pid_ns") + p.offset("pid_namespace", "idr") + \
        p.offset("idr", "idr_rt") + p.offset("xarray", "xa_head")
    slots_at = p.offset("xa_node", "slots")
    pid_tasks = p.offset("pid", "tasks")  # tasks[PIDTYPE_PID] is the first hlist_head
    links = p.offset("task_struct", "pid_links")
    entries: list[int] = []
    try:
        stack = [k.pointer(head)]
    except MemoryReadError:
        walk.problems.append("pid idr: init_pid_ns unreadable")
        return []
    seen: set[int] = set()
    while stack:
        entry = stack.pop()
        if entry & 3 == 2 and entry > 4096:  # xa_is_node(): an internal node
            node = entry - 2
            if node in seen or len(seen) >= MAX_XA_NODES:
                walk.problems.append(f"pid idr: node {node:#x} seen twice or too many "
                                     "nodes; not followed")
                continue
            seen.add(node)
            try:
                slots = k.read(node + slots_at, XA_CHUNK * k.pointer_size)
            except MemoryReadError:
                walk.problems.append(f"pid idr: node {node:#x} unreadable; skipped")
                continue
            stack += reversed([k.pointer_at(slots, i)
                               for i in range(0, len(slots), k.pointer_size)])
        elif entry and entry & 3 == 0:  # a struct pid
            entries.append(entry)
    found = []
    for pid in entries:
        try:
            first = k.pointer(pid + pid_tasks)
            if not first:
                continue  # a pid no task uses any more (or a pgid/sid only)
            task = reader.read(first - links)
        except MemoryReadError:
            walk.problems.append(f"pid idr: struct pid {pid:#x} or its task unreadable")
            continue
        if task.pid == task.tid:
            found.append(task)
    return found


def runqueue_processes(reader: TaskReader, walk: Walk) -> list[Task]:
    """The processes (thread-group leaders) with a thread on a runqueue; not the idle task."""
    k = reader.kernel
    leader_at = k.profile.offset("task_struct", "group_leader")
    leaders: set[int] = set()
    for address in runqueue_task_addresses(reader, walk):
        try:
            leaders.add(k.pointer(address + leader_at) or address)
        except MemoryReadError:
            walk.problems.append(f"runqueue: task {address:#x} unreadable")
    found = []
    for address in sorted(leaders):
        try:
            task = reader.read(address)
        except MemoryReadError:
            walk.problems.append(f"runqueue: task {address:#x} unreadable")
            continue
        if task.pid != 0:
            found.append(task)
    return found


def cross_view(reader: TaskReader, scan: bool = False,
               progress: Progress | None = None) -> CrossView:
    """Every process found by any view, in task-list order, then the others by pid;
    ``scan`` adds the (slow) scan of physical memory for ``task_struct``s."""
    listed = reader.processes()
    views = VIEWS + ((SCAN,) if scan else ())
    out = CrossView(problems=list(listed.problems), views=views)
    try:
        swapper = reader.read(reader.init_task)
    except MemoryReadError as exc:
        out.problems.append(f"init_task unreadable: {exc}")
        return out
    tree_walk = Walk()
    in_tree = process_tree_tasks(reader, swapper, tree_walk)
    in_idr = pid_idr_tasks(reader, tree_walk)
    running = runqueue_processes(reader, tree_walk)
    by_view = {"tasks": {t.address: t for t in listed.tasks},
               "children": {t.address: t for t in in_tree},
               "pid idr": {t.address: t for t in in_idr},
               "runqueue": {t.address: t for t in running}}
    if scan:
        by_view[SCAN] = {t.address: t for t in scan_for_tasks(reader, tree_walk, progress)}
    out.problems += tree_walk.problems
    others = {a: t for view in views[1:] for a, t in by_view[view].items()
              if a not in by_view["tasks"]}
    ordered = list(by_view["tasks"].values()) + sorted(others.values(), key=lambda t: t.pid)
    for task in ordered:
        out.rows.append(CrossViewRow(task, {view: task.address in by_view[view]
                                            for view in views}))
    return out
