"""What flows through the tracer: raw trap data in, syscall records and process events out.

A *capture source* (gdbstub or LibVMI breakpoints, a recording being replayed, later an
in-VMM plugin) produces :class:`TrapRecord` objects; the engine pairs and decodes them
into :class:`SyscallRecord` objects. Sources never decode, outputs never read the guest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..linux.containers import Container

# Read the calling task's user memory while the trap is being handled.
ReadMemory = Callable[[int, int], bytes]


@dataclass(frozen=True)
class TaskIdentity:
    """Who made a call, read from the task_struct at the trap (not guessed from CR3)."""

    task: int  # task_struct address: the pairing key (unique among live tasks)
    pid: int
    tid: int
    ppid: int
    comm: bytes
    start_time: int = 0  # ns since boot, where the source read it (0: not known)


@dataclass
class TrapRecord:
    """One entry into or exit from a system call, as a capture source saw it."""

    kind: str  # "entry", "exit", or "refresh" (an exec's arguments, readable again)
    ts: float  # host wall-clock seconds
    vcpu: int
    task: TaskIdentity
    abi: str | None  # "x86_64" / "i386" (None at an exit point that cannot tell)
    mechanism: str | None  # "syscall", "sysenter", "int80" (None when not known exactly)
    nr: int
    args: tuple[int, ...] = ()
    ret: int | None = None
    read: ReadMemory | None = None  # valid only during the engine call
    stack_pointer: int | None = None  # the user's rsp at entry (rt_sigreturn's frame)
    # ``read`` reaches the guest's memory as it is now (a guest stopped at a breakpoint),
    # not a copy made at the call: what was unreadable at entry may be read at the exit.
    reads_live: bool = False


@dataclass
class SyscallRecord:
    """One system call: entry and exit joined, decoded, attributed."""

    ts: float
    vcpu: int
    pid: int
    tid: int
    ppid: int
    comm: bytes
    abi: str
    mechanism: str | None
    nr: int
    name: str
    args: tuple[int, ...]
    decoded: str  # strace-style call text, e.g. openat(AT_FDCWD, "/x", O_RDONLY)
    ret: int | None  # None: no return (exit_group, trace ended first, ...)
    ret_text: str  # "3", "-1 ENOENT (No such file or directory)", "?"
    errno: str | None
    duration_us: float | None
    finished: bool = True  # False: the trace ended while the call was still in the kernel
    container: Container | None = None  # pid namespace, pid there, cgroup (when asked)


@dataclass
class ProcessEvent:
    """A change of the process tree seen in the stream: fork, exec or exit."""

    kind: str  # "fork", "exec", "exit"
    ts: float
    pid: int
    ppid: int
    comm: bytes
    detail: dict[str, object] = field(default_factory=dict)
