"""What every capture source offers the tracer: run until told, stop, say what it saw.

Two sources exist (breakpoints through the gdbstub or LibVMI, ``capture.py``; the QEMU
capture plugin, ``plugin_capture.py``); ``choose_source.py`` picks one for a target. Both
feed a :class:`~.engine.SyscallEngine` with :class:`~.records.TrapRecord` objects and end
with one :class:`CaptureReport`, so the command line treats them alike. A new source (an
exception trap, a replayed capture file) implements this protocol and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# How long a stopping source may keep decoding what it captured before it gives up and
# counts the rest (a second Ctrl-C gives up at once).
STOP_GRACE_SECONDS = 1.0


@dataclass
class CaptureReport:
    """A capture's counts at the end of a trace (the ``-v`` summary line)."""

    source: str  # "breakpoints" or "plugin"
    events: int = 0  # traps handled (breakpoints) or ring records read (plugin)
    unknown_task: int = 0  # events whose calling task could not be read
    dropped: int = 0  # records the source lost before we could read them (full ring)
    undecoded: int = 0  # records still waiting when the trace had to end
    late_reads: int = 0  # decoder reads the capture did not foresee (served live)
    confirmed: bool = True  # the source confirmed it stopped (False: the guest is gone?)
    error: str | None = None  # the source's own output failed (a capture file's disk)
    # Where the undecoded records are kept (a capture file for `xenhpt decode`), if any.
    kept: Path | None = None
    # Times capture stopped by itself mid-trace (the plugin's heartbeat timeout: the tracer
    # was starved of CPU) and was started again: calls in those gaps are missing.
    interruptions: int = 0


class CaptureSource(Protocol):
    # What is armed, for the -v line ("capture plugin", "12 trap points").
    description: str
    # The capture plugin's shared file, which a guardian must switch off should the
    # tracer die (None: the source leaves only traps that re-attaching removes).
    plugin_file: Path | None
    # The kernel's #UD entry when the source clears EFER.SCE (the exception trap), which a
    # guardian must set again should the tracer die (None: it does not touch it).
    fault_entry: int | None

    def start(self) -> None:
        """Begin capturing (from a paused guest; the guest runs once ``run`` is called)."""
        ...

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        """Capture these calls (per ABI; None: all) from the guest's next call on, without
        stopping the trace; BadUsage when this source cannot (and nothing changed)."""
        ...

    def refilter(self) -> None:
        """The engine's task filter (-p) changed: apply it where the source filters too
        (the plugin); BadUsage when this source cannot (the caller restores the filter)."""
        ...

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Capture and feed the engine until ``should_stop()`` (asked often) is true."""
        ...

    def stop(self, give_up: Callable[[], bool], grace: float | None = STOP_GRACE_SECONDS
             ) -> CaptureReport:
        """End capturing; no trap of ours is left (the target stays attached).

        What was captured is handed to the engine for at most ``grace`` seconds (None:
        all of it), or until ``give_up()``; the rest is counted as undecoded.
        """
        ...
