"""What the capture plugin is told of the kernel's architecture (``struct kernel_view``):
the same plugin reads an x86-64 and an i386 kernel, and everything that differs comes from
the profile through the tracer, the entry paths' registers from ``trappoints.py``. No VM:
synthetic profiles, and the bytes the C side reads."""

from __future__ import annotations

from pathlib import Path

from xenhpt.tracer.plugin_capture import build_config
from xenhpt.tracer.trappoints import ARGS_INT80, ARGS_SYSENTER, ARGS_X86_64
from xenhpt.vmi.qemu import plugin_channel as pc

from .synthetic_kernel import SparseMemory, kernel, write_isf
from .test_i386_snapshot import STRUCTS
from .test_plugin_channel import make_file

PT_REGS_I386 = {"bx": (0, "u32"), "cx": (4, "u32"), "dx": (8, "u32"), "si": (12, "u32"),
                "di": (16, "u32"), "bp": (20, "u32"), "ax": (24, "u32"),
                "orig_ax": (44, "u32"), "ip": (48, "u32"), "sp": (60, "u32")}
# Addresses as in Debian's 6.1 686-pae (System.map of its -dbg package), or near them.
I386_SYMBOLS = {"_text": 0xC100_0000, "init_task": 0xC1C5_F4C0, "current_task": 0xC1E1_2F2C,
                "__per_cpu_offset": 0xC1C6_4E40, "entry_SYSENTER_32": 0xC193_21A0,
                "entry_INT80_32": 0xC193_229C, "syscall_exit_to_user_mode": 0xC192_6140}
X86_64_SYMBOLS = {"_text": 0xFFFF_FFFF_8100_0000, "init_task": 0xFFFF_FFFF_82A1_5940,
                  "current_task": 0x1FBC0,
                  "__per_cpu_offset": 0xFFFF_FFFF_8261_1A00,
                  "entry_SYSCALL_64": 0xFFFF_FFFF_8200_0040,
                  "entry_SYSENTER_compat": 0xFFFF_FFFF_8200_1A60,
                  "asm_int80_emulation": 0xFFFF_FFFF_8200_1BE0,
                  "syscall_exit_to_user_mode": 0xFFFF_FFFF_81E2_0A60}


def _i386_kernel(tmp_path: Path):
    isf = write_isf(tmp_path / "i386.json", {**STRUCTS, "pt_regs": (68, PT_REGS_I386)},
                    I386_SYMBOLS, pointer_size=4)
    return kernel(SparseMemory(), isf)


def test_an_i386_kernel_is_read_with_4_byte_words_its_fs_per_cpu_base_and_eax(
        tmp_path: Path) -> None:
    view = build_config(_i386_kernel(tmp_path), None, 32).kernel
    assert (view.word_size, view.kernel_start, view.first_argument) == (4, 0xC000_0000, "rax")
    # FS holds the per-CPU base in the kernel (selector __KERNEL_PERCPU); at the user's
    # instruction it does not, and the base is __per_cpu_offset[cpu].
    assert (view.percpu_register, view.percpu_selector) == ("fs", 0xD8)
    assert view.percpu_offsets == I386_SYMBOLS["__per_cpu_offset"]
    # The kernel's own entry paths only: no `syscall` (on this CPU model it faults).
    assert view.arguments == {("sysenter", "i386"): ARGS_SYSENTER, ("int80", "i386"): ARGS_INT80}
    assert ARGS_SYSENTER[5] == "[rbp]"  # where the vDSO left the user's esp


def test_a_selective_trace_on_an_i386_kernel_filters_at_the_instruction(tmp_path: Path) -> None:
    # (the handler mode reads x86-64's pt_regs)
    config = build_config(_i386_kernel(tmp_path), {"i386": {4}, "x86_64": set()}, 32)
    assert config.handlers is None
    assert set(config.calls) == {(pc.ABI_INDEX["i386"], 4)}


def test_an_x86_64_kernel_is_read_with_8_byte_words_its_gs_base_and_rdi(tmp_path: Path) -> None:
    isf = write_isf(tmp_path / "x86_64.json",
                    {**STRUCTS,
                     "pt_regs": (168, {"orig_ax": (120, "u64"), "ax": (80, "u64")})},
                    X86_64_SYMBOLS)
    view = build_config(kernel(SparseMemory(), isf), None, 32).kernel
    assert (view.word_size, view.kernel_start, view.first_argument) == (8, 1 << 63, "rdi")
    assert view.percpu_register == "gs"
    assert view.arguments[("syscall", "x86_64")] == ARGS_X86_64
    assert set(view.arguments) == {("syscall", "x86_64"), ("sysenter", "i386"),
                                   ("int80", "i386")}


def test_the_argument_sources_are_packed_where_the_plugin_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    channel = pc.PluginChannel(path)
    view = pc.KernelView(word_size=4, kernel_start=0xC000_0000, first_argument="rax",
                         percpu_register="fs", percpu_selector=0xD8,
                         percpu_offsets=0xC1C6_4E40,
                         arguments={("sysenter", "i386"): ARGS_SYSENTER})
    config = pc.CaptureConfig(1, 2, 3, 4, 5, 6, 7, 8, user32_cs=0x23, kernel=view)
    channel._publish = lambda timeout: None  # type: ignore[method-assign]  # no plugin
    channel.configure(config)
    at = (channel.config_offset + pc._CONFIG_HEAD.size
          + len(pc.ABI_NAMES) * pc.MAX_NR * pc._CALL.size + pc.MAX_RULES * pc._RULE.size
          + pc._HANDLER_CONFIG_SIZE + pc._TASK_FILTER.size)
    fields = pc._KERNEL_VIEW.unpack_from(channel._map, at)
    reg = pc.REGISTERS.index
    assert fields[:6] == (4, reg("rax"), 1, 0xD8, 0xC000_0000, 0xC1C6_4E40)
    sources = fields[6:]
    slot = (pc.MECHANISMS.index("sysenter") * len(pc.ABI_NAMES) + pc.ABI_INDEX["i386"]) * 6
    assert sources[slot:slot + 6] == (reg("rbx"), reg("rcx"), reg("rdx"), reg("rsi"),
                                      reg("rdi"), reg("rbp") | pc.ARG_AT)
    assert not any(sources[:slot]) and not any(sources[slot + 6:])  # no other entry path
    channel.close()
