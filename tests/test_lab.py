"""The foundation, on the real lab guest: boot, exec, gdbstub traps, memory, vCPUs, teardown."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from xenhpt.errors import LabError, MemoryReadError
from xenhpt.lab import machine
from xenhpt.linux.kpti import kernel_dtb
from xenhpt.vmi.qemu.target import QemuTarget

from .conftest import XENHPT, guest, kallsyms, run_xenhpt

pytestmark = pytest.mark.lab

# Highest x86_64 syscall number of a 6.1 kernel is well below this.
MAX_SYSCALL = 512


def test_uname_in_guest_equals_release_read_from_guest_memory(lab: machine.LabState) -> None:
    release = guest("uname -r").strip()
    info = run_xenhpt("info", "lab").stdout
    assert f"release:     {release}\n" in info
    assert "arch:        x86_64 (long mode)" in info


def test_exec_returns_stdout_stderr_and_exit_status(lab: machine.LabState) -> None:
    result = machine.exec_in_guest("printf 'a\\tb\\n'; echo oops >&2; exit 7")
    assert (result.stdout, result.stderr, result.status) == ("a\tb\n", "oops\n", 7)
    done = run_xenhpt("lab", "exec", "--", "echo", "$((6*7))", check=False)
    assert (done.stdout, done.returncode) == ("42\n", 0)


def test_breakpoint_on_syscall_entry_fires_with_a_syscall_number(lab: machine.LabState) -> None:
    entry = kallsyms("entry_SYSCALL_64")
    target = QemuTarget("127.0.0.1", lab.gdb_port, ram_file=Path(lab.ram_file))
    worker = threading.Thread(target=machine.exec_in_guest, args=("ls / > /dev/null",))
    try:
        target.insert_breakpoint(entry)
        worker.start()
        trap = target.wait_for_trap(timeout=30)
        assert trap is not None, "no system call trapped while the guest ran a command"
        registers = target.registers(trap.vcpu)
        assert trap.pc == registers["rip"] == entry
        assert 0 <= registers["rax"] < MAX_SYSCALL
        # Kernel text through the kernel page tables equals the physical bytes it maps to.
        dtb = registers["cr3"]
        try:
            target.translate(dtb, entry)
        except MemoryReadError:
            dtb = kernel_dtb(dtb)  # KPTI: the user PGD does not map kernel text
        virtual = target.read_virtual(dtb, entry, 64)
        physical = target.read_physical(target.translate(dtb, entry), 64)
        assert virtual == physical and virtual != bytes(64)
        target.remove_breakpoint(entry)
        assert target.breakpoints == frozenset()
    finally:
        target.close()
        worker.join(timeout=60)
    assert guest("echo alive") == "alive\n"


def test_gdbstub_memory_path_reads_what_the_ram_mapping_reads(lab: machine.LabState) -> None:
    mapped = QemuTarget("127.0.0.1", lab.gdb_port, ram_file=Path(lab.ram_file))
    try:
        page = mapped.read_physical(0x100_0000, 4096)
    finally:
        mapped.close()
    over_socket = QemuTarget("127.0.0.1", lab.gdb_port)
    try:
        assert over_socket.read_physical(0x100_0000, 4096) == page
    finally:
        over_socket.close()
    assert guest("echo alive") == "alive\n"


def test_two_vcpus_both_report_registers(tmp_path: Path) -> None:
    state = machine.up(smp=2, directory=tmp_path)
    try:
        target = QemuTarget("127.0.0.1", state.gdb_port, ram_file=Path(state.ram_file))
        try:
            assert target.vcpu_count == 2
            target.pause()
            for vcpu in (0, 1):
                registers = target.registers(vcpu)
                assert registers["cr0"] & 1 and registers["efer"] & (1 << 10)  # PE, LMA
                assert registers["cr3"] and registers["rip"]
            assert target.registers(0)["k_gs_base"] or target.registers(0)["gs_base"]
        finally:
            target.close()
        result = machine.exec_in_guest("nproc", directory=tmp_path)
        assert result.stdout.strip() == "2"
    finally:
        machine.down(tmp_path)


def test_down_leaves_no_qemu_and_a_second_up_works(tmp_path: Path) -> None:
    first = machine.up(directory=tmp_path)
    assert machine.down(tmp_path)
    assert not first.alive() and not Path(first.ram_file).exists()
    second = machine.up(directory=tmp_path)
    try:
        assert second.pid != first.pid
        assert machine.exec_in_guest("echo again", directory=tmp_path).stdout == "again\n"
    finally:
        machine.down(tmp_path)
    assert not second.alive()


def test_guest_that_never_gets_ready_fails_with_console_lines_and_nothing_left(
        tmp_path: Path) -> None:
    with pytest.raises(LabError) as failure:
        machine.up(directory=tmp_path, extra_append="rdinit=/no/such/init", timeout=60)
    message = str(failure.value)
    assert "did not boot" in message and "last console lines" in message
    assert "init" in message.lower()  # the kernel's own complaint is shown
    assert not (tmp_path / "state.json").exists()
    assert not any(Path("/dev/shm").glob("xenhpt-lab-*")) or all(
        _owned_by_live_qemu(p) for p in Path("/dev/shm").glob("xenhpt-lab-*"))


def _owned_by_live_qemu(ram: Path) -> bool:
    return any(str(ram) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
               for pid in os.listdir("/proc") if pid.isdigit()
               and Path(f"/proc/{pid}/cmdline").exists())


def test_missing_qemu_is_one_line_naming_the_debian_package(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/nonexistent", "XENHPT_LAB_DIR": str(tmp_path)}
    done = subprocess.run([XENHPT, "lab", "up"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "qemu-system-x86" in done.stderr


def test_unreachable_target_is_one_line() -> None:
    done = run_xenhpt("info", "qemu:127.0.0.1:1", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "cannot connect to gdbstub" in done.stderr
