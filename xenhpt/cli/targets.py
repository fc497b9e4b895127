"""Turn a TARGET argument into a backend: ``lab``, ``qemu:HOST:PORT``, ``xen:NAME``, a file."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadUsage, TargetUnreachable
from ..lab.machine import LabState
from ..vmi.qemu.target import QemuTarget
from ..vmi.target import Target

TARGET_HELP = "lab | qemu:HOST:PORT | xen:NAME|DOMID | a snapshot file (.raw, .elf, ...)"


def open_target(spec: str, attach_clean: bool = True) -> Target:
    """Open what ``spec`` names; raises a one-line XenhptError when it cannot.
    ``attach_clean=False``: a gdbstub keeps what a dead debugger left (the guardian)."""
    if spec == "lab":
        state = LabState.load()
        if not state.alive():
            raise TargetUnreachable("the lab's QEMU is not running: 'xenhpt lab up'")
        plugin = state.capture == "plugin" and state.capture_file
        return QemuTarget("127.0.0.1", state.gdb_port, ram_file=Path(state.ram_file),
                          description=f"lab (qemu:127.0.0.1:{state.gdb_port})",
                          capture_file=Path(state.capture_file) if plugin else None,
                          attach_clean=attach_clean)
    if spec.startswith("qemu:"):
        host, _, port = spec[5:].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadUsage(f"bad target {spec!r}: expected qemu:HOST:PORT, "
                           "PORT from 1 to 65535")
        return QemuTarget(host, int(port), attach_clean=attach_clean)
    if spec.startswith("xen:"):
        from ..vmi.xen.domain import open_xen

        return open_xen(spec[4:])
    path = Path(spec)
    if path.exists():
        from ..vmi.snapshot.target import open_snapshot

        return open_snapshot(path)
    raise BadUsage(f"unknown target {spec!r}: expected {TARGET_HELP}")
