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
                "entry_INT80_32": 0xC193_229C, "syscall_exit_to_user_mode": 0xC192_6140,
                "__switch_to": 0xC102_59D0, "__ia32_sys_write": 0xC12E_2710,
                "__ia32_sys_openat": 0xC12D_F9E0}
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


def test_a_selective_trace_on_an_i386_kernel_reads_its_pt_regs_at_the_handlers(
        tmp_path: Path) -> None:
    """The handler mode on an i386 kernel: __ia32_sys_* get pt_regs in eax (-mregparm=3),
    its fields are 4-byte words at the profile's offsets, the i386 ABI's arguments are
    bx cx dx si di bp, and __switch_to(prev, next) has next in edx."""
    k = _i386_kernel(tmp_path)
    config = build_config(k, {"i386": {4, 295}, "x86_64": set()}, 32)
    handlers = config.handlers
    assert handlers is not None, "an i386 kernel's selective trace fell back to the instructions"
    assert set(handlers.handlers) == {I386_SYMBOLS["__ia32_sys_write"],
                                      I386_SYMBOLS["__ia32_sys_openat"]}
    assert config.kernel.first_argument == "rax"  # where the handler finds pt_regs
    assert config.switch_address == I386_SYMBOLS["__switch_to"]
    assert config.switch_next == "rdx"
    assert (handlers.regs_size, handlers.regs_sp, handlers.regs_ip) == (68, 60, 48)
    assert config.regs_orig_ax == 44
    assert handlers.regs_arguments == {"i386": (0, 4, 8, 12, 16, 20)}  # no x86_64 ABI here
    # The mechanism comes from the stub the return address below pt_regs points into.
    assert set(handlers.stubs) == {
        (I386_SYMBOLS["entry_SYSENTER_32"], pc.MECHANISMS.index("sysenter"), 1),
        (I386_SYMBOLS["entry_INT80_32"], pc.MECHANISMS.index("int80"), 1)}
    assert set(config.calls) == {(pc.ABI_INDEX["i386"], 4), (pc.ABI_INDEX["i386"], 295)}


def test_a_kernel_whose_pt_regs_lacks_a_field_filters_at_the_instruction(
        tmp_path: Path) -> None:
    regs = {name: where for name, where in PT_REGS_I386.items() if name != "bp"}
    isf = write_isf(tmp_path / "i386.json", {**STRUCTS, "pt_regs": (68, regs)},
                    I386_SYMBOLS, pointer_size=4)
    config = build_config(kernel(SparseMemory(), isf), {"i386": {4}, "x86_64": set()}, 32)
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


# x86-64's struct pt_regs (8-byte fields), as its BTF gives it.
PT_REGS_X86_64 = {name: (8 * i, "u64") for i, name in enumerate(
    ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx",
     "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss"))}


def test_a_selective_trace_on_an_x86_64_kernel_reads_both_abis_and_next_in_rsi(
        tmp_path: Path) -> None:
    symbols = {**X86_64_SYMBOLS, "__switch_to": 0xFFFF_FFFF_8102_B9C0,
               "__x64_sys_write": 0xFFFF_FFFF_8136_5A50,
               "__ia32_sys_write": 0xFFFF_FFFF_8136_5A90}
    isf = write_isf(tmp_path / "x86_64.json", {**STRUCTS, "pt_regs": (168, PT_REGS_X86_64)},
                    symbols)
    config = build_config(kernel(SparseMemory(), isf), {"x86_64": {1}, "i386": {4}}, 32)
    handlers = config.handlers
    assert handlers is not None
    assert set(handlers.handlers) == {symbols["__x64_sys_write"], symbols["__ia32_sys_write"]}
    assert config.kernel.first_argument == "rdi" and config.switch_next == "rsi"
    assert (handlers.regs_size, handlers.regs_sp, handlers.regs_ip) == (168, 152, 128)
    assert handlers.regs_arguments == {"x86_64": (112, 104, 96, 56, 72, 64),  # di si dx r10 r8 r9
                                       "i386": (40, 88, 96, 104, 112, 32)}  # bx cx dx si di bp


def test_the_handler_mode_is_packed_where_the_plugin_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    channel = pc.PluginChannel(path)
    view = pc.KernelView(word_size=4, kernel_start=0xC000_0000, first_argument="rax",
                         percpu_register="fs", arguments={("int80", "i386"): ARGS_INT80})
    handlers = pc.HandlerConfig(
        handlers=(0xC12E_2710,), stubs=((0xC193_229C, pc.MECHANISMS.index("int80"), 1),),
        stub_span=0x1000, regs_size=68, regs_sp=60, regs_ip=48,
        regs_arguments={"i386": (0, 4, 8, 12, 16, 20)})
    config = pc.CaptureConfig(1, 2, 3, 4, 5, 6, 7, 8, user32_cs=0x23, kernel=view,
                              handlers=handlers, switch_address=0xC102_59D0, switch_next="rdx")
    channel._publish = lambda timeout: None  # type: ignore[method-assign]  # no plugin
    channel.configure(config)
    at = (channel.config_offset + pc._CONFIG_HEAD.size
          + len(pc.ABI_NAMES) * pc.MAX_NR * pc._CALL.size + pc.MAX_RULES * pc._RULE.size)
    fields = pc._HANDLER_HEAD.unpack_from(channel._map, at)
    assert fields[:10] == (1, 1, 1, 68, 0, 0x1000, 0, 60, 48, 0)
    head = pc._CONFIG_HEAD.unpack_from(channel._map, channel.config_offset)
    assert head[-5:-2] == (0xC102_59D0, pc.REGISTERS.index("rdx"), 0)  # the context switch
    arguments = fields[10:]
    assert arguments[pc.ABI_INDEX["i386"] * 6:][:6] == (0, 4, 8, 12, 16, 20)
    assert not any(arguments[pc.ABI_INDEX["x86_64"] * 6:][:6])  # an ABI no stub has
    stub = pc._STUB.unpack_from(channel._map, at + pc._HANDLER_HEAD.size)
    assert stub == (0xC193_229C, pc.MECHANISMS.index("int80"), 1)
    channel.close()
