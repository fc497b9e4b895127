"""The guardian: a small process that undoes the tracer's traps if the tracer dies.

A tracer that ends normally removes its traps itself. One that is killed (SIGKILL, the
OOM killer, a crash, a closed terminal) cannot, and what it leaves holds the guest:
QEMU keeps the breakpoints of a debugger that went away and leaves the VM stopped where
it was (the next breakpoint hit stops it for good); the capture plugin would go on
capturing until its heartbeat times out; on Xen a leftover INT3 byte crashes the guest
kernel at its next system call.

So the tracer starts a guardian first: a separate Python process in a session of its own
(a Ctrl-C or a hang-up of the tracer's terminal does not reach it), which reads the
tracer's instructions from a pipe. The pipe closes when the tracer exits, however it
exits. If the last instruction was ``done`` the tracer cleaned up and the guardian just
ends; otherwise it acts at once:

- ``plugin PATH``: switch the capture plugin off through its shared file;
- ``spool PATH``: the live plugin trace's spool file, named in the guardian's line so that
  the calls a killed tracer captured can still be decoded;
- ``exception ADDRESS``: the exception trap cleared EFER.SCE (``--method exception``): before
  anything resumes the VM, set it again on every vCPU and rewind a vCPU left at the #UD
  entry ADDRESS by a faulting ``syscall``, so that the call runs again for real;
- the target (always): attach again and detach. For QEMU's gdbstub a detach (``D``)
  removes every breakpoint of the stub and resumes the VM; for Xen, opening the domain
  puts back every byte recorded in the breakpoint state file
  (``vmi/xen/breakpoints.py``), the dead tracer's vm_event monitor ring is taken down
  (``vmi/xen/monitor.py``: it would refuse every later monitor), the vCPUs that hit a
  trap and wait for its answer are answered on a fresh ring (disabling the ring does
  not unpause them: the guest would stay frozen), and closing it resumes the domain.

The guardian knows no Linux and holds no connection while the tracer lives, so it costs
nothing during a trace; it needs well under a second to act (docs/tracing.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class Guardian:
    """The tracer's handle on its guardian process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls, target_spec: str) -> Guardian:
        """Start a guardian for the live target ``target_spec`` (as given on the CLI)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "xenhpt.cli.guardian", target_spec, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        return cls(process)

    def _say(self, line: str) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(line.encode() + b"\n")
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the guardian is gone: nothing more it could do for us

    def watch_plugin(self, capture_file: Path) -> None:
        """The capture plugin behind ``capture_file`` is about to capture for us."""
        self._say(f"plugin {capture_file}")

    def keep_file(self, path: Path) -> None:
        """The trace's records are spooled to ``path``: name it should the tracer die."""
        self._say(f"spool {path}")

    def watch_exception_trap(self, fault_entry: int) -> None:
        """EFER.SCE is about to be cleared; ``fault_entry`` is the kernel's #UD entry."""
        self._say(f"exception {fault_entry:#x}")

    def dismiss(self) -> None:
        """The tracer removed its traps itself: the guardian ends without acting."""
        self._say("done")
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass


def _stand_guard(target_spec: str, tracer_pid: int) -> int:
    """The guardian process: wait for the pipe to close, then act unless dismissed."""
    plugin_files: list[Path] = []
    fault_entries: list[int] = []
    spools: list[Path] = []
    last = ""
    for raw in sys.stdin.buffer:
        last = raw.decode("utf-8", "surrogateescape").rstrip("\n")
        if last.startswith("plugin "):
            plugin_files.append(Path(last[len("plugin "):]))
        elif last.startswith("exception "):
            fault_entries.append(int(last[len("exception "):], 16))
        elif last.startswith("spool "):
            spools.append(Path(last[len("spool "):]))
    if last == "done":
        return 0
    problems = []
    for path in plugin_files:
        problems += _plugin_off(path)
    for fault_entry in fault_entries:
        problems += _undo_exception_trap(target_spec, fault_entry)
    problems += _detach(target_spec)
    outcome = ("removed its traps and left the guest running" if not problems
               else "could not undo everything: " + "; ".join(problems))
    for spool in spools:
        if spool.exists():
            outcome += (f"; the calls it captured are kept in {spool} "
                        f"('xenhpt decode {spool}' prints them)")
    try:
        print(f"xenhpt: guardian: the tracer (pid {tracer_pid}) ended without cleaning up; "
              f"{outcome}", file=sys.stderr, flush=True)
    except OSError:
        pass  # nobody reads the tracer's stderr any more
    return 0 if not problems else 1


def _plugin_off(path: Path) -> list[str]:
    from ..errors import XenhptError
    from ..vmi.qemu.plugin_channel import PluginChannel

    try:
        channel = PluginChannel(path)
    except XenhptError as exc:
        return [str(exc)]
    try:
        if not channel.disable(timeout=1.0):
            return ["the capture plugin did not confirm the stop (it stops by itself when "
                    "the heartbeat times out)"]
        return []
    finally:
        channel.close()


def _undo_exception_trap(target_spec: str, fault_entry: int) -> list[str]:
    from ..errors import XenhptError
    from .targets import open_target

    try:
        target = open_target(target_spec, attach_clean=False)  # nothing resumes it first
    except XenhptError as exc:
        return [f"{target_spec}: {exc}"]
    try:
        target.undo_exception_trap(fault_entry)  # type: ignore[attr-defined]
    except XenhptError as exc:
        return [f"{target_spec}: EFER.SCE not restored: {exc}"]
    finally:
        target.close()
    return []


def _detach(target_spec: str) -> list[str]:
    from ..errors import XenhptError
    from .targets import open_target

    problems = []
    try:
        target = open_target(target_spec)
    except XenhptError as exc:
        return [f"{target_spec}: {exc}"]
    try:
        # A hypervisor monitor ring (Xen's vm_event) outlives its process: take it down,
        # or the vCPUs that hit a trap wait forever and no new tracer can attach.
        target.release_stale_monitor()
    except XenhptError as exc:
        problems.append(f"{target_spec}: {exc}")
    finally:
        target.close()
    return problems


if __name__ == "__main__":
    sys.exit(_stand_guard(sys.argv[1], int(sys.argv[2])))
