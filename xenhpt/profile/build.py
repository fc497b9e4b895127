"""Build a Volatility 3 ISF profile from a kernel's own BTF and symbols.

Two ways in (``xenhpt profile build``):

- ``--kernel IMAGE``: a bzImage or vmlinux alone gives everything: types from its ``.BTF``
  section, symbols from its kallsyms tables, the banner from its ``linux_banner`` bytes.
- ``--btf FILE --system-map FILE``: raw BTF (``/sys/kernel/btf/vmlinux``) or an image for
  the types, a real ``System.map`` (``addr type name`` lines) for the symbols. The banner is
  only available when some input is an image.
- ``--dwarf VMLINUX`` (kernels without BTF): see :mod:`xenhpt.profile.dwarf`.

The result is a standard ISF (format 6.2.0) as dwarf2json writes it. Its metadata names the
sources: the schema only knows the kinds ``dwarf``/``symtab``/``system-map``, so BTF is
recorded as ``dwarf`` (BTF is pahole's distillation of the kernel's DWARF) with a name that
says ``.BTF``, and kallsyms as ``symtab``: a new kind would make Volatility reject the file
whenever ``jsonschema`` is installed.

BTF only gives types to per-CPU variables, but Volatility reads some globals as objects
(``object_from_symbol("init_task")``), so a short table below gives those their types.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import hashlib
import json
import logging
import lzma
import os
from pathlib import Path
from typing import Any, Protocol

import xenhpt
from xenhpt.errors import ProfileError
from xenhpt.profile import btf as B
from xenhpt.profile.isftypes import FUNCTION, Descriptor, IsfTypeBuilder
from xenhpt.profile.kallsyms import decode_kallsyms
from xenhpt.profile.kimage import BTF_MAGIC, KernelImage, read_file

log = logging.getLogger(__name__)

ISF_FORMAT = "6.2.0"
PERCPU_SECTION = ".data..percpu"
MAX_SYSTEM_MAP_BYTES = 256 << 20
MAX_GAP_ELEMENTS = 1 << 16  # arrays sized from the distance to the next symbol

# Globals read as typed objects (by Volatility's linux plugins or by xenhpt) whose type BTF
# does not record: name → (C type, shape). Shape "" = the object itself, "*" = pointer to
# it, "[N]" = array of N, "[]" = array up to the next symbol. Types absent from the BTF
# are skipped, so the table is safe across kernel versions.
GLOBAL_TYPES: dict[str, tuple[str, str]] = {
    "init_task": ("struct task_struct", ""),
    "init_mm": ("struct mm_struct", ""),
    "init_files": ("struct files_struct", ""),
    "init_fs": ("struct fs_struct", ""),
    "init_nsproxy": ("struct nsproxy", ""),
    "init_pid_ns": ("struct pid_namespace", ""),
    "init_net": ("struct net", ""),
    "modules": ("struct list_head", ""),
    "net_namespace_list": ("struct list_head", ""),
    "mod_tree": ("struct mod_tree_root", ""),
    "prb": ("struct printk_ringbuffer", "*"),
    "idt_table": ("struct gate_struct", "[256]"),
    "init_top_pgt": ("pgd_t", "[512]"),
    "phys_base": ("long unsigned int", ""),
    "page_offset_base": ("long unsigned int", ""),
    "vmemmap_base": ("long unsigned int", ""),
    "__per_cpu_offset": ("long unsigned int", "[]"),
    "sys_call_table": ("function", "*[]"),
    "ia32_sys_call_table": ("function", "*[]"),
    "x32_sys_call_table": ("function", "*[]"),
    # Volatility's linux.sockstat asks these two for objects, so they need a type:
    "socket_file_ops": ("struct file_operations", ""),
    "sockfs_dentry_operations": ("struct dentry_operations", ""),
    "cap_last_cap": ("int", ""),
    "nr_cpu_ids": ("unsigned int", ""),
}


class KernelBytes(Protocol):
    """The kernel's own bytes at link-time addresses: an image file, or guest memory."""

    def read(self, vaddr: int, size: int) -> bytes: ...

    def read_cstring(self, vaddr: int, limit: int = 4096) -> bytes: ...


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_entry(kind: str, path: Path, what: str = "") -> dict[str, str]:
    """One ``metadata.linux`` source entry of the ISF: what was read, and its sha256."""
    return {
        "kind": kind,
        "name": path.name + what,
        "hash_type": "sha256",
        "hash_value": _sha256(path),
    }


def parse_system_map(path: Path) -> dict[str, int]:
    """``System.map`` → {name: address}; a global symbol wins over a local of the same name."""
    text = read_file(path, MAX_SYSTEM_MAP_BYTES).decode("latin-1")
    out: dict[str, int] = {}
    is_global: dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or len(parts[1]) != 1:
            continue  # module symbols ("[mod]"), Debian's one-line stub, blank lines
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        name, glob = parts[2], parts[1].isupper()
        if name not in out or (glob and not is_global[name]):
            out[name], is_global[name] = addr, glob
    if not out:
        raise ProfileError(
            f"{path}: no symbols (Debian's /boot/System.map is a stub; use --kernel IMAGE "
            "to read the kernel's own kallsyms, or the System.map of the -dbg package)"
        )
    return out


def _open_types_source(path: Path) -> tuple[bytes, KernelImage | None]:
    """Raw BTF bytes of ``path`` and, if it is a kernel image, the image."""
    head = read_file(path)
    if head[:2] == BTF_MAGIC:
        return head, None
    image = KernelImage.open(path)
    data = image.section_data(".BTF")
    if data is None:
        raise ProfileError(f"{path}: kernel image has no .BTF section (CONFIG_DEBUG_INFO_BTF=n)")
    return data, image


def _kallsyms_of(image: KernelImage) -> dict[str, int]:
    config = image.config or {}
    percpu: bool | None = None
    if "CONFIG_KALLSYMS_BASE_RELATIVE" in config or "CONFIG_KALLSYMS_ABSOLUTE_PERCPU" in config:
        percpu = config.get("CONFIG_KALLSYMS_ABSOLUTE_PERCPU") == "y"
    try:
        return decode_kallsyms(image.elf, percpu).symbols()
    except ProfileError:
        if percpu is None:
            raise
        # The config file beside the image may belong to another build: detect instead.
        log.warning("kallsyms do not decode as the config beside the image says; detecting")
        return decode_kallsyms(image.elf, None).symbols()


def build_profile(
    kernel: Path | None = None, btf: Path | None = None, system_map: Path | None = None
) -> dict[str, Any]:
    """Build an ISF dict from a kernel image and/or BTF + System.map (see module doc)."""
    if kernel is None and btf is None:
        raise ProfileError("profile build needs --kernel IMAGE or --btf FILE (with --system-map)")
    image = KernelImage.open(kernel) if kernel is not None else None
    types_sources: list[dict[str, str]] = []
    if btf is not None:
        btf_bytes, btf_image = _open_types_source(btf)
        image = image or btf_image
        types_sources.append(source_entry("dwarf", btf, ":.BTF" if btf_image else " (BTF)"))
    else:
        assert image is not None and kernel is not None
        data = image.section_data(".BTF")
        if data is None:
            raise ProfileError(f"{kernel}: no .BTF section (CONFIG_DEBUG_INFO_BTF=n); use --btf")
        btf_bytes = data
        types_sources.append(source_entry("dwarf", kernel, ":.BTF"))

    if system_map is not None:
        symbols = parse_system_map(system_map)
        symbol_sources = [source_entry("system-map", system_map)]
    elif image is not None:
        symbols = _kallsyms_of(image)
        symbol_sources = [source_entry("symtab", image.path, ":kallsyms")]
    else:
        raise ProfileError("raw BTF has no symbols: add --system-map FILE (or use --kernel IMAGE)")

    return assemble_isf(btf_bytes, str(btf or kernel), symbols, image,
                        {"symbols": symbol_sources, "types": types_sources})


def assemble_isf(btf: bytes | B.Btf, where: str, symbols: dict[str, int],
                 image: KernelBytes | None, sources: dict[str, Any]) -> dict[str, Any]:
    """The ISF from BTF (raw or parsed) and link-time symbol addresses; ``image`` gives
    the banner's bytes and sizes pointer tables (None: neither is known)."""
    parsed = btf if isinstance(btf, B.Btf) else B.parse_btf(btf, where)
    builder = IsfTypeBuilder(parsed)
    base_types = builder.base_types()
    user_types = builder.user_types()
    enums = builder.enums(base_types)
    if builder.duplicates:
        log.info(
            "BTF defines %d names twice; kept the first: %s",
            len(builder.duplicates),
            ", ".join(sorted(set(builder.duplicates))[:10]),
        )
    for needed in ("task_struct", "list_head", "mm_struct"):
        if needed not in user_types:
            raise ProfileError(f"BTF has no struct {needed}: not the BTF of a Linux kernel?")
    if "init_task" not in symbols:
        raise ProfileError("symbols have no init_task: not the symbols of a Linux kernel?")

    isf_symbols = _isf_symbols(symbols, parsed, builder, base_types, user_types, image)
    return {
        "metadata": {
            "format": ISF_FORMAT,
            "producer": {"name": "xenhpt", "version": xenhpt.__version__},
            "linux": sources,
        },
        "symbols": isf_symbols,
        "base_types": base_types,
        "user_types": user_types,
        "enums": enums,
    }


def _isf_symbols(
    symbols: dict[str, int],
    parsed: B.Btf,
    builder: IsfTypeBuilder,
    base_types: dict[str, Descriptor],
    user_types: dict[str, Descriptor],
    image: KernelBytes | None,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    banner = None
    if image is not None and "linux_banner" in symbols:
        try:
            banner = image.read_cstring(symbols["linux_banner"], 1024) + b"\0"
        except ProfileError as exc:  # e.g. System.map of another build than the image
            log.warning("no banner: %s", exc)
    if banner is not None and not banner.startswith(b"Linux version "):
        log.warning("linux_banner does not start with 'Linux version': symbols and image differ?")
        banner = None
    if banner is not None:  # first, so a reader finds it without parsing the whole file
        out["linux_banner"] = {
            "address": symbols["linux_banner"],
            "constant_data": base64.b64encode(banner).decode("ascii"),
            "type": {
                "kind": "array",
                "count": len(banner),
                "subtype": {"kind": "base", "name": "char"},
            },
        }
    for name in sorted(symbols):
        out.setdefault(name, {"address": symbols[name] & 0xFFFFFFFFFFFFFFFF})

    # Per-CPU variables: BTF knows their types (DATASEC .data..percpu).
    for name, (_offset, type_id) in parsed.datasec(PERCPU_SECTION).items():
        if name in out:
            out[name]["type"] = builder.descriptor(type_id)

    typedefs = {t.name: i for i, t in enumerate(parsed.types) if t and t.kind == B.TYPEDEF}
    addresses = sorted(set(symbols.values()))
    for name, (ctype, shape) in GLOBAL_TYPES.items():
        if name not in out or "type" in out[name]:
            continue
        desc = _resolve_ctype(ctype, builder, base_types, user_types, typedefs)
        if desc is None:
            continue
        elem_size = _descriptor_size(desc, builder, base_types, user_types)
        if shape.startswith("*"):
            desc, elem_size, shape = (
                {"kind": "pointer", "subtype": desc},
                builder.pointer_size,
                shape[1:],
            )
        if shape == "[]":
            i = bisect.bisect_right(addresses, symbols[name])
            if i >= len(addresses) or not elem_size:
                continue
            count = (addresses[i] - symbols[name]) // elem_size
            if not 0 < count <= MAX_GAP_ELEMENTS:
                continue
            if desc["kind"] == "pointer" and image is not None:
                text = (symbols.get("_stext"), symbols.get("_etext"))
                count = _trim_tail(image, symbols[name], count, elem_size,
                                   text if None not in text else None, builder.pointer_size)
            desc = {"kind": "array", "count": count, "subtype": desc}
        elif shape.startswith("["):
            desc = {"kind": "array", "count": int(shape[1:-1]), "subtype": desc}
        out[name]["type"] = desc
    return out


def _trim_tail(image: KernelBytes, address: int, count: int, size: int,
               text: tuple[int, int] | None, pointer_size: int = 8) -> int:
    # A pointer table (sys_call_table) is followed by alignment padding, or by data no
    # symbol names (5.10's ia32_sys_call_table: a string), up to the next symbol. Its
    # initialised entries are never NULL and, for a table of functions, all lie in the
    # kernel text: drop trailing slots that are not such pointers.
    try:
        data = image.read(address, count * size)
    except ProfileError:
        return count
    while count > 1:
        last = int.from_bytes(data[(count - 1) * size : count * size], "little")
        if last and (text is None or size != pointer_size or text[0] <= last < text[1]):
            break
        count -= 1
    return count


def _resolve_ctype(
    ctype: str,
    builder: IsfTypeBuilder,
    base_types: dict[str, Descriptor],
    user_types: dict[str, Descriptor],
    typedefs: dict[str, int],
) -> Descriptor | None:
    if ctype == "function":
        return FUNCTION
    tag, _, tag_name = ctype.partition(" ")
    if tag in ("struct", "union") and user_types.get(tag_name, {}).get("kind") == tag:
        return {"kind": tag, "name": tag_name}
    if ctype in base_types:
        return {"kind": "base", "name": ctype}
    if ctype in typedefs:
        return builder.descriptor(typedefs[ctype])
    return None


def _descriptor_size(
    desc: Descriptor,
    builder: IsfTypeBuilder,
    base_types: dict[str, Descriptor],
    user_types: dict[str, Descriptor],
) -> int:
    kind = desc["kind"]
    if kind == "base":
        return base_types[desc["name"]]["size"]
    if kind in ("struct", "union"):
        return user_types[desc["name"]]["size"]
    if kind == "pointer":
        return builder.pointer_size
    if kind == "array":
        return desc["count"] * _descriptor_size(desc["subtype"], builder, base_types, user_types)
    return 0


def write_profile(isf: dict[str, Any], out: Path) -> None:
    """Write ``isf`` to ``out`` as JSON; ``.json.xz``/``.json.gz`` are compressed.

    Written to a temporary file first and renamed, so a reader never sees half a profile.
    """
    out = Path(out)
    text = json.dumps(isf, separators=(",", ":")).encode("utf-8")
    name = out.name
    if name.endswith(".xz"):
        text = lzma.compress(text, preset=6)
    elif name.endswith(".gz"):
        text = gzip.compress(text, compresslevel=6, mtime=0)
    elif not name.endswith(".json"):
        raise ProfileError(f"{out}: profile name must end in .json, .json.xz or .json.gz")
    tmp = out.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(text)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProfileError(f"cannot write {out}: {exc.strerror or exc}") from None
