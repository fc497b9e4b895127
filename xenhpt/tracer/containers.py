"""The container facts of the tasks a trace sees, read once per task.

A call's record carries its task's pid namespace, pid there and cgroup (``linux/
containers.py``). Reading them costs a handful of guest reads, too many to pay on every
call of a busy trace, and they do not change while a task lives: its active pid
namespace is fixed at fork (``unshare``/``setns`` change only its children's), and its
cgroup changes only when something moves it (the first one seen is kept: said in
docs/tracing.md). So they are read the first time a task makes a call and kept.

The key is the task's ``task_struct`` address with its tid and, where the capture
source knows it (breakpoints read the whole task), its start time: a ``task_struct``
freed and reused for a new task comes back with another tid and start time, so it is
read afresh. The plugin's records carry no start time (0 there); the tid still tells a
reused ``task_struct`` apart unless the pid counter wrapped onto the same slab slot in
between, and an ``exit_group`` seen in the stream forgets the task at once.
"""

from __future__ import annotations

from ..errors import MemoryReadError
from ..linux.containers import Container, ContainerReader
from .records import TaskIdentity

# Tasks remembered at most; past it the oldest half is dropped (a fork bomb must not
# grow the tracer without bound).
MAX_TASKS = 1 << 16


class ContainerCache:
    """``of(identity)``: the task's :class:`Container`, read on its first call only."""

    def __init__(self, reader: ContainerReader) -> None:
        self.reader = reader
        self._known: dict[tuple[int, int, int], Container] = {}
        self.reads = 0  # tasks read from guest memory (the tests check it is per task)
        self._detached = False

    def detach(self) -> None:
        """The guest is no longer attached (the trace ended, or it is gone): from now on
        answer from what was read, and None fields for a task never read."""
        self._detached = True

    def of(self, task: TaskIdentity) -> Container | None:
        if not task.task:
            return None  # the capture could not tell who called
        key = (task.task, task.tid, task.start_time)
        found = self._known.get(key)
        if found is None and self._detached:
            return Container(None, None, None)
        if found is None:
            if len(self._known) >= MAX_TASKS:
                for old in list(self._known)[: MAX_TASKS // 2]:
                    del self._known[old]
            try:
                found = self.reader.read(task.task)
            except MemoryReadError:  # (read() returns None fields; this is belt and braces)
                found = Container(None, None, None)
            self.reads += 1
            if found.pidns is not None:  # an unreadable task is tried again next call
                self._known[key] = found
        return found

    def forget(self, task_address: int) -> None:
        """A task ended: its ``task_struct`` may be reused for another."""
        for key in [k for k in self._known if k[0] == task_address]:
            del self._known[key]
