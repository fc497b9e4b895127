"""Build the lab guest's initramfs: busybox-static, an /init, the exec agent, workloads.

Written as an uncompressed newc cpio by Python itself (no cpio tool needed), because
the kernel unpacks it faster than a gzip one under TCG.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..errors import LabError

GUEST_FILES = Path(__file__).with_name("guest")
BUSYBOX = Path("/bin/busybox")


class CpioWriter:
    """A minimal newc ("070701") archive writer."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._inode = 1

    def _entry(self, name: str, mode: int, body: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = [self._inode, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(encoded), 0]
        self._inode += 1
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self._data += header + encoded
        self._data += b"\0" * (-len(self._data) % 4)
        self._data += body
        self._data += b"\0" * (-len(self._data) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, body: bytes, executable: bool = False) -> None:
        self._entry(name, 0o100755 if executable else 0o100644, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self._data)


def _guest_inputs() -> list[Path]:
    files = [BUSYBOX] + sorted(p for p in GUEST_FILES.iterdir() if p.is_file())
    return files


def build_initramfs(out_dir: Path) -> Path:
    """Build (or reuse) the initramfs; its name carries a hash of everything in it."""
    if not BUSYBOX.exists():
        raise LabError("/bin/busybox not found: install the Debian package busybox-static")
    digest = hashlib.sha256()
    for path in _guest_inputs():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    out = out_dir / f"initramfs-{digest.hexdigest()[:12]}.cpio"
    if out.exists():
        return out
    cpio = CpioWriter()
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "usr",
              "usr/bin", "usr/sbin", "opt", "opt/xenhpt"):
        cpio.directory(d)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), executable=True)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", (GUEST_FILES / "init").read_bytes(), executable=True)
    cpio.file("etc/inittab", (GUEST_FILES / "inittab").read_bytes())
    cpio.file("sbin/xenhpt-agent", (GUEST_FILES / "xenhpt-agent").read_bytes(), executable=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("initramfs-*.cpio"):
        stale.unlink()
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(cpio.finish())
    shutil.move(tmp, out)
    return out
