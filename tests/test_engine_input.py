"""The engine's one way in: entry, exit and an exec's refresh all arrive through ``feed``,
so a recording holds every one of them and its replay decodes what the live run did."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.linux.containers import Container
from xenhpt.syscalls.decode import Decoder
from xenhpt.syscalls.table import SyscallTable
from xenhpt.tracer.containers import ContainerCache
from xenhpt.tracer.engine import CallFilter, SyscallEngine
from xenhpt.tracer.recording import RecordingEngine, load_recording, replay
from xenhpt.tracer.records import SyscallRecord, TaskIdentity, TrapRecord

SHELL = TaskIdentity(task=0xFFFF_8880_0100_0000, pid=77, tid=77, ppid=1, comm=b"sh")
PATH_ADDRESS = 0x40_1000


class Collect:
    def __init__(self) -> None:
        self.calls: list[SyscallRecord] = []

    def syscall(self, record: SyscallRecord) -> None:
        self.calls.append(record)

    def process_event(self, event: object) -> None:
        pass


def _not_yet_mapped(address: int, size: int) -> bytes:
    raise MemoryReadError(address, "not faulted in yet")


def _mapped(address: int, size: int) -> bytes:
    data = b"/bin/true\0"
    offset = address - PATH_ADDRESS
    if 0 <= offset < len(data):
        return (data[offset:] + bytes(size))[:size]
    raise MemoryReadError(address, "outside the test page")


def _exec_records() -> list[TrapRecord]:
    execve = SyscallTable.load("x86_64").by_name("execve")
    assert execve is not None
    return [
        TrapRecord("entry", 1.0, 0, SHELL, "x86_64", "syscall", execve.nr,
                   (PATH_ADDRESS, 0, 0), read=_not_yet_mapped),
        TrapRecord("refresh", 1.1, 0, SHELL, None, None, -1, read=_mapped),
        TrapRecord("exit", 1.2, 0, SHELL, None, None, execve.nr, ret=0, read=_not_yet_mapped),
    ]


def test_a_refresh_reads_an_exec_path_that_was_unreadable_at_entry() -> None:
    sink = Collect()
    engine = SyscallEngine(Decoder(32), sink)
    for record in _exec_records():
        engine.feed(record)
    assert [c.decoded for c in sink.calls] == ['execve("/bin/true", NULL, NULL)']


def test_a_recording_holds_the_refresh_and_replays_the_same_line(tmp_path: Path) -> None:
    path = tmp_path / "exec.rec"
    live = Collect()
    with path.open("w") as out:
        engine = RecordingEngine(out, Decoder(32), live)
        for record in _exec_records():
            engine.feed(record)
        engine.finish()
    recording = load_recording(path)
    assert [r.kind for r, _ in recording.records] == ["entry", "refresh", "exit"]
    replayed = Collect()
    replay(recording, replayed)
    assert [c.decoded for c in replayed.calls] == [c.decoded for c in live.calls]
    assert live.calls[0].decoded.startswith('execve("/bin/true"')


def test_an_unknown_record_kind_is_a_bug_not_a_silent_drop() -> None:
    engine = SyscallEngine(Decoder(32), Collect())
    with pytest.raises(ValueError):
        engine.feed(TrapRecord("exit-group", 0.0, 0, SHELL, None, None, 0))


def test_memory_unreadable_at_entry_is_read_again_at_a_live_exit() -> None:
    """Breakpoint mode: a path in a page not faulted in at the call (readlink in a fresh
    static binary) is read at the exit, when the kernel has touched it."""
    readlink = SyscallTable.load("x86_64").by_name("readlink")
    assert readlink is not None
    sink = Collect()
    engine = SyscallEngine(Decoder(32), sink)
    engine.feed(TrapRecord("entry", 1.0, 0, SHELL, "x86_64", "syscall", readlink.nr,
                           (PATH_ADDRESS, 0x50_0000, 64), read=_not_yet_mapped,
                           reads_live=True))
    engine.feed(TrapRecord("exit", 1.1, 0, SHELL, None, None, readlink.nr, ret=-22,
                           read=_mapped, reads_live=True))
    assert [c.decoded for c in sink.calls] == ['readlink("/bin/true", 0x500000, 64)']


def test_a_copy_made_at_the_call_is_not_read_again() -> None:
    """The plugin's regions are what the call saw; its exit does not redo the entry."""
    readlink = SyscallTable.load("x86_64").by_name("readlink")
    assert readlink is not None
    sink = Collect()
    engine = SyscallEngine(Decoder(32), sink)
    engine.feed(TrapRecord("entry", 1.0, 0, SHELL, "x86_64", "syscall", readlink.nr,
                           (PATH_ADDRESS, 0x50_0000, 64), read=_not_yet_mapped))
    engine.feed(TrapRecord("exit", 1.1, 0, SHELL, None, None, readlink.nr, ret=-22,
                           read=_mapped))
    assert [c.decoded for c in sink.calls] == ['readlink(0x401000, 0x500000, 64)']


def _getpid(task: TaskIdentity, ts: float) -> list[TrapRecord]:
    getpid = SyscallTable.load("x86_64").by_name("getpid")
    assert getpid is not None
    return [TrapRecord("entry", ts, 1, task, "x86_64", "syscall", getpid.nr, ()),
            TrapRecord("exit", ts + 0.01, 1, task, None, None, getpid.nr, ret=task.pid)]


def test_with_follow_a_child_is_traced_from_its_first_call_even_before_the_fork_returns(
        ) -> None:
    """On two vCPUs the child can run before its parent's clone returns to the parent."""
    clone = SyscallTable.load("x86_64").by_name("clone")
    assert clone is not None
    child = TaskIdentity(task=0xFFFF_8880_0200_0000, pid=78, tid=78, ppid=SHELL.pid, comm=b"sh")
    grandchild = TaskIdentity(task=0xFFFF_8880_0300_0000, pid=79, tid=79, ppid=78, comm=b"cat")
    stranger = TaskIdentity(task=0xFFFF_8880_0400_0000, pid=80, tid=80, ppid=1, comm=b"cat")
    sink = Collect()
    engine = SyscallEngine(Decoder(32), sink, CallFilter(pids={SHELL.pid}, follow=True))
    engine.feed(TrapRecord("entry", 1.0, 0, SHELL, "x86_64", "syscall", clone.nr,
                           (0x1200011, 0, 0, 0, 0)))
    for record in _getpid(child, 1.1) + _getpid(grandchild, 1.2) + _getpid(stranger, 1.3):
        engine.feed(record)
    engine.feed(TrapRecord("exit", 1.4, 0, SHELL, None, None, clone.nr, ret=child.pid))
    assert [(c.pid, c.name) for c in sink.calls] == [(78, "getpid"), (79, "getpid"),
                                                      (77, "clone")]


def test_an_exec_is_not_read_again_at_its_exit_where_the_new_program_stands() -> None:
    """The refresh read the arguments; the exit's memory is the new program's."""
    records = _exec_records()
    for record in records:
        record.reads_live = True
    sink = Collect()
    engine = SyscallEngine(Decoder(32), sink)
    for record in records:
        engine.feed(record)
    assert [c.decoded for c in sink.calls] == ['execve("/bin/true", NULL, NULL)']


class _OneContainer:
    """Stands for ContainerReader: every task is in one container; counts the reads."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, task_address: int) -> Container:
        self.reads += 1
        return Container(4026532114, 3, "/box")


@pytest.mark.parametrize("recorded", [False, True])
def test_a_call_unfinished_at_the_end_carries_the_facts_read_at_its_entry(
        tmp_path: Path, recorded: bool) -> None:
    """CI, twice: a JSON trace ended with a wait4 still in the kernel; its container facts
    were read only at the emit, after the guest was detached (null, or a crash of the
    recording engine, which had no ``detach``). They are read at the entry now."""
    sink = Collect()
    reader = _OneContainer()
    with open(tmp_path / "rec.jsonl", "w") as out:
        engine = (RecordingEngine(out, Decoder(32), sink) if recorded
                  else SyscallEngine(Decoder(32), sink))
        engine.containers = ContainerCache(reader)  # type: ignore[arg-type]
        wait4 = SyscallTable.load("x86_64").by_name("wait4")
        assert wait4 is not None
        engine.feed(TrapRecord("entry", 1.0, 0, SHELL, "x86_64", "syscall", wait4.nr,
                               (-1, 0, 0, 0), read=_mapped))
        engine.finish()
    [call] = sink.calls
    assert not call.finished and call.container is not None
    assert call.container.pidns == 4026532114 and reader.reads == 1
