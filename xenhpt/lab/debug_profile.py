"""The profile of a lab kernel built without BTF (Debian's i386 kernels), from its -dbg package.

Debian's 686-pae kernels have no ``CONFIG_DEBUG_INFO_BTF``: their types exist only as
DWARF in ``linux-image-<release>-dbg`` (≈ 750 MB, cached). Until the profile builder reads
DWARF itself, the lab converts that DWARF to BTF with Debian's ``pahole`` and feeds the
existing BTF builder, with the package's real System.map for the symbols. The builder
reads the banner only from 64-bit images, so the banner is taken from the 32-bit vmlinux
here and put into the ISF the way the builder writes it.
"""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

from ..errors import LabError
from .kernel import GuestKernel, _other_root, _safe, kernel_apt, package_architecture

BANNER_MAX = 1024
_SHT_NOBITS = 8
_SHF_ALLOC = 0x2


def debug_vmlinux(kernel: GuestKernel) -> tuple[Path, Path]:
    """The kernel's DWARF vmlinux and System.map from its -dbg package (fetched once)."""
    directory = _other_root() / _safe(kernel.package) / "dbg"
    vmlinux = directory / "usr/lib/debug/boot" / f"vmlinux-{kernel.release}"
    system_map = vmlinux.with_name(f"System.map-{kernel.release}")
    if vmlinux.exists() and system_map.exists():
        return vmlinux, system_map
    arch = package_architecture(kernel.package)
    apt = kernel_apt(arch)
    apt.update()
    name = f"{kernel.package}-dbg" + ("" if arch == "amd64" else f":{arch}")
    debs = apt.download([name], directory / "debs")
    if not debs:
        raise LabError(f"apt-get download {name} produced no .deb")
    # Only /usr/lib/debug/boot: the modules' debug files are gigabytes we do not need.
    done = subprocess.run(
        f"dpkg-deb --fsys-tarfile '{debs[0]}' | tar -x -C '{directory}' "
        "--wildcards './usr/lib/debug/boot/*'", shell=True, capture_output=True, text=True)
    if done.returncode != 0 or not vmlinux.exists():
        raise LabError(f"cannot unpack vmlinux from {debs[0].name}: {done.stderr.strip()}")
    debs[0].unlink()
    return vmlinux, system_map


def btf_of_dwarf(vmlinux: Path) -> Path:
    """BTF encoded from ``vmlinux``'s DWARF by pahole (cached beside it)."""
    btf = vmlinux.with_name(vmlinux.name + ".btf")
    if btf.exists():
        return btf
    if shutil.which("pahole") is None:
        raise LabError("pahole not found: install the Debian package dwarves")
    partial = btf.with_name(btf.name + ".tmp")
    done = subprocess.run(["pahole", f"--btf_encode_detached={partial}", str(vmlinux)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not partial.exists():
        raise LabError(f"pahole could not encode {vmlinux.name}: {done.stderr.strip()}")
    partial.rename(btf)
    return btf


def elf32_cstring(path: Path, address: int, limit: int = BANNER_MAX) -> bytes:
    """The NUL-terminated bytes at virtual ``address`` of a little-endian ELF32 file."""
    with open(path, "rb") as f:
        header = f.read(52)
        if header[:4] != b"\x7fELF" or header[4] != 1 or header[5] != 1:
            raise LabError(f"{path} is not a little-endian ELF32 file")
        shoff, = struct.unpack_from("<I", header, 32)
        shentsize, shnum = struct.unpack_from("<HH", header, 46)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        for i in range(shnum):
            _, sh_type, flags, addr, offset, size = struct.unpack_from("<IIIIII", table,
                                                                       i * shentsize)
            loaded = flags & _SHF_ALLOC and sh_type != _SHT_NOBITS
            if loaded and addr <= address < addr + size:
                f.seek(offset + address - addr)
                data = f.read(min(limit, addr + size - address))
                return data.split(b"\0", 1)[0] + b"\0"
    raise LabError(f"{path}: no section holds {address:#x}")


def debug_profile(kernel: GuestKernel) -> dict[str, Any]:
    """The ISF of ``kernel`` from its -dbg package."""
    from ..profile import build_profile  # the builder is heavy: only here

    vmlinux, system_map = debug_vmlinux(kernel)
    isf = build_profile(kernel=None, btf=btf_of_dwarf(vmlinux), system_map=system_map)
    banner_at = isf["symbols"].get("linux_banner", {}).get("address")
    if banner_at is None:
        raise LabError(f"{system_map.name} has no linux_banner")
    banner = elf32_cstring(vmlinux, banner_at)
    if not banner.startswith(b"Linux version "):
        raise LabError(f"{vmlinux.name}: no banner at linux_banner ({banner[:20]!r})")
    isf["symbols"] = {"linux_banner": {
        "address": banner_at,
        "constant_data": base64.b64encode(banner).decode("ascii"),
        "type": {"kind": "array", "count": len(banner),
                 "subtype": {"kind": "base", "name": "char"}},
    }} | {name: value for name, value in isf["symbols"].items() if name != "linux_banner"}
    return isf
