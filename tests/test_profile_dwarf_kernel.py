"""A DWARF profile of the lab's real kernel against the BTF profile of the same kernel.

The lab's kernel (``xenhpt.lab.kernel.ensure_kernel()``) has BTF; its ``-dbg`` package
(``linux-image-<release>-dbg``, ≈ 300 MB download, cached under the lab's cache) has the
DWARF and a real System.map. Both profiles must give every named struct the same layout
(anonymous members included), every symbol the address kallsyms gives, and the symbol
table reader must agree with the package's System.map.

Slow and a big download, so not in the default run: ``make dwarf`` (``pytest -s -m dwarf
tests/test_profile_dwarf_kernel.py``) runs it and prints the counts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xenhpt.lab.kernel import ensure_kernel
from xenhpt.lab.paths import cache_dir
from xenhpt.profile import btf as B
from xenhpt.profile.build import build_profile, parse_system_map
from xenhpt.profile.dwarf import build_profile_from_dwarf
from xenhpt.profile.kimage import KernelImage

pytestmark = [pytest.mark.matrix, pytest.mark.dwarf]

MAX_DEPTH = 8  # anonymous struct-in-union nesting in real kernels is < 5


def fetch_debug_vmlinux(release: str) -> tuple[Path, Path]:
    """(vmlinux, System.map) of ``linux-image-<release>-dbg``, downloaded once and cached;
    only those two files are unpacked (the package holds 1.7 GB of module debug info)."""
    package = f"linux-image-{release}-dbg"
    root = cache_dir() / "dbg" / package
    boot = root / "usr" / "lib" / "debug" / "boot"
    vmlinux, system_map = boot / f"vmlinux-{release}", boot / f"System.map-{release}"
    if vmlinux.exists() and system_map.exists():
        return vmlinux, system_map
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob("*.deb")):
        subprocess.run(["apt-get", "download", "-q", package], cwd=debs, check=True,
                       capture_output=True)
    deb = sorted(debs.glob("*.deb"))[-1]
    members = [f"./usr/lib/debug/boot/{p.name}" for p in (vmlinux, system_map)]
    tarball = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(root), *members], stdin=tarball.stdout, check=True)
    assert tarball.wait() == 0
    return vmlinux, system_map


@pytest.fixture(scope="module")
def kernel_files() -> dict[str, Any]:
    if shutil.which("pahole") is None:
        pytest.skip("pahole not found: install Debian's 'dwarves' (tools/setup.sh does)")
    kernel = ensure_kernel()
    vmlinux, system_map = fetch_debug_vmlinux(kernel.release)
    return {"image": kernel.image, "vmlinux": vmlinux, "system_map": system_map}


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


def test_symbol_table_agrees_with_the_packages_system_map(kernel_files: dict[str, Any]) -> None:
    image = KernelImage.open_mapped(kernel_files["vmlinux"])
    symtab = image.symbol_table()
    system_map = parse_system_map(kernel_files["system_map"])
    moved = sorted(n for n in set(symtab) & set(system_map) if symtab[n] != system_map[n])
    missing = sorted(set(system_map) - set(symtab))
    extra = sorted(set(symtab) - set(system_map))
    print(f"\nSystem.map {len(system_map)} names, .symtab {len(symtab)}: {len(missing)} "
          f"missing, {len(extra)} extra, {len(moved)} at another address")
    assert not missing, missing[:20]
    assert not extra, extra[:20]
    assert not moved, moved[:20]
