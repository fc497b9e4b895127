"""The guest's process tree: seeded from the task list, kept live from the syscall stream.

Nodes are process ids (pid 0, the idle task, is the root); each carries the process's
``comm``, ``task`` address, ``parent`` task address and ``uid``. The tree is available
as a networkx ``DiGraph`` (:attr:`ProcessTree.graph`, parent → child edges), which the
live tracer keeps up to date for graph queries. networkx costs ~70 ms to import, more
than a whole ``pstree`` of a snapshot, so the plain maps below answer the renderers, and
the graph is built (then mirrored on every change) the first time someone asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .tasks import Task

if TYPE_CHECKING:
    import networkx as nx

ROOT = 0
# Deeper than this is not a real process tree (hostile or corrupt memory).
MAX_DEPTH = 512


class ProcessTree:
    def __init__(self) -> None:
        self._nodes: dict[int, dict[str, Any]] = {}
        self._parent: dict[int, int] = {}
        self._children: dict[int, set[int]] = {}
        self._graph: nx.DiGraph | None = None

    @classmethod
    def from_tasks(cls, tasks: list[Task]) -> ProcessTree:
        tree = cls()
        for task in tasks:
            tree._add(task.pid, comm=task.comm, task=task.address,
                      parent=task.parent_address, uid=task.uid)
        for task in tasks:
            if task.pid != ROOT:
                tree._link(task.ppid, task.pid)
        return tree

    @property
    def graph(self) -> nx.DiGraph:
        """The tree as a networkx DiGraph, kept in step with every later change."""
        if self._graph is None:
            import networkx

            graph = networkx.DiGraph()
            graph.add_nodes_from(self._nodes.items())
            graph.add_edges_from((p, c) for c, p in self._parent.items())
            self._graph = graph
        return self._graph

    # -- changes (each mirrored into the graph once it exists) ---------------------------

    def _add(self, pid: int, **attributes: Any) -> None:
        self._nodes[pid] = attributes
        self._children.setdefault(pid, set())
        if self._graph is not None:
            self._graph.add_node(pid, **attributes)

    def _link(self, ppid: int, pid: int) -> None:
        old = self._parent.pop(pid, None)
        if old is not None:
            self._children[old].discard(pid)
            if self._graph is not None:
                self._graph.remove_edge(old, pid)
        if ppid != pid and ppid in self._nodes:
            self._parent[pid] = ppid
            self._children[ppid].add(pid)
            if self._graph is not None:
                self._graph.add_edge(ppid, pid)

    def fork(self, ppid: int, pid: int, comm: bytes, task: int = 0) -> None:
        if ppid not in self._nodes:
            self._add(ppid, comm=b"?", task=0, parent=0, uid=-1)
        parent = self._nodes[ppid]
        self._add(pid, comm=comm, task=task, parent=parent.get("task", 0),
                  uid=parent.get("uid", -1))
        self._link(ppid, pid)

    def exec(self, pid: int, comm: bytes) -> None:
        if pid in self._nodes:
            self._nodes[pid]["comm"] = comm
            if self._graph is not None:
                self._graph.nodes[pid]["comm"] = comm

    def exit(self, pid: int) -> None:
        """A process ended: its children are re-parented to init, as the kernel does."""
        if pid not in self._nodes:
            return
        for child in list(self._children.get(pid, ())):
            self._link(1 if pid != 1 else ROOT, child)
        parent = self._parent.pop(pid, None)
        if parent is not None:
            self._children[parent].discard(pid)
        del self._nodes[pid]
        self._children.pop(pid, None)
        if self._graph is not None:
            self._graph.remove_node(pid)

    def reconcile(self, tasks: list[Task], complete: bool) -> list[tuple[int, int, bytes]]:
        """Follow the kernel's task list (processes: thread-group leaders).

        Returns (pid, ppid, comm) of each process removed.

        The syscall stream shows ``exit``/``exit_group`` only: a task killed by a signal,
        the threads torn down by another thread's ``execve`` and a reaped zombie leave no
        call behind. A process the list no longer holds (or holds under another
        ``task_struct``: the pid was reused) has ended. With ``complete``, processes the
        list has and the tree lacks (kernel threads, forks the trace did not see) are added
        and every name and parent is taken from the list, so that the tree equals ``ps``.
        """
        alive = {task.pid: task for task in tasks}
        gone = []
        for pid, node in list(self._nodes.items()):
            task = alive.get(pid)
            if task is None or (node.get("task") and task.address != node["task"]):
                gone.append((pid, self._parent.get(pid, -1), node.get("comm", b"?")))
        for pid, _, _ in gone:
            self.exit(pid)
        if complete:
            for task in tasks:
                if task.pid not in self._nodes:
                    self._add(task.pid, comm=task.comm, task=task.address,
                              parent=task.parent_address, uid=task.uid)
                else:
                    node = self._nodes[task.pid]
                    node.update(comm=task.comm, task=task.address,
                                parent=task.parent_address, uid=task.uid)
                    if self._graph is not None:
                        self._graph.nodes[task.pid].update(node)
            for task in tasks:
                if task.pid != ROOT and self._parent.get(task.pid) != task.ppid:
                    self._link(task.ppid, task.pid)
        return gone

    # -- reading -------------------------------------------------------------------------

    def __contains__(self, pid: int) -> bool:
        return pid in self._nodes

    def node(self, pid: int) -> dict[str, Any]:
        return self._nodes[pid]

    def children(self, pid: int) -> list[int]:
        return sorted(self._children.get(pid, ()))

    def comm(self, pid: int) -> bytes:
        return self._nodes[pid].get("comm", b"?")

    def roots(self) -> list[int]:
        """The idle task, then any process whose parent is unknown (orphaned by a bad link)."""
        roots = [n for n in self._nodes if n not in self._parent]
        return sorted(roots, key=lambda n: (n != ROOT, n))

    def walk(self) -> Iterator[tuple[int, int]]:
        """(pid, depth) in pre-order from each root; cycles and depth are bounded."""
        seen: set[int] = set()
        for root in self.roots() + sorted(self._nodes):
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
