"""QEMU ≥ 10 for the plugin capture, beside (not instead of) the system's QEMU 7.2.

Debian 12's QEMU 7.2 has no plugin API to read registers and guest memory; bookworm-backports
ships QEMU 10.0, which has. Installing it over 7.2 would change the QEMU that the gdbstub lab
and the Xen lab run on (the nested Xen guest needs 7.2), so the lab fetches the backports
packages with ``apt-get download`` through a private package list, unpacks them into its
cache with ``dpkg-deb -x``, and runs that binary with ``-L`` pointing at its own firmware.
Its shared libraries are the ones 7.2 already pulled in (the backport is built for bookworm).

The capture plugin (``vmi/qemu/plugin/xenhpt_capture.c``) is compiled here with gcc, into the
cache, named by a hash of its source so that a changed plugin is rebuilt.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from .apt import PrivateApt, unpack
from .paths import cache_dir

PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios")
PLUGIN_SOURCE = Path(__file__).resolve().parent.parent / "vmi" / "qemu" / "plugin"


@dataclass(frozen=True)
class Qemu10:
    binary: Path  # qemu-system-x86_64
    firmware: tuple[Path, ...]  # for -L, in order

    @property
    def binary_32(self) -> Path:
        """qemu-system-i386, from the same package: a 32-bit kernel's emulator."""
        return self.binary.with_name("qemu-system-i386")

    def version(self) -> str:
        done = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return done.stdout.splitlines()[0] if done.stdout else "unknown"


def ensure_qemu10(quiet: bool = False) -> Qemu10:
    """QEMU 10 from bookworm-backports, unpacked once into the cache."""
    root = cache_dir() / "qemu10"
    unpacked = root / "root"
    found = Qemu10(unpacked / "usr/bin/qemu-system-x86_64",
                   (unpacked / "usr/share/qemu", unpacked / "usr/share/seabios"))
    if found.binary.exists():
        return found
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found: the plugin lab fetches QEMU 10 with Debian's apt")
    if not quiet:
        print("lab: fetching QEMU 10 from bookworm-backports (once)", flush=True)
    apt = PrivateApt(root, ("bookworm-backports",))
    apt.update()
    debs = apt.download([f"{name}/bookworm-backports" for name in PACKAGES], root / "debs")
    staging = root / "root.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for deb in debs:
        unpack(deb, staging)
    shutil.rmtree(unpacked, ignore_errors=True)
    staging.rename(unpacked)
    if not found.binary.exists():
        raise LabError(f"QEMU 10 package unpacked without {found.binary}")
    return found


def ensure_plugin() -> Path:
    """The capture plugin, compiled for this machine (cached by source hash)."""
    sources = sorted(PLUGIN_SOURCE.glob("*.[ch]"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    out = cache_dir() / "plugin" / f"xenhpt_capture-{digest}.so"
    if out.exists():
        return out
    if shutil.which("gcc") is None:
        raise LabError("gcc not found: it builds the capture plugin (Debian package gcc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    done = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                           "-o", str(partial), str(PLUGIN_SOURCE / "xenhpt_capture.c")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"the capture plugin does not compile:\n{done.stderr.strip()}")
    partial.rename(out)
    return out
