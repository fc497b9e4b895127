"""Which capture source traces a target, built for a selection of calls.

The one place that knows both sources: the QEMU capture plugin when the target has one
(or the user asks for it), breakpoints through the target's own traps otherwise, armed at
every entry stub for a full trace or at the selected calls' handlers only.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadUsage
from ..linux.kernel import Kernel
from ..syscalls.table import SyscallTable
from ..vmi.qemu.plugin_channel import PluginChannel
from ..vmi.target import Target
from .capture import BreakpointCapture
from .engine import SyscallEngine
from .plugin_capture import PluginCapture, build_config
from .source import CaptureSource
from .trappoints import TrapPoint, full_plan, selective_plan

MODES = ("auto", "plugin", "breakpoints")


def plugin_file_for(mode: str, target_name: str, target: Target, capture_file: Path | None
                    ) -> Path | None:
    """The capture plugin's shared file this trace will use, or None for breakpoints.

    ``auto`` takes the plugin when the target has one (the lab says so) or the user named
    its file; ``plugin`` insists on it; ``breakpoints`` never uses it.
    """
    if mode == "breakpoints":
        return None
    found = capture_file or target.capture_file
    if mode == "plugin" and found is None:
        raise BadUsage(f"{target_name} has no capture plugin: start the lab with 'xenhpt lab "
                       "up --capture plugin', or give --capture-file")
    return found


def choose_source(target: Target, kernel: Kernel, engine: SyscallEngine,
                  numbers: dict[str, set[int]] | None, string_limit: int,
                  plugin_file: Path | None) -> CaptureSource:
    """The capture source for this trace (not started): ``numbers`` is the selection per
    ABI (None: every call), ``string_limit`` is ``-s``."""
    if plugin_file is not None:
        return PluginCapture(PluginChannel(plugin_file), kernel, engine, target,
                             build_config(kernel, numbers, string_limit))
    points = full_plan(kernel) if numbers is None else _selective_points(kernel, numbers)
    return BreakpointCapture(target, kernel, points, engine)


def _selective_points(kernel: Kernel, numbers: dict[str, set[int]]) -> dict[int, TrapPoint]:
    """The selected calls' handlers (``__x64_sys_openat``...) as the tables name them."""
    entries = {}
    for abi, wanted in numbers.items():
        table = SyscallTable.load(abi)
        for nr in wanted:
            template = table.by_number(nr)
            if template is not None:
                entries[(abi, nr)] = template.entry
    return selective_plan(kernel, entries)
