"""The container facts in the tracer: read once per task, read again for a new task in a
reused task_struct, and shown in JSON always (null when unknown) when asked."""

from __future__ import annotations

from xenhpt.linux.containers import Container
from xenhpt.output.containers import container_cells, container_fields, container_label
from xenhpt.tracer.containers import ContainerCache
from xenhpt.tracer.records import TaskIdentity


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


def test_json_has_all_three_fields_even_when_unknown_and_escapes_the_cgroup() -> None:
    assert container_fields(None) == {"pidns": None, "ns_pid": None, "cgroup": None}
    fields = container_fields(Container(4026531836, 1, "/evil\x1b[2J"))
    assert fields["cgroup"] == "/evil\\x1b[2J"
    assert "\x1b" not in container_cells(Container(1, 2, "/evil\x1b")) + \
        container_label(Container(1, 2, "/evil\x1b"))
    assert container_label(None) == "{pidns ? pid ?}"
