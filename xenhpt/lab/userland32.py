"""The 32-bit lab guest's userland: Debian's i386 busybox-static and strace, fetched from the
archive and unpacked into the lab's cache, never installed.

A 32-bit guest kernel runs no 64-bit program, so the host's busybox and strace (what a
64-bit guest gets) will not do. Both come from the release the guest kernel's package
names (``linux-image-686-pae/bookworm`` → bookworm), so the userland is one release's.

strace is dynamically linked: the packages it depends on (their Depends, as that release
has them) are unpacked beside it, and the files the guest gets are those its ELF asks for:
the loader at the path its PT_INTERP names and the DT_NEEDED libraries, recursively, each
at the path its package puts it (a path the loader searches by default).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LabError
from .elf_needs import read_needs

if TYPE_CHECKING:
    from .apt import PrivateApt

ARCH = "i386"
# Enough for any real chain of library symlinks; a longer one is a loop.
_MAX_LINKS = 16
# Loader, libc and strace's own: a closure larger than this is not what we meant to fetch.
_MAX_LIBRARIES = 64


def _apt() -> PrivateApt:
    from .kernel import kernel_apt

    apt = kernel_apt(ARCH)
    apt.update()
    return apt


def _cache(out_dir: Path, suite: str | None, what: str) -> Path:
    # "newest": no suite named, so apt takes each package's newest version in the lab's list.
    return out_dir / f"{suite or 'newest'}" / what


def _fetch(out_dir: Path, suite: str | None, what: str, packages: list[str]) -> Path:
    """Download ``packages`` (``name:arch``) of ``suite`` and unpack them into one tree in
    the cache, once: the tree appears only when every package is in it."""
    tree = _cache(out_dir, suite, what)
    if tree.exists():
        return tree
    from .apt import unpack

    staging = tree.with_name(tree.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    debs = _apt().download(packages, staging / "debs", release=suite)
    if len(debs) != len(packages):
        raise LabError(f"apt-get download {' '.join(packages)} gave {len(debs)} .deb files")
    for deb in debs:
        unpack(deb, staging / "root")
    shutil.rmtree(staging / "debs")
    staging.rename(tree)
    return tree


def busybox_i386(out_dir: Path, suite: str | None = None) -> Path:
    """Debian's static i386 busybox of ``suite``, unpacked into ``out_dir`` once."""
    tree = _fetch(out_dir, suite, "busybox", [f"busybox-static:{ARCH}"])
    return _inside(tree / "root", "bin/busybox")


def strace_i386(out_dir: Path, suite: str | None = None) -> dict[str, Path]:
    """Debian's i386 strace of ``suite`` and what it needs to run: guest path (relative,
    ``usr/bin/strace``) → the unpacked file (symlinks followed) that goes there."""
    tree = _cache(out_dir, suite, "strace")
    if not tree.exists():
        tree = _fetch(out_dir, suite, "strace", _apt().closure(f"strace:{ARCH}", suite))
    return program_files(tree / "root", "usr/bin/strace")


def program_files(root: Path, program: str) -> dict[str, Path]:
    """``program`` (a path inside the unpacked ``root``), its loader and its libraries:
    path in the guest → the file under ``root`` that holds it."""
    files = {program: _inside(root, program)}
    wanted = [program]
    while wanted:
        needs = read_needs(files[wanted.pop()].read_bytes())
        if needs.interpreter and needs.interpreter.lstrip("/") not in files:
            path = needs.interpreter.lstrip("/")
            files[path] = _inside(root, path)
        for soname in needs.needed:
            if any(Path(have).name == soname for have in files):
                continue
            path = _library(root, soname)
            files[path] = _inside(root, path)
            wanted.append(path)
            if len(files) > _MAX_LIBRARIES:
                raise LabError(f"{program} needs more than {_MAX_LIBRARIES} libraries")
    return files


def _library(root: Path, soname: str) -> str:
    """Where the unpacked packages put the library ``soname`` (its path in the guest)."""
    found = sorted(str(p.relative_to(root)) for p in root.rglob(soname)
                   if not p.is_dir())
    if not found:
        raise LabError(f"no package of the strace closure holds {soname}")
    # Shortest first: /lib/i386-linux-gnu/x before a copy in some subdirectory (i686/...).
    return min(found, key=lambda path: (path.count("/"), path))


def _inside(root: Path, path: str) -> Path:
    """The regular file ``path`` names in the unpacked tree, its symlinks followed inside
    the tree (an absolute link target is relative to ``root``, never the host's)."""
    current = path.lstrip("/")
    for _ in range(_MAX_LINKS):
        full = root / current
        if not full.is_symlink():
            if full.is_file():
                return full
            # Packaged for a merged /usr (/lib → /usr/lib) while the ELF names /lib/...
            if not current.startswith("usr/") and (root / "usr" / current).exists():
                current = f"usr/{current}"
                continue
            raise LabError(f"the unpacked packages hold no file /{current}")
        target = os.readlink(full)
        joined = target.lstrip("/") if target.startswith("/") else \
            os.path.join(os.path.dirname(current), target)
        current = os.path.normpath(joined)
        if current.startswith(".."):
            raise LabError(f"/{path} links outside the unpacked packages")
    raise LabError(f"/{path}: more than {_MAX_LINKS} symlinks")
