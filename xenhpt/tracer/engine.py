"""The tracer's engine: filters, pairs entry with exit per task, decodes, keeps the tree.

It does not know where trap records come from (gdbstub, LibVMI, a replayed recording,
an in-VMM plugin) nor where results go (a :class:`Sink`). Pairing is by task (the
``task_struct`` address), not by vCPU: a call that blocks while other tasks run on
that vCPU still finds its entry when it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import MemoryReadError
from ..linux.process_tree import ProcessTree
from ..linux.tasks import Task
from ..syscalls.decode import Decoder
from ..syscalls.memory import read_cstring, read_words
from ..syscalls.table import SyscallTable, Template
from .containers import ContainerCache
from .records import ProcessEvent, ReadMemory, SyscallRecord, TaskIdentity, TrapRecord

# Calls that never come back to the caller when they succeed (or at all).
NO_RETURN = frozenset({"exit", "exit_group"})
FORK_CALLS = frozenset({"fork", "vfork", "clone", "clone3"})
EXEC_CALLS = frozenset({"execve", "execveat"})
CLONE_THREAD = 0x0001_0000
PR_SET_NAME = 15


class Sink(Protocol):
    def syscall(self, record: SyscallRecord) -> None: ...

    def process_event(self, event: ProcessEvent) -> None: ...


class CallFilter:
    """Which calls and which tasks are wanted (strace's -e trace=, -p, -f, plus --comm)."""

    def __init__(self, numbers: dict[str, set[int]] | None = None, pids: set[int] | None = None,
                 comm: bytes | None = None, follow: bool = False) -> None:
        self.numbers = numbers
        self.pids = set(pids) if pids is not None else None
        self.comm = comm
        self.follow = follow
        self.followed: set[int] = set()  # descendants adopted with -f
        self.paused = False  # (xenhpt control pause): no new call is wanted meanwhile

    def wants_call(self, abi: str, nr: int) -> bool:
        if self.paused:
            return False
        return self.numbers is None or nr in self.numbers.get(abi, ())

    def wants_task(self, task: TaskIdentity) -> bool:
        if task.pid in self.followed:
            return True
        if self.follow and task.ppid in self.followed:
            # A child whose first call came before its parent's fork returned (another
            # vCPU ran it first): strace -f follows a child from its birth, so do we.
            self.followed.add(task.pid)
            return True
        if self.pids is not None and task.pid not in self.pids:
            return False
        if self.comm is not None and task.comm != self.comm:
            return False
        if self.follow:
            self.followed.add(task.pid)  # its children are followed from their first call
        return True

    def forked(self, parent: TaskIdentity, child_pid: int) -> None:
        if self.follow and self.wants_task(parent):
            self.followed.add(child_pid)


@dataclass
class _Pending:
    entry: TrapRecord
    name: str
    state: Any
    clone_flags: int = 0
    unreadable_at_entry: bool = False  # some argument memory could not be read then


@dataclass
class EngineStats:
    entries: int = 0  # entry traps handed to the engine
    captured: int = 0  # calls that passed the filter
    emitted: int = 0  # records handed to the sink
    unpaired_exits: int = 0  # exits with no entry (trace began mid-call, fork children)
    unfinished: int = 0  # calls still in the kernel when the trace ended
    by_mechanism: dict[str, int] = field(default_factory=dict)


class SyscallEngine:
    def __init__(self, decoder: Decoder, sink: Sink, call_filter: CallFilter | None = None,
                 tree: ProcessTree | None = None) -> None:
        self.decoder = decoder
        self.sink = sink
        self.filter = call_filter or CallFilter()
        self.tree = tree
        self.tables = {abi: SyscallTable.load(abi) for abi in ("x86_64", "i386")}
        self.pending: dict[int, _Pending] = {}
        self.stats = EngineStats()
        # Set by the caller to attach each record's container facts (read once per task).
        self.containers: ContainerCache | None = None

    # -- input ---------------------------------------------------------------------------

    def feed(self, record: TrapRecord) -> bool:
        """Handle one record of a capture source, whatever its kind (the one way in, so a
        recording sees everything). True if the engine now waits for the call's exit
        (an entry) or took the record (a refresh)."""
        if record.kind == "entry":
            return self._entry(record)
        if record.kind == "exit":
            self._exit(record)
            return False
        if record.kind == "refresh":
            return self._refresh(record)
        raise ValueError(f"unknown trap record kind {record.kind!r}")

    def _entry(self, record: TrapRecord) -> bool:
        """A call's entry; True if the engine now waits for its exit."""
        self.stats.entries += 1
        abi = record.abi or "x86_64"
        if not self.filter.wants_call(abi, record.nr) or not self.filter.wants_task(record.task):
            return False
        self.stats.captured += 1
        key = record.mechanism or "?"
        self.stats.by_mechanism[key] = self.stats.by_mechanism.get(key, 0) + 1
        stale = self.pending.pop(record.task.task, None)
        if stale is not None:  # its exit was never seen (lost trap): keep it, unfinished
            self._emit_unfinished(stale)
        if self.containers is not None:
            # Read the task's container facts now, while it surely exists (a live guest
            # waits at this trap): a call still in the kernel when the trace ends is
            # emitted after the guest is detached, from what was read here.
            self.containers.of(record.task)
        template = self.tables[abi].by_number(record.nr) or Template.unknown(abi, record.nr)
        read = record.read or _unreadable
        failures: list[int] = []
        if record.reads_live:
            read = _noting_failures(read, failures)
        state = self.decoder.entry(template, record.args, read,
                                   stack_pointer=record.stack_pointer)
        name = state.name  # socketcall(2, ...) is decoded, and named, as connect(...)
        pending = _Pending(record, name, state, unreadable_at_entry=bool(failures))
        if name == "clone3" and record.args:
            pending.clone_flags = (read_words(read, record.args[0], 1, 8) or [0])[0]
        elif name == "clone" and record.args:
            pending.clone_flags = record.args[0]
        if name in NO_RETURN:
            self._emit(pending, None, record.ts, finished=True)
            if self.containers is not None:
                self.containers.forget(record.task.task)
            if name == "exit_group" or record.task.tid == record.task.pid:
                self._process_event("exit", record.ts, record.task.pid, record.task.ppid,
                                    record.task.comm, {"status": record.args[0] if record.args
                                                       else 0})
            return False
        self.pending[record.task.task] = pending
        return True

    def _refresh(self, record: TrapRecord) -> bool:
        """Decode an exec in flight again, now that the kernel has copied its arguments.

        A static binary's string literals sit in pages that fork did not map in the child;
        at the call they are unreadable, and by the exit the old address space is gone. A
        capture that stops in ``bprm_execve`` (the kernel has faulted the strings in, the
        old program still stands) hands the engine a ``refresh`` record with a reader for
        that moment.
        """
        pending = self.pending.get(record.task.task)
        if pending is None or pending.name not in EXEC_CALLS:
            return False
        self._decode_entry_again(pending, record.read or _unreadable)
        pending.unreadable_at_entry = False
        return True

    def _decode_entry_again(self, pending: _Pending, read: ReadMemory) -> None:
        entry = pending.entry
        abi = entry.abi or "x86_64"
        template = self.tables[abi].by_number(entry.nr) or Template.unknown(abi, entry.nr)
        pending.state = self.decoder.entry(template, entry.args, read,
                                           stack_pointer=entry.stack_pointer)

    def _exit(self, record: TrapRecord) -> None:
        pending = self.pending.pop(record.task.task, None)
        if pending is None:
            # Expected for tasks the filter drops; for wanted ones it is a fork child's
            # first return, or a call that was in flight when the trace began.
            if self.filter.wants_task(record.task):
                self.stats.unpaired_exits += 1
            return
        if record.nr not in (pending.entry.nr, -1) and not self._same_call(pending, record.nr):
            # Another call's exit: the entry we hold was lost in between. Keep both honest.
            self._emit_unfinished(pending)
            self.stats.unpaired_exits += 1
            return
        if (pending.unreadable_at_entry and record.reads_live and record.read is not None
                and pending.name not in EXEC_CALLS):  # (an exec's exit sees the new program)
            # A page the caller had not touched yet (a fresh static binary's literal):
            # the kernel faulted it in during the call, so the exit can read it, as the
            # capture plugin does with its second copy at the exit.
            self._decode_entry_again(pending, record.read)
        ret = record.ret
        self._emit(pending, ret, record.ts, finished=True, read=record.read)
        entry = pending.entry
        if ret is None or ret < 0:
            return
        if pending.name in FORK_CALLS and ret > 0 and not pending.clone_flags & CLONE_THREAD:
            self.filter.forked(entry.task, ret)
            if self.tree is not None:
                self.tree.fork(entry.task.pid, ret, entry.task.comm)
            self._process_event("fork", record.ts, ret, entry.task.pid, entry.task.comm,
                                {"call": pending.name})
        elif (pending.name == "prctl" and ret == 0 and entry.args[:1] == (PR_SET_NAME,)
              and entry.task.tid == entry.task.pid):
            # A main thread renamed itself (busybox applets re-exec /proc/self/exe, then
            # take their name this way): the tree shows what ps would show.
            # The kernel keeps the first 15 bytes of the name given (TASK_COMM_LEN 16 with NUL).
            found = read_cstring(record.read or entry.read or _unreadable, entry.args[1], 15)
            if found is not None:
                comm = found[0]
                if self.tree is not None:
                    self.tree.exec(entry.task.pid, comm)
                self._process_event("rename", record.ts, entry.task.pid, entry.task.ppid,
                                    comm, {"old_comm": entry.task.comm})
        elif pending.name in EXEC_CALLS and ret == 0:
            # The exit trap reads the task again: its comm is already the new program's.
            if self.tree is not None:
                self.tree.exec(entry.task.pid, record.task.comm)
            self._process_event("exec", record.ts, entry.task.pid, entry.task.ppid,
                                record.task.comm, {"old_comm": entry.task.comm})

    def reconcile(self, tasks: list[Task], ts: float, complete: bool = False) -> int:
        """Take the deaths the call stream did not show from the kernel's task list.

        Each process gone from the list ends in the tree and gets an ``exit`` event
        (``"seen": "task list"``: no exit call was traced for it). ``complete`` also takes
        the processes the stream never showed (see :meth:`ProcessTree.reconcile`).
        """
        if self.tree is None:
            return 0
        gone = self.tree.reconcile(tasks, complete)
        for pid, ppid, comm in gone:
            self.sink.process_event(ProcessEvent("exit", ts, pid, ppid, comm,
                                                 {"seen": "task list"}))
        return len(gone)

    def _same_call(self, pending: _Pending, nr: int) -> bool:
        """Exec into a binary of the other ABI rewrites orig_ax to that ABI's number for
        the same call (set_personality_ia32 sets it to the i386 execve): still ours."""
        return any(getattr(table.by_number(nr), "name", None) == pending.name
                   for table in self.tables.values())

    def finish(self) -> None:
        """The trace ends: every call still in the kernel is reported as unfinished. The
        guest is detached by now (its memory may be unmapped, or gone): such a call's
        container facts are the ones already read for its task, else null."""
        if self.containers is not None:
            self.containers.detach()
        for pending in list(self.pending.values()):
            self._emit_unfinished(pending)
        self.pending.clear()

    # -- output --------------------------------------------------------------------------

    def _emit_unfinished(self, pending: _Pending) -> None:
        self.stats.unfinished += 1
        self._emit(pending, None, None, finished=False)

    def _emit(self, pending: _Pending, ret: int | None, exit_ts: float | None,
              finished: bool, read: Any = None) -> None:
        entry = pending.entry
        if ret is None:
            decoded = self.decoder.no_exit(pending.state)
        else:
            decoded = self.decoder.exit(pending.state, ret, read or entry.read or _unreadable)
            # As strace shows it: -1 for a failed call, the error itself in errno.
            ret = -1 if decoded.errno else decoded.ret
        duration = (exit_ts - entry.ts) * 1e6 if exit_ts is not None and ret is not None else None
        self.stats.emitted += 1
        container = self.containers.of(entry.task) if self.containers is not None else None
        self.sink.syscall(SyscallRecord(
            ts=entry.ts, vcpu=entry.vcpu, pid=entry.task.pid, tid=entry.task.tid,
            ppid=entry.task.ppid, comm=entry.task.comm, abi=entry.abi or "x86_64",
            mechanism=entry.mechanism, nr=entry.nr, name=pending.name, args=entry.args,
            decoded=decoded.text, ret=ret, ret_text=decoded.ret_text, errno=decoded.errno,
            duration_us=duration, finished=finished, container=container))

    def _process_event(self, kind: str, ts: float, pid: int, ppid: int, comm: bytes,
                       detail: dict[str, object]) -> None:
        if kind == "exit" and self.tree is not None:
            self.tree.exit(pid)
        self.sink.process_event(ProcessEvent(kind, ts, pid, ppid, comm, detail))


def _noting_failures(read: ReadMemory, failures: list[int]) -> ReadMemory:
    def noted(address: int, size: int) -> bytes:
        try:
            return read(address, size)
        except MemoryReadError:
            failures.append(address)
            raise
    return noted


def _unreadable(address: int, size: int) -> bytes:
    raise MemoryReadError(address, "no guest memory attached to this record")


