"""The lab's guest kernel: a stock Debian kernel package, unpacked into our cache.

It is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``: never
installed into the host's /boot, so the host is left as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from .paths import cache_dir

# The meta package that names the current cloud kernel (small, boots fast, has BTF).
DEFAULT_META_PACKAGE = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class GuestKernel:
    release: str
    image: Path  # the bzImage (vmlinuz) QEMU boots
    config: Path
    package: str


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
    images = sorted((kernel_root() / "root" / "boot").glob("vmlinuz-*"))
    if not images:
        return None
    image = images[-1]
    release = image.name.removeprefix("vmlinuz-")
    return GuestKernel(release, image, image.with_name(f"config-{release}"),
                       f"linux-image-{release}")


def ensure_kernel() -> GuestKernel:
    """Return the cached guest kernel, fetching and unpacking it the first time."""
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
