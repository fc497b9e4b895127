"""The capture plugin's shared-file layout agrees between C and Python, byte for byte.

``vmi/qemu/plugin/channel_layout.h`` states the layout for the plugin;
``vmi/qemu/plugin_channel.py`` packs and unpacks the same bytes with ``struct`` formats.
A tiny C program compiled against the header prints ``offsetof``/``sizeof`` of every field
the Python side reads or writes, and every constant both sides use; each is compared with
what the Python formats and constants give. No VM: only gcc.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from xenhpt.vmi.qemu import plugin_channel as pc

from .conftest import gcc_or_skip

PLUGIN_DIR = Path(pc.__file__).resolve().parent / "plugin"

# (C struct, the Python format that covers part of it, where that part starts in the
# struct, the C member designators the format's items map to, in order). A repeated
# item of the format ("6Q") is one designator per element; "16s" is one.
LAYOUT = [
    ("header", pc._HEADER, 0,
     ["magic", "version", "header_size", "config_offset", "config_size", "ring_offset",
      "ring_size", "max_vcpus", "reserved0"]),
    ("header", pc._COUNTERS, pc._HEAD,
     ["head", "records", "dropped", "applied_gen", "instructions", "read_failures",
      "stale_stops", "flushes", "truncated"]),
    ("config", pc._CONFIG_HEAD, 0,
     ["enabled", "max_record", "exit_address", "current_offset", "task_pid", "task_tgid",
      "task_comm", "task_real_parent", "regs_orig_ax", "regs_ax", "user32_cs",
      "unknown_selected", "refresh_address",
      *(f"identity_address[{i}]" for i in range(pc.IDENTITY_POINTS)),
      "switch_address", "switch_next", "reserved", "n_rules", "heartbeat_timeout_ms"]),
    ("call_spec", pc._CALL, 0, ["selected", "n_rules", "first_rule"]),
    ("handler_config", pc._HANDLER_HEAD, 0,
     ["enabled", "n_handlers", "n_stubs", "regs_size", "unused0", "stub_span",
      "unused1", "regs_sp", "regs_ip", "reserved",
      *(f"regs_arguments[{a}][{i}]" for a in range(len(pc.ABI_NAMES)) for i in range(6))]),
    ("stub", pc._STUB, 0, ["start", "mechanism", "abi"]),
    ("task_filter", pc._TASK_FILTER, 0,
     ["enabled", "follow", "n_pids", "use_comm", "comm",
      *(f"pids[{i}]" for i in range(pc.MAX_FILTER_PIDS))]),
    ("rule", pc._RULE, 0, ["when", "how", "arg", "len_arg", "max", "count", "reserved"]),
    ("kernel_view", pc._KERNEL_VIEW, 0,
     ["word_size", "first_argument", "percpu_register", "percpu_selector", "kernel_start",
      "percpu_offsets",
      *(f"arguments[{m}][{a}][{i}]" for m in range(len(pc.MECHANISMS))
        for a in range(len(pc.ABI_NAMES)) for i in range(6))]),
    ("record", pc._RECORD, 0,
     ["size", "type", "abi", "mechanism", "n_regions", "vcpu", "flags", "ts_ns", "task",
      "pid", "tid", "ppid", "reserved", "comm", "nr", *(f"args[{i}]" for i in range(6)),
      "ret", "pc", "sp", "cr3"]),
    ("record", pc._SIZE_KIND, 0, ["size", "type"]),
    ("region", pc._REGION, 0, ["addr", "len", "flags"]),
]
# Whole structs whose size the Python side relies on (a record's regions follow it, the
# rule table follows the call table, ...).
WHOLE = {"call_spec": pc._CALL, "rule": pc._RULE, "record": pc._RECORD,
         "region": pc._REGION, "stub": pc._STUB, "task_filter": pc._TASK_FILTER,
         "kernel_view": pc._KERNEL_VIEW}
# Single words the tracer reads or writes at a fixed offset of the header.
WORDS = {"head": pc._HEAD, "applied_gen": pc._APPLIED_GEN, "tail": pc._TAIL,
         "config_gen": pc._CONFIG_GEN, "heartbeat_ns": pc._HEARTBEAT,
         "owner_pid": pc._OWNER}
def c_register(name: str | None) -> str:
    """REG_AX for rax, REG_R8 for r8, REG_NONE for None: channel_layout.h's names."""
    if name is None:
        return "NONE"
    return name.upper() if name[1:].isdigit() else name[1:].upper()


CONSTANTS = {
    "LAYOUT_VERSION": pc.LAYOUT_VERSION, "MAX_NR": pc.MAX_NR, "MAX_RULES": pc.MAX_RULES,
    "IDENTITY_POINTS": pc.IDENTITY_POINTS, "ABIS": len(pc.ABI_NAMES),
    "ABI_X86_64": pc.ABI_INDEX["x86_64"], "ABI_I386": pc.ABI_INDEX["i386"],
    "WHEN_ENTRY": pc.WHEN_ENTRY, "WHEN_EXIT": pc.WHEN_EXIT,
    "HOW_CSTRING": pc.HOW_CSTRING, "HOW_FIXED": pc.HOW_FIXED, "HOW_BY_ARG": pc.HOW_BY_ARG,
    "HOW_BY_RET": pc.HOW_BY_RET, "HOW_BY_DEREF": pc.HOW_BY_DEREF,
    "HOW_STRINGS": pc.HOW_STRINGS, "HOW_STACK": pc.HOW_STACK,
    "CALL_SELECTED": pc.CALL_SELECTED, "CALL_REREAD_AT_EXIT": pc.CALL_REREAD_AT_EXIT,
    "FLAG_TASK_UNKNOWN": pc.FLAG_TASK_UNKNOWN, "FLAG_RETRY_AT_EXIT": pc.FLAG_RETRY_AT_EXIT,
    "REGION_CUT": pc.REGION_CUT, "REGION_TERMINATED": pc.REGION_TERMINATED,
    "REGION_FULL": pc.REGION_FULL,
    "TYPE_PAD": pc._KINDS.index(None), "TYPE_ENTRY": pc._KINDS.index("entry"),
    "TYPE_EXIT": pc._KINDS.index("exit"), "TYPE_REFRESH": pc._KINDS.index("refresh"),
    "MECH_NONE": pc.MECHANISMS.index(None), "MECH_SYSCALL": pc.MECHANISMS.index("syscall"),
    "MECH_SYSENTER": pc.MECHANISMS.index("sysenter"),
    "MECH_INT80": pc.MECHANISMS.index("int80"),
    "MAX_HANDLERS": pc.MAX_HANDLERS, "MAX_STUBS": pc.MAX_STUBS,
    "MAX_FILTER_PIDS": pc.MAX_FILTER_PIDS, "CALL_FORKS": pc.CALL_FORKS,
    "CALL_NO_RETURN": pc.CALL_NO_RETURN,
    "MECHS": len(pc.MECHANISMS), "REG_GENERAL": len(pc.REGISTERS), "ARG_AT": pc.ARG_AT,
    **{f"REG_{c_register(name)}": i for i, name in enumerate(pc.REGISTERS)},
    **{f"PERCPU_{name.upper()}": i for i, name in enumerate(pc.PERCPU_REGISTERS)},
}


def python_items(layout: struct.Struct) -> list[tuple[int, int]]:
    """(offset, size) of each item of a little-endian ``struct`` format, repeats expanded."""
    fmt = layout.format
    assert fmt[0] == "<", f"{fmt}: the capture file is little-endian with no padding"
    items, prefix = [], "<"
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt[1:]):
        repeats = 1 if code == "s" else int(count or 1)
        one = f"{count}{code}" if code == "s" else code
        for _ in range(repeats):
            items.append((struct.calcsize(prefix), struct.calcsize("<" + one)))
            prefix += one
    assert struct.calcsize(prefix) == layout.size
    return items


def c_program() -> str:
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "channel_layout.h"',
             "int main(void) {"]
    for name, _, _, members in LAYOUT:
        for member in members:
            lines.append(f'  printf("field {name}.{member} %zu %zu\\n", '
                         f"offsetof(struct {name}, {member}), "
                         f"sizeof(((struct {name} *)0)->{member}));")
    for name in {*WHOLE, "header", "config"}:
        lines.append(f'  printf("sizeof {name} %zu\\n", sizeof(struct {name}));')
    for word in WORDS:
        lines.append(f'  printf("field header.{word} %zu %zu\\n", '
                     f"offsetof(struct header, {word}), sizeof(((struct header *)0)->{word}));")
    lines.append('  printf("field config.calls %zu 0\\n", offsetof(struct config, calls));')
    lines.append('  printf("field config.rules %zu 0\\n", offsetof(struct config, rules));')
    lines.append('  printf("field config.handler %zu 0\\n", offsetof(struct config, handler));')
    lines.append('  printf("field config.tasks %zu 0\\n", offsetof(struct config, tasks));')
    lines.append('  printf("field config.kernel %zu 0\\n", offsetof(struct config, kernel));')
    lines.append('  printf("sizeof handler_config %zu\\n", sizeof(struct handler_config));')
    lines.append('  printf("field handler_config.stubs %zu 0\\n", '
                 'offsetof(struct handler_config, stubs));')
    lines.append('  printf("field handler_config.handlers %zu 0\\n", '
                 'offsetof(struct handler_config, handlers));')
    for constant in CONSTANTS:
        lines.append(f'  printf("const {constant} %lld\\n", (long long)({constant}));')
    lines.append('  printf("magic MAGIC %s\\n", MAGIC);')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, ...] | str]:
    gcc = gcc_or_skip("channel_layout.h")
    work = tmp_path_factory.mktemp("layout")
    source, program = work / "layout.c", work / "layout"
    source.write_text(c_program())
    subprocess.run([gcc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(PLUGIN_DIR),
                    "-o", str(program), str(source)], check=True, capture_output=True,
                   text=True)
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout
    found: dict[str, tuple[int, ...] | str] = {}
    for line in out.splitlines():
        kind, name, *values = line.split(" ")
        found[f"{kind} {name}"] = (" ".join(values) if kind == "magic"
                                   else tuple(int(v) for v in values))
    return found


@pytest.mark.parametrize(("struct_name", "layout", "start", "members"), LAYOUT,
                         ids=[f"{row[0]}:{row[3][0]}..{row[3][-1]}" for row in LAYOUT])
def test_every_field_python_packs_sits_where_the_c_header_puts_it(
        c_layout, struct_name, layout, start, members) -> None:
    items = python_items(layout)
    assert len(items) == len(members), f"{layout.format}: one C member per item"
    for (offset, size), member in zip(items, members, strict=True):
        assert c_layout[f"field {struct_name}.{member}"] == (start + offset, size), member


def test_whole_structs_have_the_size_python_steps_by(c_layout) -> None:
    for name, layout in WHOLE.items():
        assert c_layout[f"sizeof {name}"] == (layout.size,), name
    # The header's fixed part ends where the counters start; the config's where calls do.
    assert c_layout["field header.head"][0] == pc._HEADER.size
    assert c_layout["field config.calls"][0] == pc._CONFIG_HEAD.size
    # configure() finds the rule table after one call table per ABI.
    assert c_layout["field config.rules"][0] == (
        pc._CONFIG_HEAD.size + len(pc.ABI_NAMES) * pc.MAX_NR * pc._CALL.size)
    # ... and the handler configuration after the rule table, its stubs, then handlers.
    assert c_layout["field config.handler"][0] == (
        c_layout["field config.rules"][0] + pc.MAX_RULES * pc._RULE.size)
    assert c_layout["field handler_config.stubs"][0] == pc._HANDLER_HEAD.size
    assert c_layout["field handler_config.handlers"][0] == (
        pc._HANDLER_HEAD.size + pc.MAX_STUBS * pc._STUB.size)
    # ... and the task filter right after it.
    assert c_layout["sizeof handler_config"] == (pc._HANDLER_CONFIG_SIZE,)
    assert c_layout["field config.tasks"][0] == (
        c_layout["field config.handler"][0] + pc._HANDLER_CONFIG_SIZE)
    # ... and what tells the kernel's architecture right after that.
    assert c_layout["field config.kernel"][0] == (
        c_layout["field config.tasks"][0] + pc._TASK_FILTER.size)


def test_the_words_the_tracer_reads_and_writes_are_at_the_headers_offsets(c_layout) -> None:
    for word, offset in WORDS.items():
        assert c_layout[f"field header.{word}"] == (offset, 8), word


def test_constants_and_the_magic_agree(c_layout) -> None:
    for name, value in CONSTANTS.items():
        assert c_layout[f"const {name}"] == (value,), name
    assert c_layout["magic MAGIC"] == pc.MAGIC.decode()
