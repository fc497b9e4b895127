"""The monitor ring a dead tracer leaves on a Xen domain, and how to take it down.

A LibVMI monitor registers a vm_event ring with Xen. When the process dies (SIGKILL, a
crash) nobody disables it: Xen keeps the ring and the domain's monitor settings, any
later monitor is refused ("vm_event is (or was) active on this domain", EBUSY), and the
domain pauses the tracer held stay counted (the lab saw a domain left ``--p---``).

Worse, a vCPU that hit a trap and sent its (synchronous) event waits for the answer:
Xen paused it with ``vm_event_vcpu_pause`` (its ``vm_event_pause_count``), and only a
response carrying ``VM_EVENT_FLAG_VCPU_PAUSED`` unpauses it (``vm_event_resume``).
``xc_monitor_disable`` does *not*: ``vm_event_disable`` wakes only the vCPUs blocked for
room in the ring, frees the ring and resets the monitor flags. So a guardian that just
disabled the ring left the domU frozen for good (Xen lab, SIGKILL check: the busy domU
never ran again; ``xl list`` shows no ``p``, because it is the vCPU that is paused, not
the domain). The dead tracer's ring page cannot be reached any more (libxenctrl took it
out of the guest's physmap when the ring was enabled), so the answer goes on a fresh
ring: enable one, put on it one response per vCPU (``vcpu_id``, ``VCPU_PAUSED``, nothing
else), have Xen read it (``xc_monitor_resume``), disable it. Xen checks a response only
against the vCPU's own pause count: a vCPU that was not waiting ignores it. The vCPU
then runs the instruction at its trap address again, whose original byte the caller
has put back first.

Only the guardian of a tracer that died, or a tracer that has just repaired a dead
tracer's bytes, calls this: a ring that belongs to a monitor still alive (DRAKVUF,
another xenhpt) must be left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import struct
from typing import Any

from ...errors import XenhptError

_LIBRARY_NAMES = ("libxenctrl.so", "libxenctrl.so.4.17")
PAGE_SIZE = 4096
# public/io/ring.h: a shared ring page starts with req_prod, req_event, rsp_prod,
# rsp_event (4 x uint32), 4 private bytes and 44 of padding; the entries follow.
RING_HEADER = struct.Struct("<IIII")
RING_ENTRIES = 64
# public/vm_event.h: a response starts with version, flags, reason, vcpu_id (uint32 each).
RESPONSE_HEAD = struct.Struct("<IIII")
VM_EVENT_FLAG_VCPU_PAUSED = 1 << 0
# More vCPUs than a domain can have (XEN_LEGACY_MAX_VCPUS is 32; HVM allows 128).
MAX_VCPUS = 512


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
        lib.xc_monitor_enable.restype = ctypes.c_void_p
        lib.xc_monitor_enable.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                          ctypes.POINTER(ctypes.c_uint32)]
        lib.xc_monitor_resume.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.xc_vm_event_get_version.argtypes = [ctypes.c_void_p]
        lib.xc_domain_unpause.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        return lib
    raise XenhptError("libxenctrl not found: cannot take down a dead tracer's monitor ring")


def _munmap(address: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.munmap(address, PAGE_SIZE)


# Pauses a tracer can hold at once are few (one per nested pause); more is not ours.
MAX_UNPAUSES = 256


def unpause_ring_page(vcpu: int, version: int) -> bytes:
    """A monitor ring page, as the consumer side writes it, holding one response and no
    request: "vCPU ``vcpu`` may go on" (``VCPU_PAUSED``, no other flag: no registers
    set, no emulation), in vm_event interface ``version``.

    Xen reads responses only when told to (``xc_monitor_resume``, or an event-channel
    kick that is never sent here), so the page is written whole before that."""
    page = bytearray(PAGE_SIZE)
    # req_prod 0, req_event 1, rsp_prod 1, rsp_event 1 (SHARED_RING_INIT, one response)
    RING_HEADER.pack_into(page, 0, 0, 1, 1, 1)
    RESPONSE_HEAD.pack_into(page, RING_ENTRIES, version, VM_EVENT_FLAG_VCPU_PAUSED, 0, vcpu)
    return bytes(page)


def answer_waiting_vcpus(lib: Any, handle: Any, domid: int, vcpus: int) -> None:
    """Unpause the vCPUs of ``domid`` still waiting on a dead monitor's answer (the module
    doc): for each vCPU a fresh ring with one ``VCPU_PAUSED`` response, read by Xen, then
    disabled. The dead ring must be gone already."""
    version = lib.xc_vm_event_get_version(handle)
    if version <= 0:
        raise XenhptError(f"xc_vm_event_get_version failed ({version})")
    for vcpu in range(min(max(vcpus, 1), MAX_VCPUS)):
        port = ctypes.c_uint32()
        ring = lib.xc_monitor_enable(handle, domid, ctypes.byref(port))
        if not ring:
            raise XenhptError(f"cannot open a monitor ring on domain {domid} to release "
                              f"vCPU {vcpu} (errno {ctypes.get_errno()})")
        try:
            ctypes.memmove(ring, unpause_ring_page(vcpu, version), PAGE_SIZE)
            if lib.xc_monitor_resume(handle, domid) != 0:
                raise XenhptError(f"xc_monitor_resume({domid}) failed "
                                  f"(errno {ctypes.get_errno()})")
        finally:
            lib.xc_monitor_disable(handle, domid)
            _munmap(ring)


def release_stale_monitor(domid: int, vcpus: int = 1, *, lib: Any = None) -> int:
    """Disable the vm_event monitor ring of ``domid``, release the vCPUs that waited on it
    (see the module doc for when), then drop every pause of the domain; how many pauses
    there were.

    Xen counts a controller's pauses per domain, not per process: those of a tracer killed
    while it held the domain paused (handling a trap, arming) stay forever. They cannot be
    told apart from an administrator's ``xl pause``, so all are dropped: a guardian acts
    only for a tracer that died, and a domain left paused is the freeze it exists to undo.
    """
    lib = lib or _libxenctrl()
    handle = lib.xc_interface_open(None, None, 0)
    if not handle:
        raise XenhptError("cannot open libxenctrl (not in dom0, or not root?)")
    try:
        if lib.xc_monitor_disable(handle, domid) != 0:
            error = ctypes.get_errno()
            if error not in (0, 22):  # EINVAL: no ring was left (nothing to take down)
                raise XenhptError(f"xc_monitor_disable({domid}) failed (errno {error})")
        # Also when no ring was left: a vCPU stranded by an earlier disable waits as well.
        answer_waiting_vcpus(lib, handle, domid, vcpus)
        unpaused = 0
        while unpaused < MAX_UNPAUSES and lib.xc_domain_unpause(handle, domid) == 0:
            unpaused += 1  # EINVAL once the count is zero: the domain runs
        return unpaused
    finally:
        lib.xc_interface_close(handle)
