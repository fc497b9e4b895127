"""Our decoder against the host's strace on the same program, call by call.

A tiny ptrace loop (x86_64 host, via ctypes) stops a shell at every system call and hands the
registers and ``/proc/PID/mem`` to the decoder, exactly as the hypervisor tracer does with guest
registers and memory. strace runs the same command; both outputs, with addresses, pids and
random bytes normalised, must hold the same lines. Skipped where ptrace or strace is
unavailable.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.syscalls.decode import Decoder, EntryState
from xenhpt.syscalls.memory import ReadFn
from xenhpt.syscalls.table import SyscallTable, Template

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64"
    or shutil.which("strace") is None or not Path("/bin/sh").exists(),
    reason="needs an x86_64 Linux host with strace")

PTRACE_TRACEME, PTRACE_GETREGS, PTRACE_SYSCALL = 0, 12, 24
PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG = 0x4200, 0x4201
OPTIONS = 0x1 | 0x2 | 0x4 | 0x8 | 0x10  # TRACESYSGOOD, TRACEFORK, VFORK, CLONE, EXEC
__WALL = 0x40000000
_REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
         "rsp ss fs_base gs_base ds es fs gs").split()


class _Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in _REGS]


def _memory(pid: int) -> tuple[int, ReadFn]:
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)

    def read(address: int, size: int) -> bytes:
        try:
            data = os.pread(fd, size, address)
        except OSError:
            raise MemoryReadError(address) from None
        if len(data) < size:
            raise MemoryReadError(address)
        return data
    return fd, read


def _trace(argv: list[str]) -> list[str]:
    """Decoded lines of ``argv`` and its children (strace -f), via ptrace."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    table, decoder = SyscallTable.load("x86_64"), Decoder(32)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        null = os.open(os.devnull, os.O_RDWR)  # the same descriptors strace's child gets
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1024)
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.execv(argv[0], argv)
    os.waitpid(pid, 0)
    if libc.ptrace(PTRACE_SETOPTIONS, pid, None, ctypes.c_void_p(OPTIONS)) != 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.skip("ptrace is not permitted here")
    libc.ptrace(PTRACE_SYSCALL, pid, None, None)
    states: dict[int, EntryState] = {}
    memories: dict[int, tuple[int, ReadFn]] = {}
    lines: list[str] = []
    while True:
        try:
            wpid, status = os.waitpid(-1, __WALL)
        except ChildProcessError:
            break
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            if wpid in memories:
                os.close(memories.pop(wpid)[0])
            continue
        stop, event, deliver = os.WSTOPSIG(status), status >> 16, 0
        if stop == signal.SIGTRAP | 0x80:
            regs = _Regs()
            libc.ptrace(PTRACE_GETREGS, wpid, None, ctypes.byref(regs))
            if wpid not in memories:
                memories[wpid] = _memory(wpid)
            read = memories[wpid][1]
            if wpid in states:
                lines.append(decoder.exit(states.pop(wpid), regs.rax, read).line)
            else:
                template = (table.by_number(regs.orig_rax)
                            or Template.unknown("x86_64", regs.orig_rax))
                state = decoder.entry(template, [regs.rdi, regs.rsi, regs.rdx, regs.r10,
                                                 regs.r8, regs.r9], read, regs.rsp)
                if template.name in ("exit", "exit_group"):
                    lines.append(decoder.no_exit(state).line)
                else:
                    states[wpid] = state
        elif stop == signal.SIGTRAP and event == 4 and wpid in memories:
            os.close(memories.pop(wpid)[0])  # exec: a new address space
        elif stop != signal.SIGSTOP and stop != signal.SIGTRAP:
            deliver = stop
        libc.ptrace(PTRACE_SYSCALL, wpid, None, ctypes.c_void_p(deliver))
    return lines


_PID_CALLS = re.compile(r"^(getpid|getppid|gettid|set_tid_address|clone|clone3|fork|vfork|"
                        r"wait4|rt_sigreturn)\(")


def _normalise(line: str) -> str:
    line = re.sub(r" +=", " =", line)
    if line.startswith("rt_sigreturn("):  # returns whatever the interrupted call had
        line = re.sub(r"= .*$", "= RESTORED", line)
    line = re.sub(r"0x[0-9a-f]{5,}", "ADDR", line)
    line = re.sub(r'getrandom\("[^"]*"', 'getrandom("RANDOM"', line)
    line = re.sub(r"\[\d+\]", "[PID]", line)
    line = re.sub(r"^(wait4|kill)\(\d+", r"\1(PID", line)
    if _PID_CALLS.match(line):
        line = re.sub(r"= \d+$", "= PID", line)
    return line


def _strace(argv: list[str], out: Path) -> list[str]:
    subprocess.run(["strace", "-f", "-qq", "-s", "32", "-o", str(out), *argv], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    lines = []
    pending: dict[str, str] = {}
    for raw in out.read_text().splitlines():
        pid, _, line = raw.partition(" ")
        line = line.lstrip()
        if line.startswith(("+++", "---")):
            continue
        if line.endswith(" <unfinished ...>"):
            pending[pid] = line[:-len(" <unfinished ...>")]
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>(.*)$", line)
        if resumed:
            line = pending.pop(pid, "") + resumed.group(1)
        lines.append(line)
    return lines


def test_shell_session_decodes_like_strace(tmp_path: Path) -> None:
    script = (f"cd {tmp_path}; echo hello > x; cat x; cat nonexist; ls -l x >/dev/null; "
              "(umask 022; true); true | cat; exec 3<x; read line <&3")
    argv = ["/bin/sh", "-c", script]
    traced = _trace(argv)
    # Where SIGCHLD lands (and how many arrive) differs between runs, so the interrupted
    # calls are left out and the distinct lines compared, not their counts.
    ours = {_normalise(line) for line in traced if "ERESTART" not in line}
    theirs = {_normalise(line) for line in _strace(argv, tmp_path / "st")
              if "ERESTART" not in line}
    missing, extra = theirs - ours, ours - theirs
    assert not missing and not extra, (
        "strace printed, we did not:\n  " + "\n  ".join(sorted(missing)) +
        "\nwe printed, strace did not:\n  " + "\n  ".join(sorted(extra)))
    assert len(traced) > 100  # the shell, cat and ls really were traced
    assert any(line.startswith("execve(") for line in ours)
    assert any(line.startswith(("clone(", "vfork(", "fork(")) for line in ours)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_flags_times_and_unreadable_memory_decode_like_strace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/strace_printing.c: unknown flag bits, flag tables, a string and an argv that
    run into an unmapped page, utimensat/utimes/utime times, interval timers."""
    monkeypatch.setenv("TZ", "UTC")  # strace dates its comments in local time, we in UTC
    program = tmp_path / "strace_printing"
    subprocess.run(["cc", "-o", str(program), str(Path(__file__).with_name("strace_printing.c"))],
                   check=True, capture_output=True, timeout=120)
    ours = [_normalise(line) for line in _trace([str(program)])]
    theirs = [_normalise(line) for line in _strace([str(program)], tmp_path / "st")]
    assert sorted(ours) == sorted(theirs), (
        "strace printed, we did not:\n  " + "\n  ".join(sorted(set(theirs) - set(ours))) +
        "\nwe printed, strace did not:\n  " + "\n  ".join(sorted(set(ours) - set(theirs))))
    assert any(line.startswith("pipe2(ADDR, 0x1 /* O_??? */)") for line in ours)
    assert 'execve("/nonexist", ["/bin/true", "x", ... /* ADDR */], NULL)' in " ".join(ours)
