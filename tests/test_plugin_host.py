"""The capture plugin's C code, run without QEMU: ``tests/plugin_host.c`` includes
``xenhpt_capture.c`` whole and stands in for the QEMU plugin API over registers and guest
memory the test sets, and the tracer's own configuration (``build_config`` on a synthetic
profile, packed by ``PluginChannel``) drives it. Here: the selective handler mode on an
i386 kernel (pt_regs in eax with 4-byte fields, ``__switch_to``'s next in edx), and on an
x86-64 one (rdi, 8-byte fields, next in rsi). Needs gcc, as ``test_plugin_layout.py``.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.tracer.plugin_capture import build_config
from xenhpt.vmi.qemu import plugin_channel as pc

from .conftest import gcc_or_skip
from .synthetic_kernel import SparseMemory, kernel, write_isf
from .test_i386_snapshot import STRUCTS
from .test_plugin_kernel_view import (
    I386_SYMBOLS,
    PT_REGS_I386,
    PT_REGS_X86_64,
    X86_64_SYMBOLS,
)

PLUGIN_DIR = Path(pc.__file__).resolve().parent / "plugin"
X86_64_HANDLERS = {"__switch_to": 0xFFFF_FFFF_8102_B9C0,
                   "__x64_sys_write": 0xFFFF_FFFF_8136_5A50,
                   "__ia32_sys_write": 0xFFFF_FFFF_8136_5A90}


@pytest.fixture(scope="module")
def host_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = gcc_or_skip("the plugin")
    program = tmp_path_factory.mktemp("host") / "plugin_host"
    subprocess.run([gcc, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-pthread",
                    "-I", str(PLUGIN_DIR), "-o", str(program),
                    str(Path(__file__).with_name("plugin_host.c"))],
                   check=True, capture_output=True, text=True)
    return program


class Host:
    """One plugin_host process: the plugin loaded in a made-up QEMU."""

    def __init__(self, program: Path, target: str, shared: Path) -> None:
        self.process = subprocess.Popen([str(program)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.ask(f"install {target} {shared}") == "ok"
        self.channel = pc.PluginChannel(shared)

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def reg(self, name: str, value: int) -> None:
        assert self.ask(f"reg {name} {value:x}") == "ok", name

    def mem(self, address: int, data: bytes) -> None:
        assert self.ask(f"mem {address:x} {data.hex()}") == "ok"

    def run(self, address: int) -> str:
        return self.ask(f"run {address:x}")

    def armed(self) -> tuple[int, ...]:
        """The vCPU's scoreboard: (syscall instructions, exit, handlers)."""
        return tuple(int(x) for x in self.ask("armed").split())

    def configure(self, config: pc.CaptureConfig) -> None:
        """Hand the plugin a configuration; the vCPU idles until it took it (one that
        moves instrumented points waits for a vCPU, as in QEMU)."""
        done = threading.Thread(target=self.channel.configure, args=(config, 5.0))
        done.start()
        while done.is_alive():
            self.ask("idle")
            done.join(0.01)

    def close(self) -> None:
        self.channel.close()
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture()
def start(host_program: Path, tmp_path: Path) -> Iterator:
    hosts = []

    def started(target: str) -> Host:
        hosts.append(Host(host_program, target, tmp_path / f"capture-{len(hosts)}"))
        return hosts[-1]

    yield started
    for host in hosts:
        host.close()


def _pack(offsets: dict[str, int], values: dict[str, int], size: int, word: int) -> bytes:
    frame = bytearray(size)
    for name, value in values.items():
        frame[offsets[name]:offsets[name] + word] = value.to_bytes(word, "little")
    return bytes(frame)


def _task(config: pc.CaptureConfig, word: int, pid: int, comm: bytes, parent: int) -> bytes:
    task = bytearray(0x800)
    struct.pack_into("<i", task, config.task_pid, pid)
    struct.pack_into("<i", task, config.task_tgid, pid)
    task[config.task_comm:config.task_comm + len(comm)] = comm
    task[config.task_real_parent:config.task_real_parent + word] = parent.to_bytes(word, "little")
    return bytes(task)


def test_an_i386_kernels_selected_handler_reads_pt_regs_in_eax_and_next_in_edx(
        start, tmp_path: Path) -> None:
    """write(1, "hello\\n", 6) through int 0x80 on an i386 kernel, seen at
    __ia32_sys_write(regs): the record has the mechanism (from the stub the return address
    below pt_regs points into), the caller, the six arguments from pt_regs' 4-byte fields
    and the buffer; its exit is armed on the vCPU until the call returns, and the context
    switch rearms it by the task in edx, not in esi (x86-64's place for it)."""
    isf = write_isf(tmp_path / "i386.json", {**STRUCTS, "pt_regs": (68, PT_REGS_I386)},
                    I386_SYMBOLS, pointer_size=4)
    config = build_config(kernel(SparseMemory(), isf), {"i386": {4}, "x86_64": set()}, 32)
    config.heartbeat_timeout_ms = 0  # (no heartbeat thread here)
    assert config.handlers is not None
    host = start("i386")
    host.configure(config)
    assert host.armed() == (0, 0, 1)  # handlers only: no instruction enters the plugin

    regs = 0xC3A0_1F80  # pt_regs on the kernel stack; the stub's return address below it
    task, parent, other, percpu = 0xC400_0000, 0xC400_1000, 0xC400_2000, 0xC500_0000
    buffer = 0x0804_A000
    offsets = {name: offset for name, (offset, _) in PT_REGS_I386.items()}
    host.mem(regs - 4, (I386_SYMBOLS["entry_INT80_32"] + 0xF0).to_bytes(4, "little"))
    host.mem(regs, _pack(offsets, {"bx": 1, "cx": buffer, "dx": 6, "si": 0x5151,
                                   "di": 0xD1D1, "bp": 0xB0B0, "orig_ax": 4,
                                   "ax": 0xFFFF_FFDA, "ip": 0x0804_8123, "sp": 0xBFFF_F000},
                         68, 4))
    host.mem(buffer, b"hello\n")
    host.mem(task, _task(config, 4, 321, b"sh", parent))
    host.mem(parent, _task(config, 4, 1, b"init", 0))
    host.mem((percpu + config.current_offset) & 0xFFFF_FFFF, task.to_bytes(4, "little"))
    # In the kernel FS holds __KERNEL_PERCPU, its base the CPU's per-CPU area.
    host.reg("fs", config.kernel.percpu_selector)
    host.reg("fs_base", percpu)
    host.reg("cr3", 0x1A2B_3000)
    host.reg("eax", regs)
    host.reg("edi", 0xDEAD_0000)  # x86-64's place for pt_regs: not read here

    assert host.run(I386_SYMBOLS["__ia32_sys_write"]) == "ran"
    (entry,) = host.channel.read()
    assert (entry.kind, entry.abi, entry.mechanism, entry.nr) == ("entry", "i386", "int80", 4)
    assert entry.args == (1, buffer, 6, 0x5151, 0xD1D1, 0xB0B0)
    assert (entry.pid, entry.tid, entry.ppid, entry.comm, entry.task) == (321, 321, 1, b"sh",
                                                                          task)
    assert (entry.pc, entry.sp, entry.cr3) == (0x0804_8123, 0xBFFF_F000, 0x1A2B_3000)
    assert (buffer, b"hello\n") in [(address, data) for address, _, data in entry.regions]
    assert host.armed() == (0, 1, 1)  # its exit, on this vCPU

    # __switch_to(prev in eax, next in edx): another task comes in, then ours again.
    host.reg("esi", task)
    host.reg("edx", other)
    assert host.run(I386_SYMBOLS["__switch_to"]) == "ran"
    assert host.armed()[1] == 0
    host.reg("esi", other)
    host.reg("edx", task)
    assert host.run(I386_SYMBOLS["__switch_to"]) == "ran"
    assert host.armed()[1] == 1

    # syscall_exit_to_user_mode(regs in eax): the return value from pt_regs->ax.
    host.mem(regs + offsets["ax"], (6).to_bytes(4, "little"))
    assert host.run(I386_SYMBOLS["syscall_exit_to_user_mode"]) == "ran"
    (exit_record,) = host.channel.read()
    assert (exit_record.kind, exit_record.nr, exit_record.ret, exit_record.pid) == (
        "exit", 4, 6, 321)
    assert host.armed()[1] == 0

    # A handler entered from no system-call stub (another caller) records nothing.
    host.mem(regs - 4, (0xC100_0000).to_bytes(4, "little"))
    assert host.run(I386_SYMBOLS["__ia32_sys_write"]) == "ran"
    assert host.channel.read() == []


def test_a_handler_configuration_with_a_field_past_pt_regs_is_refused(
        start, tmp_path: Path) -> None:
    """The plugin checks every pt_regs offset it is given against pt_regs' size in the
    kernel's words before it reads with it: a bad one refuses the whole configuration."""
    isf = write_isf(tmp_path / "i386.json", {**STRUCTS, "pt_regs": (68, PT_REGS_I386)},
                    I386_SYMBOLS, pointer_size=4)
    config = build_config(kernel(SparseMemory(), isf), {"i386": {4}, "x86_64": set()}, 32)
    config.heartbeat_timeout_ms = 0
    assert config.handlers is not None
    host = start("i386")
    host.configure(config)
    assert host.armed() == (0, 0, 1)
    config.handlers = dataclasses.replace(config.handlers,
                                          regs_arguments={"i386": (0, 4, 8, 12, 16, 66)})
    host.configure(config)
    assert host.armed() == (0, 0, 0)  # capture off: nothing armed


def test_an_x86_64_kernels_selected_handler_reads_pt_regs_in_rdi_and_next_in_rsi(
        start, tmp_path: Path) -> None:
    """The same on an x86-64 kernel, for a 32-bit caller through its compat int 0x80
    path: pt_regs in rdi with 8-byte fields, the i386 ABI's registers in them, next in
    rsi."""
    symbols = {**X86_64_SYMBOLS, **X86_64_HANDLERS}
    isf = write_isf(tmp_path / "x86_64.json", {**STRUCTS, "pt_regs": (168, PT_REGS_X86_64)},
                    symbols)
    config = build_config(kernel(SparseMemory(), isf), {"x86_64": {1}, "i386": {4}}, 32)
    config.heartbeat_timeout_ms = 0
    assert config.handlers is not None
    host = start("x86_64")
    host.configure(config)
    regs, task, other, percpu = (0xFFFF_C900_0001_3F58, 0xFFFF_8880_0400_0000,
                                 0xFFFF_8880_0400_2000, 0xFFFF_8880_0F00_0000)
    buffer = 0x0804_A000
    offsets = {name: offset for name, (offset, _) in PT_REGS_X86_64.items()}
    host.mem(regs - 8, (symbols["asm_int80_emulation"] + 0x40).to_bytes(8, "little"))
    host.mem(regs, _pack(offsets, {"bx": 1, "cx": buffer, "dx": 6, "si": 0x5151,
                                   "di": 0xD1D1, "bp": 0xB0B0, "orig_ax": 4,
                                   "ip": 0x0804_8123, "sp": 0xFFFF_D000}, 168, 8))
    host.mem(buffer, b"hello\n")
    host.mem(task, _task(config, 8, 321, b"sh", task))
    host.mem(percpu + config.current_offset, task.to_bytes(8, "little"))
    host.reg("gs_base", percpu)
    host.reg("rdi", regs)
    assert host.run(symbols["__ia32_sys_write"]) == "ran"
    (entry,) = host.channel.read()
    assert (entry.abi, entry.mechanism, entry.nr, entry.pid) == ("i386", "int80", 4, 321)
    assert entry.args == (1, buffer, 6, 0x5151, 0xD1D1, 0xB0B0)
    assert host.armed()[1] == 1
    host.reg("rsi", other)
    host.reg("rdx", task)
    assert host.run(symbols["__switch_to"]) == "ran"
    assert host.armed()[1] == 0


def test_the_caller_is_the_last_switchs_next_until_capture_is_armed_again(
        start, tmp_path: Path) -> None:
    """A vCPU's caller is the task the last __switch_to switched to (two guest reads fewer
    per record than the per-CPU current task). A switch the plugin did not follow must
    never name a caller: when capture is armed again, the per-CPU word is read again."""
    symbols = {**X86_64_SYMBOLS, **X86_64_HANDLERS}
    isf = write_isf(tmp_path / "x86_64.json", {**STRUCTS, "pt_regs": (168, PT_REGS_X86_64)},
                    symbols)
    config = build_config(kernel(SparseMemory(), isf), {"x86_64": {1}, "i386": {4}}, 32)
    config.heartbeat_timeout_ms = 0
    assert config.switch_address == symbols["__switch_to"] and config.switch_next == "rsi"
    host = start("x86_64")
    host.configure(config)
    regs, task, other, percpu = (0xFFFF_C900_0001_3F58, 0xFFFF_8880_0400_0000,
                                 0xFFFF_8880_0400_2000, 0xFFFF_8880_0F00_0000)
    offsets = {name: offset for name, (offset, _) in PT_REGS_X86_64.items()}
    host.mem(regs - 8, (symbols["asm_int80_emulation"] + 0x40).to_bytes(8, "little"))
    host.mem(regs, _pack(offsets, {"bx": 1, "cx": 0x0804_A000, "dx": 0, "orig_ax": 4},
                         168, 8))
    host.mem(task, _task(config, 8, 321, b"sh", task))
    host.mem(other, _task(config, 8, 654, b"other", other))
    host.mem(percpu + config.current_offset, task.to_bytes(8, "little"))
    host.reg("gs_base", percpu)
    host.reg("rdi", regs)
    host.reg("rsi", other)
    assert host.run(symbols["__switch_to"]) == "ran"
    assert host.run(symbols["__ia32_sys_write"]) == "ran"
    (entry,) = host.channel.read()
    assert (entry.pid, entry.comm, entry.task) == (654, b"other", other)
    host.configure(config)  # armed again: switches may have gone by unseen
    assert host.run(symbols["__ia32_sys_write"]) == "ran"
    (entry,) = host.channel.read()
    assert (entry.pid, entry.comm, entry.task) == (321, b"sh", task)
