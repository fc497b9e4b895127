"""The container facts: read from the task at its pid level and up the kernfs chain
(bounded, cycle-safe, refused on an old profile); in the tracer read once per task and
again for a new task in a reused task_struct; in JSON all three keys (null when unknown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenhpt.errors import ProfileError
from xenhpt.linux.containers import Container, ContainerReader
from xenhpt.output.containers import container_cells, container_fields, container_label
from xenhpt.tracer.containers import ContainerCache
from xenhpt.tracer.records import TaskIdentity

from .synthetic_kernel import SparseMemory, kernel, write_isf


class CountingReader:
    """Stands for ContainerReader: answers from a table and counts the reads."""

    def __init__(self) -> None:
        self.reads: list[int] = []

    def read(self, task_address: int) -> Container:
        self.reads.append(task_address)
        return Container(4026532114, len(self.reads), "/box")


def test_a_task_is_read_once_however_many_calls_it_makes() -> None:
    reader = CountingReader()
    cache = ContainerCache(reader)  # type: ignore[arg-type]
    task = TaskIdentity(0xFFFF888001000000, 7, 7, 1, b"sh", start_time=5)
    first = [cache.of(task) for _ in range(100)]
    assert reader.reads == [task.task]
    assert all(c == first[0] for c in first)


def test_a_reused_task_struct_is_read_again() -> None:
    reader = CountingReader()
    cache = ContainerCache(reader)  # type: ignore[arg-type]
    old = TaskIdentity(0xFFFF888001000000, 7, 7, 1, b"sh", start_time=5)
    new = TaskIdentity(0xFFFF888001000000, 9, 9, 1, b"sh", start_time=900)
    assert cache.of(old).ns_pid == 1 and cache.of(new).ns_pid == 2
    cache.forget(old.task)
    assert cache.of(new).ns_pid == 3


def test_an_unknown_caller_has_no_container_and_costs_no_read() -> None:
    reader = CountingReader()
    assert ContainerCache(reader).of(TaskIdentity(0, -1, -1, -1, b"?")) is None  # type: ignore[arg-type]
    assert reader.reads == []


def test_after_the_trace_detached_only_what_was_read_is_answered() -> None:
    """Calls still in the kernel when a trace ends are emitted after the guest is closed
    (CI: a JSON trace died reading a closed memory map there): known tasks keep their
    facts, a task never read gets null ones, and nothing is read."""
    reader = CountingReader()
    cache = ContainerCache(reader)  # type: ignore[arg-type]
    seen = TaskIdentity(0xFFFF888001000000, 7, 7, 1, b"sh", start_time=5)
    unseen = TaskIdentity(0xFFFF888002000000, 8, 8, 1, b"cat", start_time=6)
    known = cache.of(seen)
    cache.detach()
    assert cache.of(seen) == known
    assert cache.of(unseen) == Container(None, None, None)
    assert reader.reads == [seen.task]


def test_json_has_all_three_fields_even_when_unknown_and_escapes_the_cgroup() -> None:
    assert container_fields(None) == {"pidns": None, "ns_pid": None, "cgroup": None}
    fields = container_fields(Container(4026531836, 1, "/evil\x1b[2J"))
    assert fields["cgroup"] == "/evil\\x1b[2J"
    assert "\x1b" not in container_cells(Container(1, 2, "/evil\x1b")) + \
        container_label(Container(1, 2, "/evil\x1b"))
    assert container_label(None) == "{pidns ? pid ?}"


# -- ContainerReader on a synthetic kernel: what the views read, and hostile memory ---------

STRUCTS = {
    "task_struct": (0x100, {"thread_pid": (0x10, "ptr"), "group_leader": (0x18, "ptr"),
                            "cgroups": (0x20, "ptr")}),
    "pid": (0x80, {"level": (0x4, "u32"), "numbers": (0x40, ("array", 2))}),
    "upid": (16, {"nr": (0, "u32"), "ns": (8, "ptr")}),
    "pid_namespace": (0x100, {"ns": (0x80, ("struct", "ns_common"))}),
    "ns_common": (0x18, {"inum": (0x10, "u32")}),
    "css_set": (0x40, {"dfl_cgrp": (0x8, "ptr")}),
    "cgroup": (0x40, {"kn": (0x10, "ptr")}),
    "kernfs_node": (0x40, {"parent": (0x8, "ptr"), "name": (0x10, "ptr")}),
}
TASK, PID, NS, CSS, CGROUP = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
ROOT_KN, BOX_KN, INNER_KN, NAMES = 0x6000, 0x6100, 0x6200, 0x7000


def contained(tmp_path: Path, structs: dict = STRUCTS) -> tuple[SparseMemory, ContainerReader]:
    """A task at pid level 1 (pid 1 in namespace 4026532114) in cgroup /box/inner."""
    m = SparseMemory()
    m.u64(TASK + 0x10, PID)
    m.u64(TASK + 0x18, TASK)
    m.u64(TASK + 0x20, CSS)
    m.u32(PID + 0x4, 1)
    m.u32(PID + 0x40 + 16, 1)  # numbers[1].nr
    m.u64(PID + 0x40 + 16 + 8, NS)
    m.u32(NS + 0x80 + 0x10, 4026532114)
    m.u64(CSS + 0x8, CGROUP)
    m.u64(CGROUP + 0x10, INNER_KN)
    for node, parent, name in ((ROOT_KN, 0, b""), (BOX_KN, ROOT_KN, b"box"),
                               (INNER_KN, BOX_KN, b"inner\x1b")):
        m.u64(node + 0x8, parent)
        m.u64(node + 0x10, NAMES + node - ROOT_KN)
        m.write(NAMES + node - ROOT_KN, name + b"\0")
    isf = write_isf(tmp_path / "k.json", structs, {"init_task": TASK})
    return m, ContainerReader(kernel(m, isf))


def test_the_namespace_pid_and_cgroup_are_read_at_the_pids_level(tmp_path: Path) -> None:
    _, reader = contained(tmp_path)
    found = reader.read(TASK)
    assert (found.pidns, found.ns_pid, found.cgroup) == (4026532114, 1, "/box/inner\x1b")


def test_a_looping_or_unreadable_kernfs_chain_gives_the_known_tail(tmp_path: Path) -> None:
    memory, reader = contained(tmp_path)
    memory.u64(BOX_KN + 0x8, INNER_KN)  # box's parent is inner: a cycle
    assert reader.read(TASK).cgroup == "?/box/inner\x1b"
    memory.u64(BOX_KN + 0x8, 0xDEAD000)  # a parent that is not there
    assert reader.read(TASK).cgroup == "?/box/inner\x1b"


def test_an_absurd_level_or_unreadable_pid_leaves_the_pid_fields_unknown(tmp_path: Path) -> None:
    memory, reader = contained(tmp_path)
    memory.u32(PID + 0x4, 1000)
    assert (reader.read(TASK).pidns, reader.read(TASK).ns_pid) == (None, None)
    memory.u64(TASK + 0x10, 0xDEAD000)
    assert reader.read(TASK).ns_pid is None and reader.read(TASK).cgroup == "/box/inner\x1b"


def test_a_profile_without_the_fields_is_refused_in_one_line_naming_them(tmp_path: Path) -> None:
    old = dict(STRUCTS)
    old["task_struct"] = (0x100, {"cgroups": (0x20, "ptr")})  # before 4.19: no thread_pid
    with pytest.raises(ProfileError, match="task_struct.thread_pid, task_struct.group_leader"):
        contained(tmp_path, old)
