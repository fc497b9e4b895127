"""Process listings: ps table, JSON lines, pstree -p, the process_trace dump, psxview."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..linux.containers import Container
from ..linux.cross_view import COMPLETE_VIEWS, CrossView
from ..linux.process_tree import MAX_DEPTH, ProcessTree
from ..linux.tasks import Task
from . import containers as columns
from .escape import escape_text

# Container facts by task address; None: not asked for (--containers not given).
Containers = dict[int, Container] | None


def ps_record(task: Task, containers: Containers = None) -> dict[str, object]:
    """The JSON form of one ``ps`` row (addresses as hex strings: JSON numbers lose bits)."""
    record: dict[str, object] = {"pid": task.pid, "ppid": task.ppid, "tid": task.tid,
                                 "uid": task.uid, "comm": escape_text(task.comm),
                                 "task": f"{task.address:#x}"}
    if containers is not None:
        record.update(columns.container_fields(containers.get(task.address)))
    return record


def ps_json(tasks: Iterable[Task], containers: Containers = None) -> str:
    return "".join(json.dumps(ps_record(t, containers)) + "\n" for t in tasks)


def _cells(task: Task, containers: Containers) -> str:
    return "" if containers is None else columns.container_cells(containers.get(task.address))


def ps_table(tasks: Iterable[Task], threads: bool = False,
             containers: Containers = None) -> str:
    head = f"{'PID':>7} {'PPID':>7} " + (f"{'TID':>7} " if threads else "") + \
        f"{'UID':>6} {'TASK':<18}  " + ("" if containers is None else columns.HEAD) + "COMM"
    lines = [head]
    for t in tasks:
        tid = f"{t.tid:>7} " if threads else ""
        lines.append(f"{t.pid:>7} {t.ppid:>7} {tid}{t.uid:>6} {t.address:#018x}  "
                     f"{_cells(t, containers)}{escape_text(t.comm)}")
    return "\n".join(lines) + "\n"


def _label(tree: ProcessTree, pid: int, containers: Containers = None) -> str:
    label = f"{escape_text(tree.comm(pid))}({pid})"
    if containers is not None:
        label += columns.container_label(containers.get(tree.node(pid).get("task", 0)))
    return label


def _pstree_block(tree: ProcessTree, pid: int, seen: set[int], depth: int,
                  containers: Containers) -> list[str]:
    seen.add(pid)
    label = _label(tree, pid, containers)
    kids = [c for c in tree.children(pid) if c not in seen]
    if not kids or depth >= MAX_DEPTH:
        return [label]
    pad = " " * len(label)
    blocks = [_pstree_block(tree, c, seen, depth + 1, containers) for c in kids]
    if len(blocks) == 1:
        return [label + "───" + blocks[0][0]] + [pad + "   " + line for line in blocks[0][1:]]
    out = []
    for i, block in enumerate(blocks):
        if i == 0:
            joint, rest = "─┬─", " │ "
        elif i == len(blocks) - 1:
            joint, rest = " └─", "   "
        else:
            joint, rest = " ├─", " │ "
        out.append((label if i == 0 else pad) + joint + block[0])
        out += [pad + rest + line for line in block[1:]]
    return out


def pstree_text(tree: ProcessTree, containers: Containers = None) -> str:
    """The tree as ``pstree -p`` draws it, one block per root; with ``containers``, each
    name is followed by ``{pidns N pid M /cgroup}``."""
    seen: set[int] = set()
    lines: list[str] = []
    for root in tree.roots():
        if root not in seen:
            lines += _pstree_block(tree, root, seen, 0, containers)
    return "\n".join(lines) + "\n"


def pstree_json(tree: ProcessTree, containers: Containers = None) -> str:
    def node(pid: int, seen: set[int], depth: int) -> dict[str, object]:
        seen.add(pid)
        kids = [c for c in tree.children(pid) if c not in seen] if depth < MAX_DEPTH else []
        task = tree.node(pid).get("task", 0)
        out: dict[str, object] = {"pid": pid, "comm": escape_text(tree.comm(pid)),
                                  "task": f"{task:#x}"}
        if containers is not None:
            out.update(columns.container_fields(containers.get(task)))
        out["children"] = [node(c, seen, depth + 1) for c in kids]
        return out

    seen: set[int] = set()
    return json.dumps([node(r, seen, 0) for r in tree.roots() if r not in seen], indent=1) + "\n"


def process_trace_text(tree: ProcessTree) -> str:
    """The Xen HPT tool's dump: root first, then every task with its links and child count."""
    lines = [f"{'TASK':<18}  {'PARENT':<18}  {'PID':>7}  {'CHILDREN':>8}  NAME"]
    for pid, depth in tree.walk():
        node = tree.node(pid)
        lines.append(f"{node.get('task', 0):#018x}  {node.get('parent', 0):#018x}  {pid:>7}  "
                     f"{len(tree.children(pid)):>8}  {'  ' * min(depth, 40)}"
                     f"{escape_text(node.get('comm', b'?'))}")
    return "\n".join(lines) + "\n"


def _mark(found: bool, view: str) -> str:
    return "yes" if found else "NO" if view in COMPLETE_VIEWS else "-"


def psxview_table(view: CrossView, containers: Containers = None) -> str:
    """One row per process, a column per view (yes/NO), ``!`` where a complete view misses
    it; the runqueue column is yes or ``-`` (a sleeping process is on no runqueue)."""
    head = f"{'PID':>7} {'PPID':>7} {'TASK':<18}  " + \
        ("" if containers is None else columns.HEAD) + f"{'COMM':<16} " + \
        " ".join(f"{name:>8}" for name in view.views)
    lines = [head]
    for row in view.rows:
        t = row.task
        marks = " ".join(f"{_mark(row.found[name], name):>{max(8, len(name))}}"
                         for name in view.views)
        lines.append(f"{t.pid:>7} {t.ppid:>7} {t.address:#018x}  {_cells(t, containers)}"
                     f"{escape_text(t.comm):<16} "
                     f"{marks}" + ("  !" if row.flagged else ""))
    flagged = sum(row.flagged for row in view.rows)
    lines.append(f"{len(view.rows)} processes, {flagged} missing from a view")
    return "\n".join(lines) + "\n"


def psxview_json(view: CrossView, containers: Containers = None) -> str:
    return "".join(json.dumps({**ps_record(row.task, containers), "found": row.found,
                               "flagged": row.flagged}) + "\n" for row in view.rows)
