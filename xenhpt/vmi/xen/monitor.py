"""The monitor ring a dead tracer leaves on a Xen domain, and how to take it down.

A LibVMI monitor registers a vm_event ring with Xen. When the process dies (SIGKILL, a
crash) nobody disables it: Xen keeps the ring and the domain's monitor settings, every
vCPU that hit a trap before the bytes went back waits for an answer that never comes,
any later monitor is refused ("vm_event is (or was) active on this domain", EBUSY), and
the domain pauses the tracer held stay counted (the lab saw a domain left ``--p---``).
``xc_monitor_disable`` is the libxenctrl call that tears the ring down: Xen unpauses the
vCPUs blocked on it and resets the monitor flags. Only the guardian of a tracer that
died, or a tracer that has just repaired a dead tracer's bytes, calls it: a ring that
belongs to a monitor still alive (DRAKVUF, another xenhpt) must be left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob

from ...errors import XenhptError

_LIBRARY_NAMES = ("libxenctrl.so", "libxenctrl.so.4.17")


def _libxenctrl() -> ctypes.CDLL:
    candidates = [ctypes.util.find_library("xenctrl"), *_LIBRARY_NAMES,
                  *sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libxenctrl.so*"))]
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        lib.xc_interface_open.restype = ctypes.c_void_p
        lib.xc_interface_open.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        lib.xc_interface_close.argtypes = [ctypes.c_void_p]
        lib.xc_monitor_disable.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.xc_domain_unpause.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        return lib
    raise XenhptError("libxenctrl not found: cannot take down a dead tracer's monitor ring")


# Pauses a tracer can hold at once are few (one per nested pause); more is not ours.
MAX_UNPAUSES = 256


def release_stale_monitor(domid: int) -> int:
    """Disable the vm_event monitor ring of ``domid`` (see the module doc for when), then
    drop every pause of the domain; how many pauses there were.

    Xen counts a controller's pauses per domain, not per process: those of a tracer killed
    while it held the domain paused (handling a trap, arming) stay forever. They cannot be
    told apart from an administrator's ``xl pause``, so all are dropped: a guardian acts
    only for a tracer that died, and a domain left paused is the freeze it exists to undo.
    """
    lib = _libxenctrl()
    handle = lib.xc_interface_open(None, None, 0)
    if not handle:
        raise XenhptError("cannot open libxenctrl (not in dom0, or not root?)")
    try:
        if lib.xc_monitor_disable(handle, domid) != 0:
            error = ctypes.get_errno()
            if error not in (0, 22):  # EINVAL: no ring was left (nothing to take down)
                raise XenhptError(f"xc_monitor_disable({domid}) failed (errno {error})")
        unpaused = 0
        while unpaused < MAX_UNPAUSES and lib.xc_domain_unpause(handle, domid) == 0:
            unpaused += 1  # EINVAL once the count is zero: the domain runs
        return unpaused
    finally:
        lib.xc_interface_close(handle)
