"""Cross-view of the processes (``psxview``): the same processes found two ways.

A rootkit hides a process by unlinking it from one list, usually ``init_task.tasks``
(what ``ps`` and ``/proc`` enumerate), and rarely from every list the kernel keeps. So
the processes are collected from independent structures and set side by side:

- ``tasks``: the task list, ``init_task.tasks`` (``tasks.py``);
- ``children``: the process tree, from ``init_task`` down every ``children`` list
  (``copy_process()`` links each new thread-group leader on its parent's ``children``
  and on the task list, so the two agree on an untouched kernel).

A process present in one view and missing from another is flagged. Both walks are
bounded and cycle-checked; what they could not read is a problem line, not an error.
Not yet here: the pid IDR and the runqueues (the issue's other views).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MemoryReadError
from .tasks import MAX_TASKS, Task, TaskReader, Walk

VIEWS = ("tasks", "children")


@dataclass(frozen=True)
class CrossViewRow:
    """One process and the views it was found in."""

    task: Task
    found: dict[str, bool]

    @property
    def flagged(self) -> bool:
        return not all(self.found.values())


@dataclass
class CrossView:
    rows: list[CrossViewRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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


def cross_view(reader: TaskReader) -> CrossView:
    """Every process found by either view, in task-list order, then the others by pid."""
    listed = reader.processes()
    out = CrossView(problems=list(listed.problems))
    try:
        swapper = reader.read(reader.init_task)
    except MemoryReadError as exc:
        out.problems.append(f"init_task unreadable: {exc}")
        return out
    tree_walk = Walk()
    in_tree = process_tree_tasks(reader, swapper, tree_walk)
    out.problems += tree_walk.problems
    by_view = {"tasks": {t.address: t for t in listed.tasks},
               "children": {t.address: t for t in in_tree}}
    ordered = list(by_view["tasks"].values()) + sorted(
        (t for a, t in by_view["children"].items() if a not in by_view["tasks"]),
        key=lambda t: t.pid)
    for task in ordered:
        out.rows.append(CrossViewRow(task, {view: task.address in by_view[view]
                                            for view in VIEWS}))
    return out
