"""Profiles built from the real Debian kernel image the lab fetched (BTF + kallsyms).

Expectations come from that kernel, never from a release number: layouts that are ABI
(pt_regs) or that Linux has kept for decades (pid and tgid side by side) are checked as
such, and every other value is checked against a second source in the same image
(kallsyms against BTF, the ISF against the image's own bytes)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from xenhpt.errors import ProfileError
from xenhpt.profile import Profile, build_profile, find_profile, write_profile
from xenhpt.profile.kallsyms import KallsymsTable, decode_kallsyms
from xenhpt.profile.kimage import KernelImage

from .conftest import lab_kernel


def kernel_image_path() -> Path:
    """The lab kernel image; ``XENHPT_KERNEL_IMAGE`` overrides the lab's cache."""
    if os.environ.get("XENHPT_KERNEL_IMAGE"):
        return Path(os.environ["XENHPT_KERNEL_IMAGE"])
    return lab_kernel().image


@pytest.fixture(scope="module")
def image_path() -> Path:
    path = kernel_image_path()
    if not path.is_file():
        pytest.fail(f"kernel image {path} absent")
    return path


@pytest.fixture(scope="module")
def release(image_path: Path) -> str:
    return image_path.name.removeprefix("vmlinuz-")


@pytest.fixture(scope="module")
def image(image_path: Path) -> KernelImage:
    return KernelImage.open(image_path)


@pytest.fixture(scope="module")
def kallsyms(image: KernelImage) -> KallsymsTable:
    return decode_kallsyms(image.elf)


@pytest.fixture(scope="module")
def isf(image_path: Path) -> dict[str, Any]:
    return build_profile(kernel=image_path)


@pytest.fixture(scope="module")
def profile(isf: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Profile:
    out = tmp_path_factory.mktemp("isf") / "kernel.json"
    write_profile(isf, out)
    return Profile.load(out, use_cache=False)


def test_bzimage_decompresses_to_elf_with_btf_section(image: KernelImage) -> None:
    assert image.elf[:4] == b"\x7fELF"
    btf = image.section_data(".BTF")
    assert btf is not None and btf[:2] == b"\x9f\xeb" and len(btf) > 1 << 20


def test_task_struct_offsets_come_from_btf(profile: Profile) -> None:
    fields = ("tasks", "mm", "pid", "tgid", "real_parent", "parent", "children", "sibling",
              "comm")
    offsets = {f: profile.offset("task_struct", f) for f in fields}
    size = profile.size("task_struct")
    assert all(0 < offset < size for offset in offsets.values()), (offsets, size)
    # Side by side since Linux 2.x, and list heads are two pointers.
    assert offsets["tgid"] == offsets["pid"] + 4
    assert offsets["parent"] == offsets["real_parent"] + 8
    assert offsets["sibling"] == offsets["children"] + 16
    assert profile.field_type("task_struct", "comm") == {
        "kind": "array",
        "count": 16,
        "subtype": {"kind": "base", "name": "char"},
    }


def test_mm_struct_pgd_is_found_inside_its_anonymous_struct(profile: Profile) -> None:
    assert 0 < profile.offset("mm_struct", "pgd") < profile.size("mm_struct")
    assert "pgd" not in profile_fields_raw(profile, "mm_struct")  # really nested


def profile_fields_raw(profile: Profile, struct: str) -> dict[str, Any]:
    return profile._user_types[struct]["fields"]


def test_required_types_are_present(profile: Profile) -> None:
    for struct in (
        "task_struct",
        "list_head",
        "mm_struct",
        "pt_regs",
        "thread_info",
        "cred",
        "pid",
    ):
        assert profile.size(struct) > 0, struct
    assert profile.size("pointer") == 8
    assert profile.offset("pt_regs", "orig_ax") == 15 * 8


def test_current_task_is_the_percpu_offset_in_kallsyms_and_btf(
    kallsyms: KallsymsTable, isf: dict[str, Any]
) -> None:
    assert kallsyms.absolute_percpu
    current = kallsyms.symbols()["current_task"]
    assert 0 < current < 1 << 21  # an offset into the per-CPU area, not an address
    sym = isf["symbols"]["current_task"]
    assert sym["address"] == current
    assert sym["type"] == {"kind": "pointer", "subtype": {"kind": "struct", "name": "task_struct"}}


def test_kallsyms_decodes_sane_ordered_names(image: KernelImage, kallsyms: KallsymsTable) -> None:
    assert len(kallsyms) > 50_000
    assert kallsyms.addresses == sorted(kallsyms.addresses)
    syms = kallsyms.symbols()
    text = image.sections[".text"]
    assert text.addr <= syms["entry_SYSCALL_64"] < text.addr + text.size
    assert syms["startup_64"] == syms["_text"] == kallsyms.relative_base == text.addr
    data = image.sections[".data"]
    assert data.addr <= syms["init_task"] < data.addr + data.size
    assert image.read_cstring(syms["linux_banner"]).startswith(b"Linux version ")
    types = dict(zip(kallsyms.names, kallsyms.types, strict=True))
    assert types["entry_SYSCALL_64"] == "T" and types["init_task"] == "D"


def test_kallsyms_percpu_encoding_is_detected_without_config(image: KernelImage,
                                                            kallsyms: KallsymsTable) -> None:
    current = kallsyms.symbols()["current_task"]
    assert decode_kallsyms(image.elf, None).symbols()["current_task"] == current
    assert image.config and image.config["CONFIG_KALLSYMS_ABSOLUTE_PERCPU"] == "y"


def test_isf_has_the_symbols_the_tracer_and_volatility_need(isf: dict[str, Any]) -> None:
    symbols = isf["symbols"]
    for name in (
        "init_task",
        "linux_banner",
        "current_task",
        "__per_cpu_offset",
        "init_top_pgt",
        "phys_base",
        "_text",
        "_stext",
        "entry_SYSCALL_64",
        "entry_SYSENTER_compat",
        "entry_SYSCALL_compat",
        "do_syscall_64",
        "do_fast_syscall_32",
        "syscall_exit_to_user_mode",
        "sys_call_table",
        "init_mm",
        "init_files",
    ):
        assert name in symbols, name
    # Debian's 6.1 kernels carry the 2023/24 backports: int 0x80 enters through
    # asm_int80_emulation/int80_emulation, and the ia32 table became ia32_sys_call().
    assert "entry_INT80_compat" in symbols or "asm_int80_emulation" in symbols
    assert "ia32_sys_call_table" in symbols or "ia32_sys_call" in symbols
    assert sum(n.startswith("__x64_sys_") for n in symbols) > 300
    assert sum(n.startswith("__ia32_sys_") for n in symbols) > 300
    assert all(0 <= s["address"] < 1 << 64 for s in symbols.values())
    assert symbols["init_task"]["type"] == {"kind": "struct", "name": "task_struct"}
    table = symbols["sys_call_table"]["type"]
    assert table["kind"] == "array" and 400 < table["count"] < 600


def test_banner_is_stored_as_volatility_constant_data(
    isf: dict[str, Any], profile: Profile, release: str
) -> None:
    sym = isf["symbols"]["linux_banner"]
    raw = base64.b64decode(sym["constant_data"])
    assert raw.startswith(f"Linux version {release} ".encode()) and raw.endswith(b"\n\0")
    assert sym["type"]["count"] == len(raw)
    assert profile.banner is not None
    assert profile.banner.startswith(f"Linux version {release}")
    assert next(iter(isf["symbols"])) == "linux_banner"  # first: cheap to find


def test_isf_metadata_names_its_sources(isf: dict[str, Any]) -> None:
    meta = isf["metadata"]
    assert meta["format"] == "6.2.0" and meta["producer"]["name"] == "xenhpt"
    assert meta["linux"]["types"][0]["kind"] == "dwarf"
    assert meta["linux"]["types"][0]["name"].endswith(":.BTF")
    assert meta["linux"]["symbols"][0]["kind"] == "symtab"
    assert "pointer" in isf["base_types"] and isf["base_types"]["pointer"]["size"] == 8


def test_every_type_reference_resolves(isf: dict[str, Any]) -> None:
    user, base, enums = isf["user_types"], isf["base_types"], isf["enums"]
    missing: set[str] = set()

    def check(d: dict[str, Any]) -> None:
        kind = d["kind"]
        if kind == "base":
            assert d["name"] in base, d
        elif kind in ("struct", "union"):
            if d["name"] not in user:
                missing.add(d["name"])  # forward-declared only, as in dwarf2json output
        elif kind == "enum":
            assert d["name"] in enums, d
        elif kind in ("pointer", "array"):
            check(d["subtype"])
        elif kind == "bitfield":
            assert d["type"]["kind"] in ("base", "enum")
            check(d["type"])
        else:
            assert kind == "function", d

    for t in user.values():
        for f in t["fields"].values():
            check(f["type"])
    for e in enums.values():
        assert e["base"] in base
    assert len(missing) < 200  # a few opaque structs (e.g. netns_ipvs) have no body in BTF


def test_isf_round_trips_through_xz_and_is_found_by_banner(
    isf: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: str
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "profiles" / f"{release}.json.xz"
    write_profile(isf, out)
    p = Profile.load(out)
    comm = isf["user_types"]["task_struct"]["fields"]["comm"]["offset"]
    assert p.offset("task_struct", "comm") == comm
    assert p.symbol("init_task") == isf["symbols"]["init_task"]["address"]
    assert (tmp_path / "cache" / "xenhpt" / "isf").is_dir()  # compressed ISFs are cached
    current = isf["symbols"]["current_task"]["address"]
    assert Profile.load(out).symbol("current_task") == current  # from the cache
    banner = base64.b64decode(isf["symbols"]["linux_banner"]["constant_data"])
    assert find_profile(banner.rstrip(b"\0\n").decode(), [tmp_path / "profiles"]) == out
    assert find_profile("Linux version 0.0.1", [tmp_path / "profiles"]) is None


def test_btf_with_system_map_builds_the_same_layout(
    image: KernelImage, kallsyms: KallsymsTable, tmp_path: Path, isf: dict[str, Any]
) -> None:
    btf = tmp_path / "vmlinux.btf"
    btf.write_bytes(image.section_data(".BTF") or b"")
    smap = tmp_path / "System.map"
    lines = [
        f"{a:016x} {t} {n}"
        for n, a, t in zip(kallsyms.names, kallsyms.addresses, kallsyms.types, strict=True)
    ]
    smap.write_text("\n".join(lines) + "\n")
    from_map = build_profile(btf=btf, system_map=smap)
    assert from_map["user_types"]["task_struct"] == isf["user_types"]["task_struct"]
    assert from_map["symbols"]["init_task"]["address"] == kallsyms.symbols()["init_task"]
    assert "constant_data" not in from_map["symbols"]["linux_banner"]  # raw BTF: no bytes
    assert from_map["metadata"]["linux"]["symbols"][0]["kind"] == "system-map"


def test_debian_stub_system_map_is_refused_with_a_hint(image_path: Path) -> None:
    stub = image_path.with_name("System.map-" + image_path.name.removeprefix("vmlinuz-"))
    if not stub.is_file():
        pytest.skip("no stub System.map beside the image")
    with pytest.raises(ProfileError, match="stub"):
        build_profile(btf=image_path, system_map=stub)


def test_isf_sample_validates_against_volatility_schema(isf: dict[str, Any]) -> None:
    import jsonschema  # both in the dev extras: a missing one is a broken set-up
    import volatility3

    schema_file = Path(volatility3.__file__).parent / "schemas" / "schema-6.2.0.json"
    schema = json.loads(schema_file.read_text())
    # The whole file takes ~20 s to validate; a sample covers every kind of entry.
    wanted = ["task_struct", "mm_struct", "list_head", "pt_regs", "_ddebug"]
    wanted += [n for n in isf["user_types"] if n.startswith("unnamed_")][:50]
    sample = {
        "metadata": isf["metadata"],
        "base_types": isf["base_types"],
        "user_types": {n: isf["user_types"][n] for n in wanted},
        "enums": dict(list(isf["enums"].items())[:100]),
        "symbols": {
            n: isf["symbols"][n]
            for n in ("linux_banner", "init_task", "current_task", "sys_call_table", "_text")
        },
    }
    jsonschema.Draft4Validator(schema).validate(sample)


def test_pointer_table_length_drops_a_tail_that_is_not_kernel_text() -> None:
    """5.10's ia32_sys_call_table is followed by an unnamed string ("memcpy"), not
    padding: the length guessed up to the next symbol must stop before it."""
    from xenhpt.profile.build import _trim_tail

    text = (0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8200_0000)
    table = [0xFFFF_FFFF_8100_1000, 0xFFFF_FFFF_8100_2000,
             int.from_bytes(b"memcpy\0\0", "little"), 0]

    class Image:
        def read(self, address: int, size: int) -> bytes:
            return b"".join(v.to_bytes(8, "little") for v in table)[:size]

    assert _trim_tail(Image(), 0x1000, 4, 8, text) == 2  # type: ignore[arg-type]
    assert _trim_tail(Image(), 0x1000, 4, 8, None) == 3  # without the text: NULLs only
