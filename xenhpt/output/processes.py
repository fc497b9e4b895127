"""Process listings: ps table, JSON lines, pstree -p, the process_trace dump, psxview."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..linux.cross_view import VIEWS, CrossView
from ..linux.process_tree import MAX_DEPTH, ProcessTree
from ..linux.tasks import Task
from .escape import escape_text


def ps_record(task: Task) -> dict[str, object]:
    """The JSON form of one ``ps`` row (addresses as hex strings: JSON numbers lose bits)."""
    return {"pid": task.pid, "ppid": task.ppid, "tid": task.tid, "uid": task.uid,
            "comm": escape_text(task.comm), "task": f"{task.address:#x}"}


def ps_json(tasks: Iterable[Task]) -> str:
    return "".join(json.dumps(ps_record(t)) + "\n" for t in tasks)


def ps_table(tasks: Iterable[Task], threads: bool = False) -> str:
    head = f"{'PID':>7} {'PPID':>7} " + (f"{'TID':>7} " if threads else "") + \
        f"{'UID':>6} {'TASK':<18}  COMM"
    lines = [head]
    for t in tasks:
        tid = f"{t.tid:>7} " if threads else ""
        lines.append(f"{t.pid:>7} {t.ppid:>7} {tid}{t.uid:>6} {t.address:#018x}  "
                     f"{escape_text(t.comm)}")
    return "\n".join(lines) + "\n"


def _label(tree: ProcessTree, pid: int) -> str:
    return f"{escape_text(tree.comm(pid))}({pid})"


def _pstree_block(tree: ProcessTree, pid: int, seen: set[int], depth: int) -> list[str]:
    seen.add(pid)
    label = _label(tree, pid)
    kids = [c for c in tree.children(pid) if c not in seen]
    if not kids or depth >= MAX_DEPTH:
        return [label]
    pad = " " * len(label)
    blocks = [_pstree_block(tree, c, seen, depth + 1) for c in kids]
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


def pstree_text(tree: ProcessTree) -> str:
    """The tree as ``pstree -p`` draws it, one block per root."""
    seen: set[int] = set()
    lines: list[str] = []
    for root in tree.roots():
        if root not in seen:
            lines += _pstree_block(tree, root, seen, 0)
    return "\n".join(lines) + "\n"


def pstree_json(tree: ProcessTree) -> str:
    def node(pid: int, seen: set[int], depth: int) -> dict[str, object]:
        seen.add(pid)
        kids = [c for c in tree.children(pid) if c not in seen] if depth < MAX_DEPTH else []
        return {"pid": pid, "comm": escape_text(tree.comm(pid)),
                "task": f"{tree.node(pid).get('task', 0):#x}",
                "children": [node(c, seen, depth + 1) for c in kids]}

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


def psxview_table(view: CrossView) -> str:
    """One row per process, a column per view (yes/NO), ``!`` where a view misses it."""
    head = f"{'PID':>7} {'PPID':>7} {'TASK':<18}  {'COMM':<16} " + \
        " ".join(f"{name:>8}" for name in VIEWS)
    lines = [head]
    for row in view.rows:
        t = row.task
        marks = " ".join(f"{'yes' if row.found[name] else 'NO':>8}" for name in VIEWS)
        lines.append(f"{t.pid:>7} {t.ppid:>7} {t.address:#018x}  {escape_text(t.comm):<16} "
                     f"{marks}" + ("  !" if row.flagged else ""))
    flagged = sum(row.flagged for row in view.rows)
    lines.append(f"{len(view.rows)} processes, {flagged} missing from a view")
    return "\n".join(lines) + "\n"


def psxview_json(view: CrossView) -> str:
    return "".join(json.dumps({**ps_record(row.task), "found": row.found,
                               "flagged": row.flagged}) + "\n" for row in view.rows)
