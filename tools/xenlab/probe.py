"""Inside the Xen lab's dom0: arm chosen kernel symbols in xen:lab and report every INT3.

    python3.11 /lab/probe.py SYMBOL[,SYMBOL...] SECONDS

Prints each symbol's virtual and physical address and bytes, every raw INT3 event the
target's callback sees (first 20), the traps handed out per address, then tears down and
prints whether the byte went back. Separates "events never arrive" from "handling breaks
the guest" (tools/xenlab/run.sh with XENLAB_STEPS).
"""

from __future__ import annotations

import sys
import time
from collections import Counter

from xenhpt.linux.kernel import Kernel
from xenhpt.linux.kpti import kernel_dtb
from xenhpt.vmi.xen.domain import open_xen


def main() -> None:
    symbols = sys.argv[1].split(",")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    target = open_xen("lab")
    target.pause()
    kernel = Kernel.open(target)
    print(f"probe: kernel slide {kernel.slide:#x} dtb {kernel.dtb:#x}", flush=True)
    regs = target.registers(0)
    print(f"probe: vcpu0 rip {regs['rip']:#x} cr3 {regs['cr3']:#x} cr4 {regs['cr4']:#x}",
          flush=True)
    seen: list[str] = []
    original = target._handle_trap

    def spy(event, int3=True):  # the raw event, before the target decides
        r = event.x86_regs
        if len(seen) < 20:
            seen.append(f"rip={int(r.rip):#x} rsp={int(r.rsp):#x} vcpu={int(event.vcpu_id)}"
                        f" armed={int(r.rip) in target.book.armed}")
            print("probe: event " + seen[-1], flush=True)
        response = original(event, int3)
        if len(seen) <= 20:
            print(f"probe:   -> reinject={getattr(event, 'reinject', None)} response={response} "
                  f"rip now {int(r.rip):#x}", flush=True)
        return response

    target._handle_trap = spy
    for name in symbols:
        address = kernel.symbol(name)
        cr3 = target.registers(0)["cr3"]
        physical = target._kernel_physical(cr3, address)
        code = target.read_virtual(kernel_dtb(cr3), address, 8)
        print(f"probe: {name} va {address:#x} pa {physical:#x} bytes {code.hex(' ')}",
              flush=True)
        target.insert_breakpoint(address)
        print(f"probe: armed {name}; byte now "
              f"{target.read_physical(physical, 1).hex()}", flush=True)
    print(f"probe: events registered: {len(target._events)}", flush=True)
    hits: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            trap = target.wait_for_trap(0.5)
            if trap is not None:
                hits[trap.pc] += 1
                if sum(hits.values()) <= 3:
                    r = target.registers(trap.vcpu)
                    print(f"probe: trap pc {trap.pc:#x} rax {r['rax']} rdi {r['rdi']:#x} "
                          f"gs {r['gs_base']:#x} kgs {r['k_gs_base']:#x}", flush=True)
    finally:
        target.close()
    print(f"probe: traps {dict((hex(k), v) for k, v in hits.items())} "
          f"(raw events seen {len(seen)})", flush=True)


if __name__ == "__main__":
    main()
