"""Which capture source traces a target, built for a selection of calls.

The one place that knows both sources: the QEMU capture plugin when the target has one
(or the user asks for it), breakpoints through the target's own traps otherwise, armed at
every entry stub for a full trace or at the selected calls' handlers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from ..errors import BadUsage
from ..linux.kernel import Kernel
from ..linux.tasks import Task
from ..vmi.qemu.plugin_channel import PluginChannel
from ..vmi.qemu.target import QemuTarget
from ..vmi.target import Target
from .capture import BreakpointCapture
from .capture_file import SavingCapture, file_header
from .engine import SyscallEngine
from .exception_capture import ExceptionCapture
from .plugin_capture import PluginCapture, build_config
from .source import CaptureSource
from .trappoints import full_plan, selected_handlers

MODES = ("auto", "plugin", "breakpoints", "exception")


def plugin_file_for(mode: str, target_name: str, target: Target, capture_file: Path | None,
                    saving: bool = False) -> Path | None:
    """The capture plugin's shared file this trace will use, or None for breakpoints.

    ``auto`` takes the plugin when the target has one (the lab says so) or the user named
    its file; ``plugin`` insists on it, as does ``saving`` (only the plugin's records can
    be saved); ``breakpoints`` and ``exception`` never use it.
    """
    if mode in ("breakpoints", "exception"):
        if saving:
            raise BadUsage("--save saves the capture plugin's records: it cannot go with "
                           f"--capture {mode}")
        return None
    found = capture_file or target.capture_file
    if (mode == "plugin" or saving) and found is None:
        why = " (--save needs one)" if saving else ""
        raise BadUsage(f"{target_name} has no capture plugin{why}: start the lab with "
                       "'xenhpt lab up --capture plugin', or give --capture-file")
    return found


def choose_source(target: Target, kernel: Kernel, engine: SyscallEngine,
                  numbers: dict[str, set[int]] | None, string_limit: int,
                  plugin_file: Path | None, save_to: BinaryIO | None = None,
                  tasks: list[Task] | None = None, exception: bool = False) -> CaptureSource:
    """The capture source for this trace (not started): ``numbers`` is the selection per
    ABI (None: every call), ``string_limit`` is ``-s``; ``save_to``: save the plugin's
    records there for a later ``xenhpt decode`` instead of decoding them (``tasks``, the
    task list the trace started from, goes in the file for the process tree);
    ``exception``: make ``syscall`` fault instead of breaking at its entry stub."""
    if exception:
        return ExceptionCapture(target, kernel, engine)
    if plugin_file is not None and not isinstance(target, QemuTarget):
        raise BadUsage("the capture plugin runs in QEMU: this target is not a QEMU guest")
    if save_to is not None and plugin_file is not None:
        return SavingCapture(PluginChannel(plugin_file), kernel, engine, target, string_limit,
                             numbers, tasks or [], save_to)
    if plugin_file is not None:
        return PluginCapture(PluginChannel(plugin_file), kernel, engine, target,
                             build_config(kernel, numbers, string_limit, engine.filter),
                             string_limit,
                             file_header(kernel, string_limit, engine, tasks or []))
    points = None if numbers is None else selected_handlers(kernel, numbers)
    if points is None:  # every call (a selection with an unnamed handler: then filtered)
        points = full_plan(kernel)
    return BreakpointCapture(target, kernel, points, engine)
