"""The profile of a lab kernel built without BTF (Debian's i386 kernels), from its -dbg package.

Debian's 686-pae kernels have no ``CONFIG_DEBUG_INFO_BTF``: their types exist only as
DWARF in ``linux-image-<release>-dbg`` (≈ 750 MB, cached). The lab fetches its vmlinux;
the profile is what ``xenhpt profile build --dwarf`` makes of it (``profile/dwarf.py``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from ..errors import LabError
from .kernel import GuestKernel, _other_root, _safe, kernel_apt, package_architecture


def debug_vmlinux(kernel: GuestKernel) -> Path:
    """The kernel's DWARF vmlinux from its -dbg package (fetched once). Its own symbol
    table serves the profile, so the package's System.map is not needed."""
    directory = _other_root() / _safe(kernel.package) / "dbg"
    vmlinux = directory / "usr/lib/debug/boot" / f"vmlinux-{kernel.release}"
    if vmlinux.exists():
        return vmlinux
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
    return vmlinux


def debug_profile(kernel: GuestKernel) -> dict[str, Any]:
    """The ISF of ``kernel`` from its -dbg package."""
    from ..profile.dwarf import build_profile_from_dwarf  # the builder is heavy: only here

    return build_profile_from_dwarf(debug_vmlinux(kernel))
