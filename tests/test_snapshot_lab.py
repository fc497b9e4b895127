"""Snapshots of the real lab guest: raw (pmemsave) and QEMU ELF (dump-guest-memory) agree.

The guest is booted in a run directory of its own (not the session's lab) with two
vCPUs, paused while both files are written so that they hold the same memory, then
stopped again whatever happens.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.lab import machine
from xenhpt.lab.qmp import Qmp
from xenhpt.linux.kpti import kernel_dtb
from xenhpt.vmi.snapshot.target import open_snapshot

pytestmark = pytest.mark.lab

PAGE = 4096
KERNEL_MAP = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map: kernel image virtual = this + physical
KERNEL_HALF = 0xFFFF_8000_0000_0000
BANNER = b"Linux version 6.1"


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(raw, elf) of one paused moment of a 2-vCPU lab guest."""
    run_dir = tmp_path_factory.mktemp("snapshot-lab")
    files = tmp_path_factory.mktemp("snapshot-files")
    raw, elf = files / "guest.raw", files / "guest.elf"
    try:
        state = machine.up(smp=2, directory=run_dir)
        # QEMU serves one QMP client at a time: stop, let snapshot() connect, then continue.
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("stop")
        machine.snapshot(raw, run_dir)
        machine.snapshot(elf, run_dir)
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("cont")
    finally:
        machine.down(run_dir)
    yield raw, elf


def _banner_address(raw: Path) -> int:
    data = raw.read_bytes()
    # The first hits can be inside the compressed kernel; the real one ends in a newline.
    at = 0
    while (at := data.find(BANNER, at)) >= 0:
        line = data[at : data.find(b"\n", at)]
        if b"(" in line and len(line) < 400 and line.isascii():
            return at
        at += 1
    raise AssertionError("no Linux banner in the raw snapshot")


def test_raw_and_elf_hold_byte_identical_memory(snapshots: tuple[Path, Path]) -> None:
    raw_path, elf_path = snapshots
    banner = _banner_address(raw_path)
    with open_snapshot(raw_path) as raw, open_snapshot(elf_path) as elf:
        assert (raw.format, elf.format) == ("raw", "qemu-elf")
        ram = raw.physical_size
        assert ram == 512 << 20
        # The ELF adds the BIOS ROM below 4 GiB; RAM is its first range.
        assert elf.ranges[0] == (0, ram)
        page = banner & ~(PAGE - 1)
        assert elf.read_physical(page, PAGE) == raw.read_physical(page, PAGE)
        assert elf.read_physical(banner, len(BANNER)) == BANNER
        chunk = 16 << 20
        for address in range(0, ram, chunk):
            assert elf.read_physical(address, chunk) == raw.read_physical(address, chunk), \
                f"raw and ELF differ in [{address:#x}, {address + chunk:#x})"
        with pytest.raises(MemoryReadError):
            elf.read_physical(ram, 1)  # between RAM and the BIOS ROM
        with pytest.raises(MemoryReadError):
            raw.read_physical(ram - 8, 16)


def test_elf_vcpu_registers_are_sane_and_reach_kernel_memory(
        snapshots: tuple[Path, Path]) -> None:
    raw_path, elf_path = snapshots
    banner = _banner_address(raw_path)
    with open_snapshot(elf_path) as elf:
        assert elf.vcpu_count == 2
        for vcpu in range(2):
            registers = elf.registers(vcpu)
            # Mostly idle in the kernel, but a vCPU may be caught running a program (a
            # workload of an earlier test, a daemon): its privilege level must agree.
            in_kernel = registers["rip"] >= KERNEL_MAP
            assert registers["cs"] & 3 == (0 if in_kernel else 3), registers
            assert registers["cr0"] & (1 << 31), "paging is on"
            assert 0 < registers["cr3"] & ~0xFFF < elf.physical_size
            # The per-CPU base is GS in the kernel, the swapped-out GS base in user mode.
            per_cpu = registers["gs_base"] if in_kernel else registers["k_gs_base"]
            assert per_cpu >= KERNEL_HALF, registers
            dtb = kernel_view = registers["cr3"]
            try:
                elf.translate(dtb, KERNEL_MAP + banner)
            except MemoryReadError:
                kernel_view = kernel_dtb(dtb)  # KPTI: a user PGD does not map the kernel
            if in_kernel:
                dtb = kernel_view
            # The banner through the kernel mapping is the banner in physical memory.
            assert elf.read_virtual(kernel_view, KERNEL_MAP + banner, len(BANNER)) == BANNER
            # The instruction at rip is where the vCPU's page tables say it is.
            code = elf.read_virtual(dtb, registers["rip"], 16)
            assert code == elf.read_physical(elf.translate(dtb, registers["rip"]), 16)


def test_libvmi_reader_agrees_with_ours_on_the_real_raw_snapshot(
        snapshots: tuple[Path, Path]) -> None:
    raw_path, _ = snapshots
    rng = random.Random(7)
    with open_snapshot(raw_path) as ours, open_snapshot(raw_path, reader="libvmi") as libvmi:
        assert libvmi.physical_size == ours.physical_size
        for _ in range(500):
            address = rng.randrange(ours.physical_size - PAGE)
            assert libvmi.read_physical(address, PAGE) == ours.read_physical(address, PAGE)
        last = ours.physical_size - PAGE
        assert libvmi.read_physical(last, PAGE) == ours.read_physical(last, PAGE)
