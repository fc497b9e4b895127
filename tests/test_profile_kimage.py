"""Kernel image loading: bzImage payload codecs and ELF section/address mapping, on a tiny
synthetic vmlinux."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import lz4.block
import pytest

from xenhpt.errors import ProfileError
from xenhpt.profile.kimage import KernelImage, extract_vmlinux

VADDR = 0xFFFFFFFF81000000


def tiny_elf() -> bytes:
    """ELF64 with one PT_LOAD (0x100 bytes at VADDR) and sections .text, .BTF, .shstrtab."""
    text = b"Linux version 9.9.9-test\0".ljust(0x100, b"\xcc")
    btf = b"\x9f\xeb\x01\x00" + b"\0" * 20
    shstr = b"\0.text\0.BTF\0.shstrtab\0"
    body_off = 0x40 + 56
    text_off, btf_off = body_off, body_off + len(text)
    str_off = btf_off + len(btf)
    sh_off = (str_off + len(shstr) + 7) & ~7
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, VADDR, 0x40, sh_off, 0, 64, 56, 1, 64, 4, 3)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, text_off, VADDR, 0x1000000, len(text), len(text), 0x1000)
    data = bytearray(ehdr + phdr + text + btf + shstr)
    data += b"\0" * (sh_off - len(data))

    def sh(name: int, typ: int, addr: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, typ, 0, addr, off, size, 0, 0, 1, 0)

    data += sh(0, 0, 0, 0, 0) + sh(1, 1, VADDR, text_off, len(text))
    data += sh(7, 1, 0, btf_off, len(btf)) + sh(12, 3, 0, str_off, len(shstr))
    return bytes(data)


def bzimage(payload: bytes) -> bytes:
    setup_sects = 3
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    struct.pack_into("<II", head, 0x248, 0x80, len(payload))
    return bytes(head) + b"\x90" * 0x80 + payload + struct.pack("<I", len(tiny_elf()))


def lz4_legacy(data: bytes) -> bytes:
    out = struct.pack("<I", 0x184C2102)
    for i in range(0, len(data), 8 << 20):
        block = lz4.block.compress(data[i : i + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return out


@pytest.mark.parametrize("codec", ["lz4", "gzip", "xz", "raw-elf"])
def test_bzimage_payloads_decompress_to_the_vmlinux(codec: str) -> None:
    elf = tiny_elf()
    payload = {
        "lz4": lz4_legacy,
        "gzip": gzip.compress,
        "xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        "raw-elf": lambda d: d,
    }[codec](elf)
    assert extract_vmlinux(bzimage(payload)) == elf


def test_zstd_payload_decompresses_with_the_zstd_tool() -> None:
    tool = shutil.which("zstd")
    if tool is None:
        pytest.skip("zstd(1) not installed")
    elf = tiny_elf()
    payload = subprocess.run([tool, "-c", "-19"], input=elf, capture_output=True, check=True)
    assert extract_vmlinux(bzimage(payload.stdout)) == elf


def test_elf_sections_and_addresses_are_mapped(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz-9.9.9-test"
    path.write_bytes(bzimage(lz4_legacy(tiny_elf())))
    (tmp_path / "config-9.9.9-test").write_text("CONFIG_KALLSYMS=y\n# CONFIG_X is not set\n")
    image = KernelImage.open(path)
    assert image.section_data(".BTF")[:2] == b"\x9f\xeb"
    assert image.section_data(".nothing") is None
    assert image.read_cstring(VADDR) == b"Linux version 9.9.9-test"
    assert image.read(VADDR + 6, 7) == b"version"
    assert image.config == {"CONFIG_KALLSYMS": "y"}
    with pytest.raises(ProfileError):
        image.read(VADDR + 0xF8, 0x10)  # runs off the end of the segment
    with pytest.raises(ProfileError):
        image.read_cstring(VADDR - 0x1000)


@pytest.mark.parametrize("damage", ["not-kernel", "truncated", "bad-lz4", "bad-gzip", "lzo"])
def test_bad_images_raise_one_profile_error(damage: str, tmp_path: Path) -> None:
    good = bzimage(lz4_legacy(tiny_elf()))
    data = {
        "not-kernel": b"hello world" * 100,
        "truncated": good[:-60],
        "bad-lz4": good[:2200] + b"\xff" * 64 + good[2264:],
        "bad-gzip": bzimage(b"\x1f\x8b\x08\x00" + b"\xff" * 200),
        "lzo": bzimage(b"\x89LZO\0" + b"\0" * 50),
    }[damage]
    path = tmp_path / "vmlinuz"
    path.write_bytes(data)
    with pytest.raises(ProfileError):
        KernelImage.open(path)


def test_missing_image_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        KernelImage.open(tmp_path / "absent")
