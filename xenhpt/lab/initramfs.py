"""Build the lab guest's initramfs: busybox-static, an /init, the exec agent, workloads.

A 32-bit (i386) guest kernel gets a 32-bit userland: Debian's busybox-static:i386 and
strace:i386 with its loader and libraries (fetched and unpacked, never installed: see
``userland32.py``), and every workload built with ``-m32``.

Written as an uncompressed newc cpio by Python itself (no cpio tool needed), because
the kernel unpacks it faster than a gzip one under TCG.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import LabError
from .userland32 import busybox_i386, strace_i386

GUEST_FILES = Path(__file__).with_name("guest")
GUEST_SOURCES = GUEST_FILES / "src"
# Data the benchmark workloads use (tst.sh and its text file): /opt/xenhpt/bench/.
GUEST_BENCH = GUEST_FILES / "bench"
BUSYBOX = Path("/bin/busybox")
# strace runs inside the guest for the cross-check: Debian's binary and its libraries.
STRACE = Path("/usr/bin/strace")


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


def _guest_inputs(busybox: Path, strace: dict[str, Path]) -> list[Path]:
    files = [busybox, *strace.values()]
    files += sorted(p for p in GUEST_FILES.iterdir() if p.is_file())
    return files + sorted(GUEST_SOURCES.glob("*.[ch]")) + _bench_files()


def _bench_files() -> list[Path]:
    return sorted(p for p in GUEST_BENCH.glob("*") if p.is_file())


def _compile_programs(out_dir: Path, bits: int = 64) -> dict[str, bytes]:
    """The guest's test programs, built from source here (32-bit static for mech32, and
    for all of them when the guest kernel is 32-bit)."""
    if shutil.which("gcc") is None:
        raise LabError("gcc not found: install the Debian packages gcc and gcc-multilib")
    programs = {}
    build = out_dir / "programs"
    build.mkdir(parents=True, exist_ok=True)
    for source in sorted(GUEST_SOURCES.glob("*.c")):
        binary = build / source.stem
        mode = "-m32" if source.stem.endswith("32") or bits == 32 else "-m64"
        done = subprocess.run(["gcc", mode, "-static", "-O1", "-o", str(binary), str(source)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            hint = " (install gcc-multilib)" if mode == "-m32" else ""
            raise LabError(f"cannot build {source.name}{hint}: "
                           f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
        programs[source.stem] = binary.read_bytes()
    return programs


def _shared_libraries(binary: Path) -> list[Path]:
    """The dynamic loader and libraries ``binary`` needs (from ldd, as on the host)."""
    if shutil.which("ldd") is None:
        raise LabError("ldd not found: install the Debian package libc-bin")
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    return [Path(p) for p in re.findall(r"(/\S+\.so[.\d]*)", done.stdout)]


def build_initramfs(out_dir: Path, bits: int = 64, suite: str | None = None) -> Path:
    """Build (or reuse) the initramfs; its name carries a hash of everything in it.
    ``bits=32``: the userland of a 32-bit guest kernel (see the module doc), from Debian's
    ``suite`` (None: the newest the lab's package list has)."""
    if bits == 32:
        busybox = busybox_i386(out_dir, suite)
        strace = strace_i386(out_dir, suite)
    elif BUSYBOX.exists():
        busybox = BUSYBOX
        strace = _host_strace()
    else:
        raise LabError("/bin/busybox not found: install the Debian package busybox-static")
    digest = hashlib.sha256(b"" if bits == 64 else b"32-bit\0")
    for path in _guest_inputs(busybox, strace):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    out = out_dir / f"initramfs-{digest.hexdigest()[:12]}.cpio"
    if out.exists():
        return out
    cpio = CpioWriter()
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "usr",
              "usr/bin", "usr/sbin", "opt", "opt/xenhpt"):
        cpio.directory(d)
    cpio.file("bin/busybox", busybox.read_bytes(), executable=True)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", (GUEST_FILES / "init").read_bytes(), executable=True)
    cpio.file("etc/inittab", (GUEST_FILES / "inittab").read_bytes())
    cpio.file("sbin/xenhpt-agent", (GUEST_FILES / "xenhpt-agent").read_bytes(), executable=True)
    cpio.directory("opt/xenhpt/bin")
    for name, body in _compile_programs(out_dir, bits).items():
        cpio.file(f"opt/xenhpt/bin/{name}", body, executable=True)
    cpio.directory("opt/xenhpt/bench")
    for path in _bench_files():
        cpio.file(f"opt/xenhpt/bench/{path.name}", path.read_bytes(),
                  executable=path.suffix == ".sh")
    _add_files(cpio, strace)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("initramfs-*.cpio"):
        stale.unlink()
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(cpio.finish())
    shutil.move(tmp, out)
    return out


def _host_strace() -> dict[str, Path]:
    """The host's strace and the shared libraries it needs (for a 64-bit guest): guest
    path → host file."""
    if not STRACE.exists():
        raise LabError("/usr/bin/strace not found: install the Debian package strace")
    files = {"usr/bin/strace": STRACE}
    files.update((str(library).lstrip("/"), library.resolve())
                 for library in _shared_libraries(STRACE))
    return files


def _add_files(cpio: CpioWriter, files: dict[str, Path]) -> None:
    """Each file at its guest path (relative), after the directories above it."""
    made = {"usr", "usr/bin"}  # made with the skeleton in build_initramfs
    for guest_path, host_file in files.items():
        for parent in reversed(Path(guest_path).parents[:-1]):
            if str(parent) not in made:
                cpio.directory(str(parent))
                made.add(str(parent))
        cpio.file(guest_path, host_file.read_bytes(), executable=True)
