"""The guest's process tree as a networkx graph: seeded from the task list, kept live.

Nodes are process ids (pid 0 is the idle task, the root); each node carries the
process's ``comm``, ``task`` address, ``parent`` task address and ``uid``. Edges go
from parent to child. The tracer updates it from fork/clone/execve/exit records.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from .tasks import Task

ROOT = 0
# Deeper than this is not a real process tree (hostile or corrupt memory).
MAX_DEPTH = 512


class ProcessTree:
    def __init__(self) -> None:
        self.graph = nx.DiGraph()

    @classmethod
    def from_tasks(cls, tasks: list[Task]) -> ProcessTree:
        tree = cls()
        for task in tasks:
            tree.graph.add_node(task.pid, comm=task.comm, task=task.address,
                                parent=task.parent_address, uid=task.uid, alive=True)
        for task in tasks:
            if task.pid != ROOT:
                tree._link(task.ppid, task.pid)
        return tree

    def _link(self, ppid: int, pid: int) -> None:
        for old in list(self.graph.predecessors(pid)):
            self.graph.remove_edge(old, pid)
        if ppid != pid and ppid in self.graph:
            self.graph.add_edge(ppid, pid)

    # -- live updates (from the syscall stream) ------------------------------------------

    def fork(self, ppid: int, pid: int, comm: bytes, task: int = 0) -> None:
        parent = self.graph.nodes.get(ppid, {})
        self.graph.add_node(pid, comm=comm, task=task, parent=parent.get("task", 0),
                            uid=parent.get("uid", -1), alive=True)
        if ppid not in self.graph:
            self.graph.add_node(ppid, comm=b"?", task=0, parent=0, uid=-1, alive=True)
        self._link(ppid, pid)

    def exec(self, pid: int, comm: bytes) -> None:
        if pid in self.graph:
            self.graph.nodes[pid]["comm"] = comm

    def exit(self, pid: int) -> None:
        """A process ended: its children are re-parented to init, as the kernel does."""
        if pid not in self.graph:
            return
        for child in list(self.graph.successors(pid)):
            self._link(1 if pid != 1 else ROOT, child)
        self.graph.remove_node(pid)

    # -- reading -------------------------------------------------------------------------

    def children(self, pid: int) -> list[int]:
        return sorted(self.graph.successors(pid))

    def comm(self, pid: int) -> bytes:
        return self.graph.nodes[pid].get("comm", b"?")

    def roots(self) -> list[int]:
        """The idle task, then any process whose parent is unknown (orphaned by a bad link)."""
        roots = [n for n in self.graph if self.graph.in_degree(n) == 0]
        return sorted(roots, key=lambda n: (n != ROOT, n))

    def walk(self) -> Iterator[tuple[int, int]]:
        """(pid, depth) in pre-order from each root; cycles and depth are bounded."""
        seen: set[int] = set()
        for root in self.roots() + sorted(self.graph):
            if root in seen:
                continue
            stack = [(root, 0)]
            while stack:
                pid, depth = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                yield pid, depth
                if depth < MAX_DEPTH:
                    stack += [(c, depth + 1) for c in reversed(self.children(pid))]
