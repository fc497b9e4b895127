"""A Linux kernel image as a profile source: bzImage or vmlinux ELF → sections and memory.

Distributions ship ``/boot/vmlinuz-*``: an x86 boot sector + setup code followed by a
compressed payload (LZ4, gzip, xz, zstd, ...) that decompresses to the real ``vmlinux`` ELF.
That ELF is stripped, but it still carries what a profile needs: the ``.BTF`` section (every
type) and the kallsyms tables (every symbol) inside ``.rodata``. This module only turns the
file into ELF bytes and answers "what bytes are at this section / virtual address".

Files are user input: every header field is bounds-checked and problems raise
``ProfileError`` with one line, never an ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import bz2
import lzma
import mmap
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from xenhpt.errors import ProfileError

# A vmlinux is 30-100 MB; anything far above is not a kernel and must not eat all memory.
MAX_IMAGE_BYTES = 1 << 30
MAX_VMLINUX_BYTES = 512 << 20
# A vmlinux with DWARF (a -dbg package's) is mapped, not read: a looser bound.
MAX_DEBUG_VMLINUX_BYTES = 4 << 30

BTF_MAGIC = b"\x9f\xeb"  # 0xeB9F little-endian; the only byte order we support (x86)
ELF_MAGIC = b"\x7fELF"

# The x86 boot protocol header ("HdrS" at 0x202); payload_offset/length exist since 2.08.
_SETUP_SECTS = 0x1F1
_HDRS = 0x202
_VERSION = 0x206
_PAYLOAD = 0x248

_LZ4_LEGACY_MAGIC = 0x184C2102
_LZ4_LEGACY_BLOCK = 8 << 20  # every legacy block decompresses to at most 8 MiB


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    addr: int
    offset: int
    size: int
    nobits: bool  # SHT_NOBITS (.bss): occupies memory but no file bytes
    type: int = 0  # sh_type: 2 = SHT_SYMTAB, 3 = SHT_STRTAB, ...
    link: int = 0  # sh_link: for a symbol table, the index of its string table


@dataclass(frozen=True, slots=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int


def read_file(path: Path, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """Read a whole input file, refusing missing, unreadable or absurdly large ones."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ProfileError(f"{path}: {size} bytes is too large for a kernel image/BTF file")
        return path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _lz4_legacy(payload: bytes, where: str) -> bytes:
    # The kernel's LZ4 is the "legacy" frame: magic, then [u32 size][block]... and, for the
    # decompressor stub, the uncompressed length as a trailing u32 (too short to be a block).
    try:
        import lz4.block
    except ImportError:  # pragma: no cover - lz4 is a declared dependency
        raise ProfileError(f"{where}: LZ4 payload needs the 'lz4' Python package") from None
    out = bytearray()
    pos = 4
    while pos + 4 <= len(payload):
        (n,) = struct.unpack_from("<I", payload, pos)
        if n == _LZ4_LEGACY_MAGIC:  # concatenated legacy streams
            pos += 4
            continue
        if pos + 4 + n > len(payload):
            break  # trailing length word (or garbage) after the last block
        try:
            out += lz4.block.decompress(
                payload[pos + 4 : pos + 4 + n], uncompressed_size=_LZ4_LEGACY_BLOCK
            )
        except lz4.block.LZ4BlockError as exc:
            raise ProfileError(
                f"{where}: corrupt LZ4 block at payload offset {pos}: {exc}"
            ) from None
        if len(out) > MAX_VMLINUX_BYTES:
            raise ProfileError(
                f"{where}: LZ4 payload decompresses beyond {MAX_VMLINUX_BYTES} bytes"
            )
        pos += 4 + n
    return bytes(out)


def _stream(decomp: object, payload: bytes, where: str, what: str) -> bytes:
    # zlib/lzma/bz2 decompressor objects share decompress(data, max_length); bounding the
    # output keeps a decompression bomb from exhausting memory.
    try:
        out = decomp.decompress(payload, MAX_VMLINUX_BYTES + 1)  # type: ignore[attr-defined]
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise ProfileError(f"{where}: corrupt {what} payload: {exc}") from None
    if len(out) > MAX_VMLINUX_BYTES:
        raise ProfileError(f"{where}: {what} payload decompresses beyond {MAX_VMLINUX_BYTES} bytes")
    return out


def _zstd(payload: bytes, where: str) -> bytes:
    try:
        import zstandard  # optional: not a dependency, Debian's default kernels are LZ4/xz
    except ImportError:
        zstandard = None
    if zstandard is not None:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(payload)
            return reader.read(MAX_VMLINUX_BYTES)
        except zstandard.ZstdError as exc:
            raise ProfileError(f"{where}: corrupt zstd payload: {exc}") from None
    tool = shutil.which("zstd")
    if tool is None:
        raise ProfileError(f"{where}: zstd payload needs the 'zstandard' package or zstd(1)")
    with tempfile.NamedTemporaryFile(suffix=".zst") as tmp:
        tmp.write(payload)
        tmp.flush()
        # zstd(1) stops with an error at the size word the kernel appends; the output is
        # complete by then. Read at most the bound, so a bomb cannot fill memory.
        with subprocess.Popen(
            [tool, "-dc", tmp.name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as proc:
            assert proc.stdout is not None
            out = proc.stdout.read(MAX_VMLINUX_BYTES)
            proc.kill()
    if not out.startswith(ELF_MAGIC):
        raise ProfileError(f"{where}: zstd could not decompress the payload")
    return out


def decompress_payload(payload: bytes, where: str = "kernel image") -> bytes:
    """Decompress a bzImage payload, choosing the codec by its magic bytes."""
    if payload.startswith(b"\x02\x21\x4c\x18"):
        return _lz4_legacy(payload, where)
    if payload.startswith(b"\x1f\x8b"):
        return _stream(zlib.decompressobj(16 + zlib.MAX_WBITS), payload, where, "gzip")
    if payload.startswith(b"\xfd7zXZ\x00"):
        return _stream(lzma.LZMADecompressor(lzma.FORMAT_XZ), payload, where, "xz")
    if payload.startswith(b"\x5d\x00\x00"):
        return _stream(lzma.LZMADecompressor(lzma.FORMAT_ALONE), payload, where, "lzma")
    if payload.startswith(b"BZh"):
        return _stream(bz2.BZ2Decompressor(), payload, where, "bzip2")
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        return _zstd(payload, where)
    if payload.startswith(ELF_MAGIC):  # CONFIG_KERNEL_UNCOMPRESSED
        return payload
    raise ProfileError(f"{where}: unsupported compressed payload (magic {payload[:4].hex()})")


def extract_vmlinux(data: bytes, where: str = "kernel image") -> bytes:
    """Return the vmlinux ELF bytes of a bzImage, or ``data`` itself if it is already ELF."""
    if data.startswith(ELF_MAGIC):
        return data
    if len(data) < 0x250 or data[_HDRS : _HDRS + 4] != b"HdrS":
        raise ProfileError(f"{where}: neither an ELF vmlinux nor an x86 bzImage")
    (version,) = struct.unpack_from("<H", data, _VERSION)
    if version < 0x208:
        raise ProfileError(f"{where}: boot protocol {version:#x} too old (no payload_offset)")
    setup_sects = data[_SETUP_SECTS] or 4  # 0 means 4, for historical reasons
    offset, length = struct.unpack_from("<II", data, _PAYLOAD)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(data):
        raise ProfileError(f"{where}: bzImage payload lies outside the file (truncated image?)")
    vmlinux = decompress_payload(data[start : start + length], where)
    if not vmlinux.startswith(ELF_MAGIC):
        raise ProfileError(f"{where}: decompressed payload is not an ELF vmlinux")
    return vmlinux


class KernelImage:
    """A decompressed vmlinux ELF: its sections, its loadable segments and a config if found.

    Load with :meth:`open`; ``elf`` holds the ELF bytes. Addresses are link-time virtual
    addresses (no KASLR slide), as in System.map and kallsyms.
    """

    def __init__(self, path: Path, elf: bytes, config: dict[str, str] | None = None) -> None:
        self.path = path
        self.elf = elf
        self.config = config
        self.sections: dict[str, Section] = {}
        self.section_list: list[Section] = []  # by index, for sh_link references
        self.segments: list[Segment] = []
        self.bits = 64
        self.machine = 0
        self._parse_elf()

    @classmethod
    def open(cls, path: Path | str) -> KernelImage:
        """Load a bzImage (``vmlinuz-*``) or a vmlinux ELF file."""
        path = Path(path)
        elf = extract_vmlinux(read_file(path), str(path))
        return cls(path, elf, read_config_beside(path))

    @classmethod
    def open_mapped(cls, path: Path | str) -> KernelImage:
        """Map an uncompressed vmlinux ELF (32- or 64-bit) instead of reading it.

        A ``-dbg`` package's vmlinux is 0.5-1 GB, mostly DWARF that pahole reads on its own;
        mapping it means only the pages we touch (section headers, symbol table, banner)
        are read into memory.
        """
        path = Path(path)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_DEBUG_VMLINUX_BYTES:
                    raise ProfileError(f"{path}: {size} bytes is too large for a vmlinux")
                if f.read(4) != ELF_MAGIC:
                    raise ProfileError(f"{path}: not an ELF file (give the vmlinux of the "
                                       "kernel's -dbg package, not a vmlinuz)")
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls(path, data, read_config_beside(path))  # type: ignore[arg-type]

    # -- ELF ------------------------------------------------------------------------------
    def _parse_elf(self) -> None:
        d = self.elf
        where = str(self.path)
        if len(d) < 52 or d[4] not in (1, 2) or d[5] != 1:
            raise ProfileError(f"{where}: only little-endian ELF kernels are supported")
        elf64 = d[4] == 2
        self.bits = 64 if elf64 else 32
        (self.machine,) = struct.unpack_from("<H", d, 0x12)  # e_machine: 3 i386, 62 x86-64
        if elf64:
            if len(d) < 64:
                raise ProfileError(f"{where}: truncated ELF header")
            phoff, shoff = struct.unpack_from("<QQ", d, 0x20)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 0x36)
            ph_fmt, ph_min = "<IIQQQQ", 56  # type, flags, offset, vaddr, paddr, filesz
            sh_fmt, sh_min = "<IIQQQQI", 64  # name, type, flags, addr, offset, size, link
        else:
            phoff, shoff = struct.unpack_from("<II", d, 0x1C)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 0x2A)
            ph_fmt, ph_min = "<IIIIII", 32  # type, offset, vaddr, paddr, filesz, memsz
            sh_fmt, sh_min = "<IIIIIII", 40
        if phnum and (phentsize < ph_min or phoff + phnum * phentsize > len(d)):
            raise ProfileError(f"{where}: ELF program headers lie outside the file")
        if shnum and (shentsize < sh_min or shoff + shnum * shentsize > len(d)):
            raise ProfileError(f"{where}: ELF section headers lie outside the file")
        for i in range(phnum):
            fields = struct.unpack_from(ph_fmt, d, phoff + i * phentsize)
            if elf64:
                p_type, _flags, off, vaddr, _paddr, filesz = fields
            else:
                p_type, off, vaddr, _paddr, filesz, _memsz = fields
            if p_type == 1 and off + filesz <= len(d):  # PT_LOAD
                self.segments.append(Segment(vaddr, off, filesz))
        raw = []
        for i in range(shnum):
            raw.append(struct.unpack_from(sh_fmt, d, shoff + i * shentsize))
        if not raw or shstrndx >= len(raw):
            return  # no section table: segments still map addresses
        _n, _t, _f, _a, stroff, strsize, _l = raw[shstrndx]
        strtab = d[stroff : stroff + strsize]
        for name_off, sh_type, _flags, addr, off, size, link in raw:
            end = strtab.find(b"\0", name_off)
            name = strtab[name_off:end].decode("ascii", "replace") if end >= 0 else ""
            nobits = sh_type == 8
            if not nobits and off + size > len(d):
                raise ProfileError(f"{where}: ELF section {name!r} lies outside the file")
            sec = Section(name, addr, off, size, nobits, sh_type, link)
            self.section_list.append(sec)
            self.sections.setdefault(name, sec)

    def section_data(self, name: str) -> bytes | None:
        """The file bytes of section ``name`` (e.g. ``.BTF``), or None if absent."""
        sec = self.sections.get(name)
        if sec is None or sec.nobits:
            return None
        return self.elf[sec.offset : sec.offset + sec.size]

    def symbol_table(self) -> dict[str, int]:
        """The ELF ``.symtab`` as ``System.map`` lists it: name → address of each defined
        symbol, without file and section symbols, local absolutes, ``__crc_*`` and
        assembler labels (the filter of the kernel's scripts/mksysmap; ``__kstrtab*``,
        which 6.1's System.map leaves out and 5.10's keeps, are kept: a superset is safe).
        A name defined twice keeps its global definition, else its lowest address, as in
        :func:`build.parse_system_map`. Empty for a stripped image."""
        symtab = next((s for s in self.section_list if s.type == 2), None)  # SHT_SYMTAB
        if symtab is None or not 0 < symtab.link < len(self.section_list):
            return {}
        strsec = self.section_list[symtab.link]
        strtab = self.elf[strsec.offset : strsec.offset + strsec.size]
        entsize = 24 if self.bits == 64 else 16
        data = self.elf[symtab.offset : symtab.offset + symtab.size // entsize * entsize]
        rows = struct.iter_unpack("<IBBHQQ" if self.bits == 64 else "<IIIBBH", data)
        found: list[tuple[bool, int, str]] = []
        for row in rows:
            if self.bits == 64:
                name_off, info, _other, shndx, value, _size = row
            else:
                name_off, value, _size, info, _other, shndx = row
            kind, glob = info & 0xF, (info >> 4) != 0  # STB_GLOBAL / STB_WEAK: not local
            if shndx == 0 or kind in (3, 4) or (shndx == 0xFFF1 and not glob):
                continue  # undefined, STT_SECTION/STT_FILE, local absolute
            end = strtab.find(b"\0", name_off)
            if not name_off or end < 0:
                continue
            name = strtab[name_off:end].decode("latin-1")
            if name.startswith(("__crc_", ".L", "L0", "$")):
                continue
            found.append((not glob, value, name))
        out: dict[str, int] = {}
        for _local, value, name in sorted(found):
            out.setdefault(name, value)
        return out

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset holding virtual address ``vaddr``, or None if no segment has it."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg.offset + (vaddr - seg.vaddr)
        return None

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at ``vaddr``; ProfileError if they are not all in the file."""
        off = self.vaddr_to_offset(vaddr)
        end = self.vaddr_to_offset(vaddr + size - 1) if size else off
        if off is None or end is None or end != off + size - 1:
            raise ProfileError(f"{self.path}: address {vaddr:#x}+{size} is not in the image")
        return self.elf[off : off + size]

    def read_cstring(self, vaddr: int, limit: int = 4096) -> bytes:
        """The NUL-terminated bytes at ``vaddr`` (without the NUL), at most ``limit`` long."""
        off = self.vaddr_to_offset(vaddr)
        if off is None:
            raise ProfileError(f"{self.path}: address {vaddr:#x} is not in the image")
        end = self.elf.find(b"\0", off, off + limit)
        if end < 0:
            raise ProfileError(f"{self.path}: no NUL within {limit} bytes of {vaddr:#x}")
        return self.elf[off:end]


def read_config_beside(image: Path) -> dict[str, str] | None:
    """Parse ``config-<version>`` next to ``vmlinuz-<version>``/``vmlinux-<version>``.

    Only a hint (kallsyms can detect its encoding without it); None if there is none.
    """
    name = image.name
    for prefix in ("vmlinuz-", "vmlinux-"):
        if name.startswith(prefix):
            candidate = image.with_name("config-" + name[len(prefix) :])
            break
    else:
        candidate = image.with_name("config")
    try:
        if not candidate.is_file() or candidate.stat().st_size > 16 << 20:
            return None
        text = candidate.read_text(errors="replace")
    except OSError:
        return None
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key] = value
    return config
