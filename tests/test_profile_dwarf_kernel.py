"""A DWARF profile of the lab's real kernel against the BTF profile of the same kernel.

The lab's kernel (``xenhpt.lab.kernel.ensure_kernel()``) has BTF; its ``-dbg`` package
(``linux-image-<release>-dbg``, ≈ 300 MB download, cached under the lab's cache) has the
DWARF and a real System.map. Both profiles must give every named struct the same layout
(anonymous members included), every symbol the address kallsyms gives, and the symbol
table reader must agree with the package's System.map. For the lab kernel and for
bookworm's current i386 686-pae kernel (no BTF: the case ``--dwarf`` exists for; its
``-dbg`` package is a 770 MB download, also cached), gdb, a DWARF reader independent of
pahole, must see the same layout of every struct xenhpt reads.

Slow and a big download, so not in the default run: ``make dwarf`` (``pytest -s -m dwarf
tests/test_profile_dwarf_kernel.py``) runs it and prints the counts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xenhpt.lab.apt import PrivateApt
from xenhpt.lab.kernel import ensure_kernel
from xenhpt.lab.paths import cache_dir
from xenhpt.profile import btf as B
from xenhpt.profile.build import build_profile, parse_system_map
from xenhpt.profile.dwarf import build_profile_from_dwarf
from xenhpt.profile.isf import Profile
from xenhpt.profile.kimage import KernelImage

pytestmark = [pytest.mark.matrix, pytest.mark.dwarf]

MAX_DEPTH = 8  # anonymous struct-in-union nesting in real kernels is < 5


class I386Apt(PrivateApt):
    """The lab's private package list, for i386 packages of bookworm and its security
    updates (where the newest kernels are)."""

    SOURCES = ("deb http://deb.debian.org/debian bookworm main\n"
               "deb http://deb.debian.org/debian-security bookworm-security main\n")

    def __init__(self) -> None:
        super().__init__(cache_dir() / "dbg" / "apt-i386", ("bookworm", "bookworm-security"))

    def _options(self) -> list[str]:
        return [*super()._options(), "-o", "APT::Architecture=i386",
                "-o", "APT::Architectures=i386"]

    def update(self) -> None:
        stamp = self._state / "lists" / ".updated-for"
        if stamp.exists() and stamp.read_text() == self.SOURCES:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self._state / sub).mkdir(parents=True, exist_ok=True)
        (self._state / "sources.list").write_text(self.SOURCES)
        self._run("apt-get", "update")
        stamp.write_text(self.SOURCES)


def fetch_debug_vmlinux(release: str, apt: PrivateApt | None = None) -> tuple[Path, Path]:
    """(vmlinux, System.map) of ``linux-image-<release>-dbg``, downloaded once (with the
    host's apt, or ``apt``) and cached; only those two files are unpacked (the package
    holds 1.7 GB of module debug info)."""
    package = f"linux-image-{release}-dbg"
    root = cache_dir() / "dbg" / package
    boot = root / "usr" / "lib" / "debug" / "boot"
    vmlinux, system_map = boot / f"vmlinux-{release}", boot / f"System.map-{release}"
    if vmlinux.exists() and system_map.exists():
        return vmlinux, system_map
    debs = root / "debs"
    if not list(debs.glob("*.deb")):
        if apt is not None:
            apt.download([package], debs)
        else:
            debs.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["apt-get", "download", "-q", package], cwd=debs,
                                  capture_output=True, text=True)
            if done.returncode != 0:  # e.g. a lab kernel from a suite the host lacks
                pytest.fail(f"apt-get download {package}: {done.stderr.strip()[-300:]}")
    deb = sorted(debs.glob("*.deb"))[-1]
    members = [f"./usr/lib/debug/boot/{p.name}" for p in (vmlinux, system_map)]
    tarball = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(root), *members], stdin=tarball.stdout, check=True)
    assert tarball.wait() == 0
    return vmlinux, system_map


def _need_pahole() -> None:
    if shutil.which("pahole") is None:
        pytest.skip("pahole not found: install Debian's 'dwarves' (tools/setup.sh does)")


@pytest.fixture(scope="module")
def kernel_files() -> dict[str, Any]:
    """The lab's 64-bit kernel: its image (with BTF) and its -dbg vmlinux."""
    _need_pahole()
    kernel = ensure_kernel()
    vmlinux, system_map = fetch_debug_vmlinux(kernel.release)
    return {"image": kernel.image, "vmlinux": vmlinux, "system_map": system_map}


@pytest.fixture(scope="module")
def i386_files() -> dict[str, Any]:
    """Bookworm's current 686-pae kernel (release from the meta package's dependency)."""
    _need_pahole()
    apt = I386Apt()
    apt.update()
    image = apt.depends("linux-image-686-pae", r"linux-image-\d[\w.+~-]*-686-pae")
    assert image is not None, "linux-image-686-pae depends on no versioned image"
    vmlinux, system_map = fetch_debug_vmlinux(image.removeprefix("linux-image-"), apt)
    return {"vmlinux": vmlinux, "system_map": system_map}


@pytest.fixture(scope="module", params=["amd64", "i386"])
def debug_kernel(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Either -dbg vmlinux, with its DWARF profile."""
    files = dict(request.getfixturevalue("kernel_files" if request.param == "amd64"
                                         else "i386_files"))
    files["isf"] = build_profile_from_dwarf(files["vmlinux"])
    files["pointer"] = 8 if request.param == "amd64" else 4
    return files


def test_pointer_size_is_the_kernels(debug_kernel: dict[str, Any]) -> None:
    isf = debug_kernel["isf"]
    assert isf["base_types"]["pointer"]["size"] == debug_kernel["pointer"]
    assert isf["base_types"]["long unsigned int"]["size"] == debug_kernel["pointer"]
    assert isf["symbols"]["init_task"]["type"] == {"kind": "struct", "name": "task_struct"}
    print(f"\n{debug_kernel['vmlinux'].name}: {len(isf['user_types'])} types, "
          f"{len(isf['symbols'])} symbols, pointer {debug_kernel['pointer']} bytes")


@pytest.fixture(scope="module")
def profiles(kernel_files: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(BTF profile of the image, DWARF profile of the -dbg vmlinux)."""
    return (build_profile(kernel=kernel_files["image"]),
            build_profile_from_dwarf(kernel_files["vmlinux"]))


def _shape(isf: dict[str, Any], desc: dict[str, Any], depth: int = 0) -> Any:
    """A type descriptor with anonymous aggregates spelt out: their ``unnamed_<btf id>``
    names depend on type order, which differs between two BTF encodings."""
    name = desc.get("name", "")
    if desc.get("kind") in ("struct", "union") and name.startswith("unnamed_"):
        if depth > MAX_DEPTH:
            return ("too deep",)
        body = isf["user_types"][name]
        return (desc["kind"], body["size"], _fields(isf, body, depth + 1))
    if desc.get("kind") == "enum" and name.startswith("unnamed_"):
        return ("enum", tuple(sorted(isf["enums"][name]["constants"].items())))
    if "subtype" in desc:
        return (desc["kind"], desc.get("count"), _shape(isf, desc["subtype"], depth + 1))
    if desc.get("kind") == "bitfield":
        return ("bitfield", desc["bit_position"], desc["bit_length"],
                _shape(isf, desc["type"], depth + 1))
    return (desc.get("kind"), name)


def _fields(isf: dict[str, Any], body: dict[str, Any], depth: int) -> tuple:
    return tuple(sorted((fname, f["offset"], _shape(isf, f["type"], depth))
                        for fname, f in body["fields"].items()))


def _layout(isf: dict[str, Any], name: str) -> tuple:
    body = isf["user_types"][name]
    return (body["kind"], body["size"], _fields(isf, body, 0))


def _names_defined_twice(image: Path) -> set[str]:
    parsed = B.parse_btf(KernelImage.open(image).section_data(".BTF") or b"")
    seen: set[str] = set()
    twice: set[str] = set()
    for t in parsed.types:
        if t and t.kind in (B.STRUCT, B.UNION) and t.name and t.members:
            (twice if t.name in seen else seen).add(t.name)
    return twice


def _structs_xenhpt_reads() -> set[str]:
    """Struct names the source passes to Profile.offset/size/fields/field_type."""
    root = Path(__file__).resolve().parent.parent / "xenhpt"
    pattern = re.compile(r'\.(?:offset|size|fields|field_type|has_field)\(\s*"([a-z_0-9]+)"')
    return {m.group(1) for path in root.rglob("*.py") for m in pattern.finditer(path.read_text())}


def test_every_named_struct_has_the_layout_the_btf_profile_gives(
        profiles: tuple[dict[str, Any], dict[str, Any]], kernel_files: dict[str, Any]) -> None:
    from_btf, from_dwarf = profiles
    named = sorted(n for n in from_btf["user_types"] if not n.startswith("unnamed_"))
    assert set(named) == {n for n in from_dwarf["user_types"] if not n.startswith("unnamed_")}
    differ = [n for n in named if _layout(from_btf, n) != _layout(from_dwarf, n)]
    twice = _names_defined_twice(kernel_files["image"])
    read = _structs_xenhpt_reads() & set(named)
    print(f"\n{len(named)} named structs/unions, {len(differ)} differ: {differ}; "
          f"{len(read)} of them read by xenhpt, all identical: {not set(differ) & read}")
    # Two files may define a struct of one name differently (file-local helper structs);
    # a profile keeps the first, and the two encodings list them in another order.
    assert set(differ) <= twice, sorted(set(differ) - twice)
    assert not set(differ) & read
    assert len(read) > 40  # the grep found the structs the linux/ layer reads
    assert from_btf["base_types"] == from_dwarf["base_types"]
    enums = [n for n in from_btf["enums"] if not n.startswith("unnamed_")]
    assert all(from_btf["enums"][n] == from_dwarf["enums"].get(n) for n in enums)


def test_symbols_have_the_addresses_and_types_kallsyms_and_btf_give(
        profiles: tuple[dict[str, Any], dict[str, Any]]) -> None:
    from_btf, from_dwarf = profiles
    kallsyms, symtab = from_btf["symbols"], from_dwarf["symbols"]
    common = set(kallsyms) & set(symtab)
    moved = sorted(n for n in common if kallsyms[n]["address"] != symtab[n]["address"])
    typed = sorted(n for n in common if "type" in kallsyms[n] and _shape(
        from_btf, kallsyms[n]["type"]) != _shape(from_dwarf, symtab[n].get("type", {})))
    only_kallsyms = set(kallsyms) - set(symtab)
    print(f"\nsymbols: {len(kallsyms)} from kallsyms, {len(symtab)} from .symtab, "
          f"{len(common)} in both, {len(moved)} at another address, {len(typed)} typed "
          f"otherwise, {len(only_kallsyms)} only in kallsyms")
    assert not moved, moved[:20]
    assert not typed, typed[:20]
    assert not only_kallsyms, sorted(only_kallsyms)[:20]
    assert symtab["linux_banner"] == kallsyms["linux_banner"]


def test_symbol_table_agrees_with_the_packages_system_map(debug_kernel: dict[str, Any]) -> None:
    symtab = KernelImage.open_mapped(debug_kernel["vmlinux"]).symbol_table()
    system_map = parse_system_map(debug_kernel["system_map"])
    moved = sorted(n for n in set(symtab) & set(system_map) if symtab[n] != system_map[n])
    missing = sorted(set(system_map) - set(symtab))
    # Some kernels' mksysmap (6.1's, not 5.10's) leaves out the export strings; we keep them.
    extra = sorted(n for n in set(symtab) - set(system_map) if not n.startswith("__kstrtab"))
    print(f"\nSystem.map {len(system_map)} names, .symtab {len(symtab)}: {len(missing)} "
          f"missing, {len(extra)} extra (not counting __kstrtab*), {len(moved)} moved")
    assert not missing, missing[:20]
    assert not extra, extra[:20]
    assert not moved, moved[:20]


# Runs inside gdb: the layout of each struct as gdb's own DWARF reader sees it, anonymous
# members lifted into the parent as Profile.fields does: name -> [bit offset, bit size,
# byte size].
GDB_LAYOUT = """
import json
import gdb

def flatten(t, base, out, depth):
    for f in t.fields():
        ft = f.type.strip_typedefs()
        if not f.name and ft.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION) and depth < 8:
            flatten(ft, base + f.bitpos, out, depth + 1)
        elif f.name:
            out.setdefault(f.name, [base + f.bitpos, f.bitsize, ft.sizeof])

result = {}
for name in json.load(open(NAMES)):
    result[name] = None
    for tag in ("struct", "union"):
        try:
            t = gdb.lookup_type(tag + " " + name).strip_typedefs()
        except gdb.error:
            continue
        out = {}
        flatten(t, 0, out, 0)
        result[name] = {"size": t.sizeof, "fields": out}
        break
json.dump(result, open(OUT, "w"))
"""


def _size(isf: dict[str, Any], desc: dict[str, Any]) -> int:
    kind, name = desc["kind"], desc.get("name")
    if kind == "pointer":
        return isf["base_types"]["pointer"]["size"]
    if kind == "array":
        return desc["count"] * _size(isf, desc["subtype"])
    table = {"base": "base_types", "struct": "user_types", "union": "user_types",
             "enum": "enums"}[kind]
    return isf[table][name]["size"]


def test_structs_xenhpt_reads_have_the_layout_gdb_reads_from_the_dwarf(
        debug_kernel: dict[str, Any], tmp_path: Path) -> None:
    """An independent reader of the same DWARF: gdb, not pahole."""
    if shutil.which("gdb") is None:
        pytest.skip("gdb not found: it is the independent DWARF reader of this check")
    isf = debug_kernel["isf"]
    names = sorted(_structs_xenhpt_reads() & set(isf["user_types"]))
    (tmp_path / "names.json").write_text(json.dumps(names))
    (tmp_path / "layout.py").write_text(GDB_LAYOUT)
    done = subprocess.run(
        ["gdb", "-batch", "-nx",
         "-ex", f"python NAMES = {str(tmp_path / 'names.json')!r}; "
                f"OUT = {str(tmp_path / 'out.json')!r}",
         "-ex", f"source {tmp_path / 'layout.py'}", str(debug_kernel["vmlinux"])],
        capture_output=True, text=True, timeout=600)
    assert (tmp_path / "out.json").exists(), done.stderr[-2000:]
    gdb_layout = json.loads((tmp_path / "out.json").read_text())
    isf_path = tmp_path / "prof.json"
    isf_path.write_text(json.dumps(isf))
    profile = Profile.load(isf_path, use_cache=False)
    wrong: list[str] = []
    fields = 0
    for name in names:
        theirs = gdb_layout[name]
        assert theirs is not None, f"gdb knows no struct/union {name}"
        if theirs["size"] != profile.size(name):
            wrong.append(f"sizeof {name}")
        ours = profile.fields(name)
        if set(ours) != set(theirs["fields"]):
            wrong.append(f"{name} members: {sorted(set(ours) ^ set(theirs['fields']))}")
        for field, (bit_offset, bit_size, size) in theirs["fields"].items():
            if field not in ours:
                continue
            offset, desc = ours[field]
            if desc["kind"] == "bitfield":
                got = [8 * offset + desc["bit_position"], desc["bit_length"], size]
            else:
                got = [8 * offset, 0, _size(isf, desc)]
            fields += 1
            if got != [bit_offset, bit_size, size]:
                wrong.append(f"{name}.{field}: {got} vs gdb {[bit_offset, bit_size, size]}")
    print(f"\n{len(names)} structs xenhpt reads, {fields} members compared with gdb: "
          f"{len(wrong)} differ {wrong[:10]}")
    assert not wrong, wrong[:20]
    assert fields > 500
