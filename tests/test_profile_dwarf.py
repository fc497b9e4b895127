"""``profile build --dwarf``: an ISF from DWARF, checked against what the compiler says.

A tiny "kernel" (a few structs with the shapes the real one has: nested struct, union,
bitfields, arrays, pointers, an enum, a function pointer, anonymous members) is linked
with ``gcc -g`` for x86-64 and for i386; a helper program built from the same header
prints ``offsetof``/``sizeof`` and where each bitfield's bits lie, and the profile must
say the same. Needs gcc (with multilib) and pahole (package dwarves); tools/setup.sh
installs both.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xenhpt.errors import ProfileError
from xenhpt.profile import dwarf
from xenhpt.profile.dwarf import build_profile_from_dwarf

XENHPT = str(Path(sys.executable).with_name("xenhpt"))

HEADER = r"""
struct list_head { struct list_head *next, *prev; };
enum colour { RED, GREEN = 5, BLUE = 300 };
struct inner { char tag; long value; short pair[3]; };
union either { int i; double d; char bytes[12]; };
struct mm_struct { struct inner in; unsigned long pgd; struct list_head mmlist; };
struct task_struct {
    volatile long state;
    unsigned int flags : 3, prio : 7, ptraced : 1;
    struct list_head tasks;
    struct mm_struct *mm;
    union either u;
    enum colour colour;
    char comm[16];
    int (*handler)(struct task_struct *, int);
    struct { int a; short b; } pair;
    union { long x; void *p; };
    unsigned long long big : 40;
    unsigned char tail;
};
"""

KERNEL = r"""
#include "tiny.h"
struct task_struct init_task;
struct mm_struct init_mm;
const char linux_banner[] = "Linux version 0.0.0-dwarf-test (gcc) #1\n";
void _start(void) {}
"""

# (struct, member path): each is printed by the helper with offsetof/sizeof.
FIELDS = [
    ("list_head", "next"), ("list_head", "prev"),
    ("inner", "tag"), ("inner", "value"), ("inner", "pair"),
    ("either", "i"), ("either", "d"), ("either", "bytes"),
    ("mm_struct", "in"), ("mm_struct", "in.value"), ("mm_struct", "pgd"), ("mm_struct", "mmlist"),
    ("task_struct", "state"), ("task_struct", "tasks"), ("task_struct", "tasks.prev"),
    ("task_struct", "mm"), ("task_struct", "u"), ("task_struct", "u.d"),
    ("task_struct", "colour"), ("task_struct", "comm"), ("task_struct", "handler"),
    ("task_struct", "pair"), ("task_struct", "pair.b"), ("task_struct", "x"),
    ("task_struct", "p"), ("task_struct", "tail"),
]  # fmt: skip
BITFIELDS = [("task_struct", f) for f in ("flags", "prio", "ptraced", "big")]

HELPER = r"""
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "tiny.h"
#define F(S, f) printf("field %s %s %zu %zu\n", #S, #f, offsetof(struct S, f), \
                       sizeof(((struct S *)0)->f))
#define U(S, f) printf("field %s %s %zu %zu\n", #S, #f, offsetof(union S, f), \
                       sizeof(((union S *)0)->f))
/* A bitfield's bits: set it to all ones in a zeroed object, then find them. */
#define B(S, f) do { union { struct S s; unsigned char b[sizeof(struct S)]; } o; \
    memset(&o, 0, sizeof o); o.s.f = ~0ULL; bits(#S, #f, o.b, sizeof o.b); } while (0)
static void bits(const char *s, const char *f, const unsigned char *b, size_t n) {
    size_t first = (size_t)-1, count = 0;
    for (size_t i = 0; i < 8 * n; i++)
        if (b[i / 8] >> (i % 8) & 1) { if (first == (size_t)-1) first = i; count++; }
    printf("bits %s %s %zu %zu\n", s, f, first, count);
}
int main(void) {
    printf("pointer %zu\n", sizeof(void *));
    printf("size list_head %zu\nsize inner %zu\nsize either %zu\n", sizeof(struct list_head),
           sizeof(struct inner), sizeof(union either));
    printf("size mm_struct %zu\nsize task_struct %zu\n", sizeof(struct mm_struct),
           sizeof(struct task_struct));
    printf("enum colour %zu\n", sizeof(enum colour));
%(lines)s
    return 0;
}
"""


def _helper_source() -> str:
    lines = [f"    {'U' if s == 'either' else 'F'}({s}, {f});" for s, f in FIELDS]
    lines += [f"    B({s}, {f});" for s, f in BITFIELDS]
    return HELPER.replace("%(lines)s", "\n".join(lines))


def _need_tools() -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: it compiles the test kernel (tools/setup.sh installs it)")
    if shutil.which("pahole") is None:
        pytest.skip("pahole not found: install Debian's 'dwarves' (tools/setup.sh does)")


def _gcc(args: list[str], cwd: Path) -> None:
    done = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        if "-m32" in args and ("gnu/stubs-32.h" in done.stderr or "cannot find" in done.stderr):
            pytest.skip("gcc cannot build 32-bit programs: install gcc-multilib")
        raise AssertionError(f"gcc {' '.join(args)} failed:\n{done.stderr}")


@pytest.fixture(scope="module", params=["-m64", "-m32"])
def built(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """(tiny vmlinux, its ISF from DWARF, what the helper printed) for one word size."""
    _need_tools()
    arch = request.param
    d = tmp_path_factory.mktemp("dwarf" + arch)
    (d / "tiny.h").write_text(HEADER)
    (d / "kernel.c").write_text(KERNEL)
    (d / "helper.c").write_text(_helper_source())
    _gcc([arch, "-g", "-O0", "-nostdlib", "-static", "-no-pie", "-o", "vmlinux", "kernel.c"], d)
    _gcc([arch, "-O0", "-Wno-overflow", "-o", "helper", "helper.c"], d)
    truth = subprocess.run([str(d / "helper")], capture_output=True, text=True,
                           check=True).stdout
    return d / "vmlinux", build_profile_from_dwarf(d / "vmlinux"), truth


def _size(isf: dict[str, Any], desc: dict[str, Any]) -> int:
    kind = desc["kind"]
    if kind == "base":
        return isf["base_types"][desc["name"]]["size"]
    if kind == "pointer":
        return isf["base_types"]["pointer"]["size"]
    if kind in ("struct", "union"):
        return isf["user_types"][desc["name"]]["size"]
    if kind == "enum":
        return isf["enums"][desc["name"]]["size"]
    if kind == "array":
        return desc["count"] * _size(isf, desc["subtype"])
    raise AssertionError(f"no size for {desc}")


def _member(isf: dict[str, Any], struct: str, name: str) -> tuple[int, dict[str, Any]]:
    """(offset, descriptor) of ``name`` in ``struct``, looking into anonymous members."""
    fields = isf["user_types"][struct]["fields"]
    if name in fields:
        return fields[name]["offset"], fields[name]["type"]
    for field in fields.values():
        if field.get("anonymous"):
            try:
                inner_off, desc = _member(isf, field["type"]["name"], name)
            except KeyError:
                continue
            return field["offset"] + inner_off, desc
    raise KeyError(f"{struct}.{name}")


def _path(isf: dict[str, Any], struct: str, path: str) -> tuple[int, int]:
    offset, desc = 0, {"kind": "struct", "name": struct}
    for part in path.split("."):
        off, desc = _member(isf, desc["name"], part)
        offset += off
    return offset, _size(isf, desc)


def test_offsets_and_sizes_match_the_compiler(built: tuple[Path, dict[str, Any], str]) -> None:
    _vmlinux, isf, truth = built
    checked = 0
    for line in truth.splitlines():
        word, *rest = line.split()
        if word == "field":
            struct, path, offset, size = rest
            assert _path(isf, struct, path) == (int(offset), int(size)), f"{struct}.{path}"
        elif word == "size":
            assert isf["user_types"][rest[0]]["size"] == int(rest[1]), rest[0]
        elif word == "enum":
            assert isf["enums"][rest[0]]["size"] == int(rest[1])
        else:
            continue
        checked += 1
    assert checked == len(FIELDS) + 6


def test_bitfields_sit_on_the_bits_the_compiler_uses(
        built: tuple[Path, dict[str, Any], str]) -> None:
    _vmlinux, isf, truth = built
    seen = 0
    for line in truth.splitlines():
        if line.startswith("bits "):
            _, struct, name, first, count = line.split()
            offset, desc = _member(isf, struct, name)
            assert desc["kind"] == "bitfield"
            assert (8 * offset + desc["bit_position"], desc["bit_length"]) == \
                (int(first), int(count)), f"{struct}.{name}"
            seen += 1
    assert seen == len(BITFIELDS)


def test_pointer_size_and_byte_order_follow_the_elf_class(
        built: tuple[Path, dict[str, Any], str]) -> None:
    _vmlinux, isf, truth = built
    pointer = int(truth.split("pointer ")[1].split()[0])
    assert isf["base_types"]["pointer"] == {
        "size": pointer, "signed": False, "kind": "int", "endian": "little"}
    assert isf["base_types"]["long int"]["size"] == pointer
    handler = isf["user_types"]["task_struct"]["fields"]["handler"]["type"]
    assert handler == {"kind": "pointer", "subtype": {"kind": "function"}}
    assert isf["enums"]["colour"]["constants"] == {"RED": 0, "GREEN": 5, "BLUE": 300}


def test_symbols_and_banner_come_from_the_elf(built: tuple[Path, dict[str, Any], str]) -> None:
    vmlinux, isf, _truth = built
    nm = subprocess.run(["nm", str(vmlinux)], capture_output=True, text=True, check=True)
    addresses = {parts[2]: int(parts[0], 16) for parts in map(str.split, nm.stdout.splitlines())
                 if len(parts) == 3}
    for name in ("init_task", "init_mm", "linux_banner", "_start"):
        assert isf["symbols"][name]["address"] == addresses[name], name
    banner = base64.b64decode(isf["symbols"]["linux_banner"]["constant_data"])
    assert banner == b"Linux version 0.0.0-dwarf-test (gcc) #1\n\0"
    assert isf["symbols"]["init_task"]["type"] == {"kind": "struct", "name": "task_struct"}
    assert isf["metadata"]["linux"]["types"][0]["kind"] == "dwarf"


def test_cli_writes_an_i386_profile(built: tuple[Path, dict[str, Any], str],
                                    tmp_path: Path) -> None:
    vmlinux, isf, _truth = built
    out = tmp_path / "prof.json.xz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([XENHPT, "profile", "build", "--dwarf", str(vmlinux), "-o", str(out)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "types" in done.stdout
    import lzma

    written = json.loads(lzma.decompress(out.read_bytes()))
    assert written["user_types"] == isf["user_types"]


def test_a_file_that_is_not_elf_is_one_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"MZ" + bytes(4096))
    with pytest.raises(ProfileError, match="not an ELF file"):
        build_profile_from_dwarf(bogus)


def test_an_elf_without_dwarf_is_one_clear_error(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found (tools/setup.sh installs it)")
    (tmp_path / "tiny.h").write_text(HEADER)
    (tmp_path / "kernel.c").write_text(KERNEL)
    _gcc(["-O0", "-nostdlib", "-static", "-no-pie", "-o", "vmlinux", "kernel.c"], tmp_path)
    with pytest.raises(ProfileError, match=r"no DWARF .* -dbg package"):
        build_profile_from_dwarf(tmp_path / "vmlinux")


def test_missing_pahole_names_the_package_to_install(
        built: tuple[Path, dict[str, Any], str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dwarf.shutil, "which", lambda _name: None)
    with pytest.raises(ProfileError, match="install Debian's 'dwarves'"):
        build_profile_from_dwarf(built[0])


def test_isf_validates_against_volatility_schema(built: tuple[Path, dict[str, Any], str]) -> None:
    import jsonschema  # both in the dev extras: a missing one is a broken set-up
    import volatility3

    schema_file = Path(volatility3.__file__).parent / "schemas" / "schema-6.2.0.json"
    jsonschema.Draft4Validator(json.loads(schema_file.read_text())).validate(built[1])


def test_a_truncated_or_corrupt_elf_is_a_profile_error_never_a_crash(
        built: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    data = built[0].read_bytes()
    broken = tmp_path / "vmlinux"
    cuts = [4, 20, 51, 60, 100, len(data) // 2, len(data) - 100]
    for cut in cuts:
        broken.write_bytes(data[:cut])
        with pytest.raises(ProfileError):
            build_profile_from_dwarf(broken)
    corrupt = bytearray(data)
    corrupt[0x20:0x30] = b"\xff" * 16  # program and section header offsets
    broken.write_bytes(bytes(corrupt))
    with pytest.raises(ProfileError, match="outside the file"):
        build_profile_from_dwarf(broken)


def test_an_elf_of_another_machine_is_one_clear_error(
        built: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    data = bytearray(built[0].read_bytes())
    data[0x12:0x14] = (183).to_bytes(2, "little")  # EM_AARCH64
    (tmp_path / "vmlinux").write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="not x86"):
        build_profile_from_dwarf(tmp_path / "vmlinux")


# Volatility's schema module warns about its own $schema reference (jsonschema 4.26).
@pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning")
def test_volatility_reads_the_profile_with_the_kernels_pointer_size(
        built: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    from volatility3.framework import contexts
    from volatility3.framework.symbols import intermed

    _vmlinux, isf, truth = built
    path = tmp_path / "prof.json"
    path.write_text(json.dumps(isf))
    table = intermed.IntermediateSymbolTable(contexts.Context(), "test", "tiny",
                                             isf_url=path.as_uri())
    said = {" ".join(line.split()[:-1]): int(line.split()[-1]) for line in truth.splitlines()}
    offsets = {" ".join(line.split()[1:3]): int(line.split()[3])
               for line in truth.splitlines() if line.startswith("field ")}
    assert table.get_type("pointer").size == said["pointer"]
    task = table.get_type("task_struct")
    assert task.size == said["size task_struct"]
    assert task.relative_child_offset("comm") == offsets["task_struct comm"]
    assert task.relative_child_offset("handler") == offsets["task_struct handler"]
    assert table.get_symbol("init_task").address == isf["symbols"]["init_task"]["address"]
