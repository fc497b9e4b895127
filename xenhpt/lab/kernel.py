"""The lab's guest kernel: a stock Debian kernel package, unpacked into our cache.

It is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``: never
installed into the host's /boot, so the host is left as it was.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LabError
from .paths import cache_dir

if TYPE_CHECKING:
    from .apt import PrivateApt

# The meta package that names the current cloud kernel (small, boots fast, has BTF).
DEFAULT_META_PACKAGE = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class GuestKernel:
    release: str
    image: Path  # the bzImage (vmlinuz) QEMU boots
    config: Path
    package: str

    @property
    def bits(self) -> int:
        """32 for an i386 kernel, 64 for x86-64: read from the image itself."""
        return image_bits(self.image)


# Boot protocol (Documentation/arch/x86/boot.rst): "HdrS" at 0x202, version at 0x206,
# xloadflags at 0x236 (protocol 2.12 on) whose bit 0 says the kernel is 64-bit.
_HDRS_AT, _VERSION_AT, _XLOADFLAGS_AT = 0x202, 0x206, 0x236
_XLF_KERNEL_64 = 1 << 0
_ELF_CLASS = {1: 32, 2: 64}


def image_bits(image: Path) -> int:
    """Whether a kernel image (bzImage or vmlinux ELF) is a 32- or 64-bit kernel."""
    try:
        with open(image, "rb") as f:
            head = f.read(0x240)
    except OSError as exc:
        raise LabError(f"cannot read kernel image {image}: {exc.strerror}") from None
    if head[:4] == b"\x7fELF" and head[4] in _ELF_CLASS:
        return _ELF_CLASS[head[4]]
    if len(head) >= 0x238 and head[_HDRS_AT:_HDRS_AT + 4] == b"HdrS":
        version = struct.unpack_from("<H", head, _VERSION_AT)[0]
        if version >= 0x20C:
            flags = struct.unpack_from("<H", head, _XLOADFLAGS_AT)[0]
            return 64 if flags & _XLF_KERNEL_64 else 32
    raise LabError(f"{image} is neither a bzImage of boot protocol 2.12+ nor an ELF kernel")


def package_architecture(package: str) -> str:
    """The Debian architecture of a kernel image package, from its flavour: Debian's
    i386 flavours are ``686`` and ``686-pae`` (and ``rt-686-pae``); the rest are amd64."""
    name = package.partition("/")[0]
    return "i386" if re.search(r"-686(-pae)?(-unsigned)?$", name) else "amd64"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} not found: the lab needs Debian's apt and dpkg") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise LabError(f"{' '.join(cmd)} failed: {last}")
    return done.stdout


def resolve_package(meta: str = DEFAULT_META_PACKAGE) -> str:
    """The versioned image package a meta package depends on (``$XENHPT_KERNEL_PACKAGE`` wins)."""
    if os.environ.get("XENHPT_KERNEL_PACKAGE"):
        return os.environ["XENHPT_KERNEL_PACKAGE"]
    out = _run(["apt-cache", "depends", meta])
    match = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if not match:
        raise LabError(f"cannot tell which kernel {meta} installs; run 'apt-get update' first")
    return match.group(1)


def kernel_root() -> Path:
    return cache_dir() / "kernel"


def find_cached() -> GuestKernel | None:
    """The kernel already unpacked in the cache, if any (newest release wins)."""
    return _unpacked(kernel_root())


def ensure_kernel(package: str | None = None) -> GuestKernel:
    """Return the cached guest kernel, fetching and unpacking it the first time.

    ``package`` (``xenhpt lab up --kernel``) names any Debian x86 kernel image package,
    versioned (``linux-image-5.10.0-32-cloud-amd64``) or a meta package with a suite
    (``linux-image-cloud-amd64/trixie``, the i386 ``linux-image-686-pae/bookworm``);
    None is the host suite's current cloud kernel.
    """
    if package is not None:
        return _ensure_other_kernel(package)
    cached = find_cached()
    if cached is not None:
        return cached
    package = resolve_package()
    root = kernel_root()
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.deb"):
        stale.unlink()
    _run(["apt-get", "download", "-q", package], cwd=root)
    debs = list(root.glob("*.deb"))
    if not debs:
        raise LabError(f"apt-get download {package} produced no .deb")
    _run(["dpkg-deb", "-x", str(debs[0]), str(root / "root")])
    cached = find_cached()
    if cached is None:
        raise LabError(f"{package} holds no /boot/vmlinuz-*: not a kernel image package?")
    return cached


# Suites a kernel for the matrix may come from (a private package list: see apt.py).
KERNEL_SUITES = ("bullseye", "bookworm", "bookworm-backports", "trixie")
_VERSIONED = r"linux-image-\d+\.\d+[\w.+~-]*"


def _other_root() -> Path:
    return cache_dir() / "kernels"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]", "_", name)[:128]


def _unpacked(directory: Path, package: str | None = None) -> GuestKernel | None:
    """The kernel unpacked under ``directory``/root (newest release wins), if any."""
    images = sorted((directory / "root" / "boot").glob("vmlinuz-*"))
    if not images:
        return None
    release = images[-1].name.removeprefix("vmlinuz-")
    return GuestKernel(release, images[-1], images[-1].with_name(f"config-{release}"),
                       package or f"linux-image-{release}")


def kernel_apt(arch: str = "amd64") -> PrivateApt:
    """The private package list kernels (and, for i386, the 32-bit userland) come from."""
    from .apt import PrivateApt

    return PrivateApt(_other_root(), KERNEL_SUITES, () if arch == "amd64" else (arch,))


def _ensure_other_kernel(spec: str) -> GuestKernel:
    if not re.fullmatch(r"linux-image-[\w.+~-]+(/[\w-]+)?", spec):
        raise LabError(f"--kernel {spec!r}: expected a Debian kernel image package, e.g. "
                       "linux-image-cloud-amd64/trixie or linux-image-5.10.0-32-cloud-amd64")
    root = _other_root()
    resolved_file = root / "resolved" / _safe(spec)
    versioned = resolved_file.read_text().strip() if resolved_file.exists() else None
    if versioned:
        cached = _unpacked(root / _safe(versioned), versioned)
        if cached is not None:
            return cached
    from .apt import unpack

    name, _, suite = spec.partition("/")
    arch = package_architecture(name)
    apt = kernel_apt(arch)
    apt.update()
    qualified = name if arch == "amd64" else f"{name}:{arch}"
    if re.fullmatch(_VERSIONED, name):
        versioned = name
    else:
        found = apt.depends(f"{qualified}/{suite}" if suite else qualified,
                            _VERSIONED + r"(:\w+)?")
        if found is None:
            raise LabError(f"--kernel {spec}: no kernel image package behind it in "
                           f"{', '.join(KERNEL_SUITES)}")
        versioned = found.split(":")[0]
    directory = root / _safe(versioned)
    wanted = versioned if arch == "amd64" else f"{versioned}:{arch}"
    debs = apt.download([f"{wanted}/{suite}" if suite else wanted], directory / "debs")
    if not debs:
        raise LabError(f"apt-get download {versioned} produced no .deb")
    unpack(debs[0], directory / "root")
    kernel = _unpacked(directory, versioned)
    if kernel is None:
        raise LabError(f"{versioned} holds no /boot/vmlinuz-*: not a kernel image package?")
    resolved_file.parent.mkdir(parents=True, exist_ok=True)
    resolved_file.write_text(versioned + "\n")
    return kernel
