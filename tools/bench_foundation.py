#!/usr/bin/env python3
"""Measure the foundation in one run: lab boot time, one breakpoint round trip, and a
4 KiB guest-physical read through each memory path of the QEMU backend.

    .venv/bin/python tools/bench_foundation.py [--hits 200] [--reads 500]

It boots its own lab guest in a temporary run directory and stops it at the end.
Numbers vary with the machine's load: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from xenhpt.errors import LabError
from xenhpt.lab import machine
from xenhpt.linux.kernel import Kernel
from xenhpt.vmi.qemu.target import QemuTarget


def _keep_busy(directory: Path) -> None:
    """A syscall-heavy guest loop; it dies with the guest at the end, which is expected."""
    try:
        machine.exec_in_guest("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); : < /dev/null; "
                              "done", timeout=600, directory=directory)
    except LabError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200, help="breakpoint hits to time")
    parser.add_argument("--reads", type=int, default=500, help="4 KiB reads per path")
    options = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="xenhpt-bench-"))
    machine.prepare()
    started = time.monotonic()
    state = machine.up(directory=directory)
    boot = time.monotonic() - started
    print(f"boot to ready (TCG, 1 vCPU, 512 MiB):   {boot:.2f} s")
    try:
        mapped = QemuTarget("127.0.0.1", state.gdb_port, ram_file=Path(state.ram_file))
        try:
            kernel = Kernel.open(mapped)
            entry = kernel.symbol("entry_SYSCALL_64")
            page = kernel.physical(kernel.symbol("linux_banner")) & ~0xFFF
            t0 = time.perf_counter()
            for _ in range(options.reads):
                mapped.read_physical(page, 4096)
            mmap_read = (time.perf_counter() - t0) / options.reads
            # Breakpoint round trip: hit, read registers, step over, continue to the next.
            busy = threading.Thread(target=_keep_busy, args=(directory,), daemon=True)
            mapped.insert_breakpoint(entry)
            busy.start()
            times = []
            last = time.perf_counter()
            while len(times) < options.hits:
                trap = mapped.wait_for_trap(timeout=10)
                if trap is None:
                    break
                mapped.registers(trap.vcpu)
                now = time.perf_counter()
                times.append(now - last)
                last = now
            mapped.remove_breakpoint(entry)
        finally:
            mapped.close()
        over_socket = QemuTarget("127.0.0.1", state.gdb_port)
        try:
            over_socket.pause()
            t0 = time.perf_counter()
            for _ in range(options.reads // 10):
                over_socket.read_physical(page, 4096)
            gdb_read = (time.perf_counter() - t0) / (options.reads // 10)
        finally:
            over_socket.close()
    finally:
        machine.down(directory)
    if times:
        print(f"breakpoint round trip (median of {len(times)}): "
              f"{statistics.median(times) * 1e3:.2f} ms  ({1 / statistics.median(times):.0f}/s)")
    print(f"4 KiB physical read, mapped RAM file:   {mmap_read * 1e6:.1f} us")
    print(f"4 KiB physical read, gdbstub packets:   {gdb_read * 1e6:.1f} us "
          f"(guest paused; {gdb_read / mmap_read:.0f}x the mapped read)")


if __name__ == "__main__":
    main()
