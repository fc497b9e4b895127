"""The process tree's live updates, and its networkx view staying in step with them."""

from __future__ import annotations

from xenhpt.linux.process_tree import ProcessTree
from xenhpt.linux.tasks import Task


def task(pid: int, ppid: int, comm: bytes) -> Task:
    return Task(address=0xFFFF_8880_0000_0000 + pid * 0x1000, pid=pid, tid=pid, comm=comm,
                state=0, parent_address=0, ppid=ppid, uid=0, mm=0, pgd=0, start_time=0,
                flags=0)


def seeded() -> ProcessTree:
    return ProcessTree.from_tasks([task(0, 0, b"swapper/0"), task(1, 0, b"init"),
                                   task(50, 1, b"sh"), task(51, 50, b"sleep")])


def test_fork_exec_exit_update_the_tree_and_the_networkx_graph_alike() -> None:
    tree = seeded()
    graph = tree.graph  # the graph exists from here on and must follow every change
    tree.fork(50, 60, b"sh")
    tree.exec(60, b"cat")
    assert tree.children(50) == [51, 60] and tree.comm(60) == b"cat"
    assert set(graph.successors(50)) == {51, 60} and graph.nodes[60]["comm"] == b"cat"
    tree.exit(50)  # its children go to init, as the kernel re-parents them
    assert 50 not in tree and tree.children(1) == [51, 60]
    assert 50 not in graph and set(graph.successors(1)) == {51, 60}


def test_graph_built_late_matches_the_tree() -> None:
    tree = seeded()
    tree.fork(1, 70, b"daemon")
    graph = tree.graph
    assert sorted(graph.edges) == [(0, 1), (1, 50), (1, 70), (50, 51)]


def test_a_parent_cycle_in_guest_memory_cannot_loop_the_walk() -> None:
    tree = ProcessTree.from_tasks([task(0, 0, b"swapper/0"), task(5, 6, b"a"),
                                   task(6, 5, b"b")])
    assert sorted(pid for pid, _ in tree.walk()) == [0, 5, 6]
