"""Releasing what a killed tracer's monitor ring holds on a Xen domain (vmi/xen/monitor.py).

Xen's side is a stand-in for libxenctrl that keeps the order of calls and reads the ring
page the way ``vm_event_resume`` does; the page itself is real memory (mmap), as the
mapping xc_monitor_enable returns."""

from __future__ import annotations

import ctypes
import mmap
import struct

import pytest

from xenhpt.errors import XenhptError
from xenhpt.vmi.xen import monitor
from xenhpt.vmi.xen.monitor import (
    PAGE_SIZE,
    VM_EVENT_FLAG_VCPU_PAUSED,
    release_stale_monitor,
    unpause_ring_page,
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]


def responses_on(page: bytes) -> list[tuple[int, int, int]]:
    """(version, flags, vcpu_id) of each response Xen would pull: rsp_cons 0 .. rsp_prod."""
    _, _, rsp_prod, _ = struct.unpack_from("<IIII", page, 0)
    size = 384  # the entry size does not matter: a one-response ring uses entry 0 only
    assert rsp_prod <= 1
    return [struct.unpack_from("<IIII", page, 64 + i * size)[0:2]
            + struct.unpack_from("<IIII", page, 64 + i * size)[3:] for i in range(rsp_prod)]


class FakeXenctrl:
    """libxenctrl as far as monitor.py uses it; ``waiting`` are the vCPUs a dead monitor
    left paused (Xen's vm_event_pause_count), ``pauses`` the domain's controller pauses."""

    def __init__(self, vcpus_waiting: set[int], pauses: int = 0, ring: bool = True) -> None:
        self.waiting = set(vcpus_waiting)
        self.pauses = pauses
        self.ring = ring  # the dead tracer's ring is still there
        self.calls: list[str] = []
        self.mapped: int | None = None

    def xc_interface_open(self, *args):
        return 1

    def xc_interface_close(self, handle):
        self.calls.append("close")

    def xc_vm_event_get_version(self, handle):
        return 7

    def xc_monitor_disable(self, handle, domid):
        self.calls.append("disable")
        if not self.ring:
            ctypes.set_errno(22)
            return -1
        self.ring = False  # vm_event_disable: wakes no vCPU waiting for an answer
        return 0

    def xc_monitor_enable(self, handle, domid, port):
        assert not self.ring, "a second ring while one is enabled: Xen says EBUSY"
        self.ring = True
        self.calls.append("enable")
        self.mapped = _libc.mmap(None, PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE,
                                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        ctypes.memset(self.mapped, 0xAA, PAGE_SIZE)  # not necessarily a clean page
        return self.mapped

    def xc_monitor_resume(self, handle, domid):
        self.calls.append("resume")
        for version, flags, vcpu in responses_on(ctypes.string_at(self.mapped, PAGE_SIZE)):
            if version == 7 and flags & VM_EVENT_FLAG_VCPU_PAUSED:
                self.waiting.discard(vcpu)  # vm_event_vcpu_unpause, only if it waited
        return 0

    def xc_domain_unpause(self, handle, domid):
        if self.pauses == 0:
            return -1
        self.pauses -= 1
        return 0


def test_the_answer_page_is_an_empty_ring_with_one_vcpu_paused_response():
    page = unpause_ring_page(3, 7)
    assert len(page) == PAGE_SIZE
    req_prod, req_event, rsp_prod, rsp_event = struct.unpack_from("<IIII", page, 0)
    assert (req_prod, rsp_prod) == (0, 1) and req_event == rsp_event == 1
    assert struct.unpack_from("<IIII", page, 64) == (7, VM_EVENT_FLAG_VCPU_PAUSED, 0, 3)
    assert not any(page[80:])  # no register set, no emulation, nothing else


def test_a_vcpu_left_waiting_on_a_killed_tracers_ring_runs_again():
    """The freeze of the Xen lab's SIGKILL check: disabling the ring alone left the vCPU
    that had just hit an INT3 paused forever."""
    xen = FakeXenctrl(vcpus_waiting={1}, pauses=2)
    unpaused = release_stale_monitor(7, vcpus=2, lib=xen)
    assert xen.waiting == set()
    assert unpaused == 2 and xen.pauses == 0
    # the dead ring goes first; then, per vCPU, a fresh ring answered and disabled
    assert xen.calls == ["disable", *["enable", "resume", "disable"] * 2, "close"]
    assert not xen.ring


def test_vcpus_are_released_also_when_no_ring_was_left():
    xen = FakeXenctrl(vcpus_waiting={0}, ring=False)
    assert release_stale_monitor(7, vcpus=1, lib=xen) == 0
    assert xen.waiting == set() and not xen.ring


def test_a_ring_that_cannot_be_disabled_is_one_error():
    xen = FakeXenctrl(vcpus_waiting=set())
    xen.xc_monitor_disable = lambda handle, domid: (ctypes.set_errno(16), -1)[1]
    with pytest.raises(XenhptError, match="errno 16"):
        release_stale_monitor(7, vcpus=1, lib=xen)
    assert xen.calls[-1] == "close"


def test_the_vcpu_count_is_bounded():
    xen = FakeXenctrl(vcpus_waiting=set())
    release_stale_monitor(7, vcpus=10**9, lib=xen)
    assert xen.calls.count("enable") == monitor.MAX_VCPUS
