"""The scheduler's runqueues: the tasks each CPU runs or is about to run.

A fourth view for ``psxview``, independent of the task list, the process tree and the pid
allocator: a process a rootkit unlinked from all three still has to be scheduled to do
anything, so while it runs or waits for a CPU it sits on a runqueue. Per CPU, the
``struct rq`` in ``runqueues`` (a per-CPU variable: ``__per_cpu_offset[cpu]`` away) holds
``curr`` (what runs now) and ``cfs.tasks_timeline``, the red-black tree of the fair
scheduler's runnable ``sched_entity``s (with group scheduling, an entity with ``my_q``
is a group: its own ``cfs_rq`` is walked in turn).

Only runnable tasks are here: a sleeping process is on no runqueue, so a process missing
from this view is not suspicious; one found only here is. Not walked: the real-time and
deadline queues (their running task is ``curr``). Every walk is bounded and
cycle-checked; ``rq->cpu`` must name the CPU it was found for.
"""

from __future__ import annotations

from ..errors import MemoryReadError
from .kernel import Kernel
from .tasks import MAX_TASKS, TaskReader, Walk

MAX_CPUS = 8192  # NR_CPUS of the largest distribution configs
MAX_GROUP_DEPTH = 16  # nested task groups (cgroups with the cpu controller)


def runqueue_task_addresses(reader: TaskReader, walk: Walk) -> set[int]:
    """The ``task_struct`` addresses of every CPU's current and runnable fair tasks."""
    k = reader.kernel
    p = k.profile
    needed = [("rq", "curr"), ("rq", "cfs"), ("cfs_rq", "tasks_timeline"),
              ("task_struct", "se"), ("sched_entity", "run_node")]
    if not (k.has_symbol("runqueues") and k.has_symbol("__per_cpu_offset")
            and all(p.has_field(s, f) for s, f in needed)):
        walk.problems.append("runqueue: not in this profile; view left empty")
        return set()
    try:
        cpus = k.u32(k.symbol("nr_cpu_ids")) if k.has_symbol("nr_cpu_ids") else 1
    except MemoryReadError:
        cpus = 1
    cpus = max(1, min(cpus, MAX_CPUS, p.array_length("__per_cpu_offset") or MAX_CPUS))
    timeline = p.offset("rq", "cfs") + p.offset("cfs_rq", "tasks_timeline")
    entity_in_task = p.offset("task_struct", "se") + p.offset("sched_entity", "run_node")
    node_in_entity = p.offset("sched_entity", "run_node")
    my_q = p.offset("sched_entity", "my_q") if p.has_field("sched_entity", "my_q") else None
    cfs_timeline = p.offset("cfs_rq", "tasks_timeline")
    rq_cpu = p.offset("rq", "cpu") if p.has_field("rq", "cpu") else None
    # A per-CPU variable's symbol is its offset in the per-CPU area: not slid by KASLR.
    rq_offset = p.symbol("runqueues") or 0
    found: set[int] = set()
    for cpu in range(cpus):
        try:
            base = k.pointer(k.symbol("__per_cpu_offset") + k.pointer_size * cpu)
            rq = (rq_offset + base) & k.word_max
            if rq_cpu is not None and k.u32(rq + rq_cpu) != cpu:
                walk.problems.append(f"runqueue: rq of CPU {cpu} names another CPU; skipped")
                continue
            current = k.pointer(rq + p.offset("rq", "curr"))
        except MemoryReadError:
            walk.problems.append(f"runqueue: rq of CPU {cpu} unreadable; skipped")
            continue
        if current:
            found.add(current)
        queues = [(rq + timeline, 0)]
        seen: set[int] = set()
        while queues:
            root, depth = queues.pop()
            for node in _rb_nodes(k, root, seen, walk):
                entity = node - node_in_entity
                group = 0
                if my_q is not None:
                    try:
                        group = k.pointer(entity + my_q)
                    except MemoryReadError:
                        walk.problems.append(f"runqueue: entity {entity:#x} unreadable")
                        continue
                if not group:
                    found.add(node - entity_in_task)
                elif depth < MAX_GROUP_DEPTH:
                    queues.append((group + cfs_timeline, depth + 1))
            if len(found) > MAX_TASKS:
                walk.problems.append("runqueue: too many tasks; walk stopped")
                return found
    return found


def _rb_nodes(k: Kernel, root: int, seen: set[int], walk: Walk) -> list[int]:
    """The nodes of the rbtree whose ``rb_root`` is at ``root`` (any order), bounded."""
    left_at, right_at = (k.profile.offset("rb_node", f) for f in ("rb_left", "rb_right"))
    try:
        stack = [k.pointer(root)]
    except MemoryReadError:
        walk.problems.append(f"runqueue: tree root {root:#x} unreadable")
        return []
    out = []
    while stack and len(seen) < MAX_TASKS:
        node = stack.pop()
        if not node:
            continue
        if node in seen:
            walk.problems.append(f"runqueue: node {node:#x} reached twice; not followed")
            continue
        seen.add(node)
        try:
            left, right = k.pointer(node + left_at), k.pointer(node + right_at)
        except MemoryReadError:
            walk.problems.append(f"runqueue: node {node:#x} unreadable")
            continue
        out.append(node)
        stack += [left, right]
    return out
