"""What the lab decides before booting a 32-bit guest: the package's architecture, the
image's word size, the banner of a 32-bit vmlinux (no guest needed)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from xenhpt.errors import LabError
from xenhpt.lab.kernel import image_bits, package_architecture


@pytest.mark.parametrize(("package", "arch"), [
    ("linux-image-686-pae/bookworm", "i386"),
    ("linux-image-686", "i386"),
    ("linux-image-6.1.0-99-686-pae", "i386"),
    ("linux-image-rt-686-pae/bullseye", "i386"),
    ("linux-image-cloud-amd64/trixie", "amd64"),
    ("linux-image-5.10.0-32-cloud-amd64", "amd64"),
])
def test_the_package_flavour_names_the_architecture(package: str, arch: str) -> None:
    assert package_architecture(package) == arch


def _bzimage(tmp_path: Path, xloadflags: int, version: int = 0x20F) -> Path:
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, version)
    struct.pack_into("<H", head, 0x236, xloadflags)
    path = tmp_path / "vmlinuz"
    path.write_bytes(bytes(head))
    return path


def test_bzimage_word_size_comes_from_xloadflags(tmp_path: Path) -> None:
    assert image_bits(_bzimage(tmp_path, 0x4)) == 32  # Debian 6.1 686-pae
    assert image_bits(_bzimage(tmp_path, 0x7F)) == 64  # Debian 6.1 cloud-amd64


def test_an_old_or_foreign_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="2.12"):
        image_bits(_bzimage(tmp_path, 0x1, version=0x20B))
    other = tmp_path / "other"
    other.write_bytes(b"not a kernel" * 100)
    with pytest.raises(LabError):
        image_bits(other)
