"""Fetch the named registry source (Debian's ``linux-source-6.1``) and pull members out of it.

The package ships one file of interest, ``/usr/src/linux-source-6.1.tar.xz``. We stream the
package's data archive, then the kernel tarball inside it, and keep only the members we name
(an exact path, or a ``fnmatch`` pattern such as ``mm/*.c``). Nothing is unpacked to disk except
the downloaded ``.deb``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "linux-source-6.1"
INNER_TARBALL = "./usr/src/linux-source-6.1.tar.xz"
TOP_DIR = "linux-source-6.1/"


@dataclass
class KernelSource:
    """The members we read, keyed by their path inside the kernel tree."""

    package: str
    version: str
    deb_name: str
    deb_sha256: str
    files: dict[str, str]

    def text(self, member: str) -> str:
        return self.files[member]

    def matching(self, pattern: str) -> list[str]:
        return sorted(name for name in self.files if fnmatch.fnmatchcase(name, pattern))


def download(workdir: Path) -> Path:
    """``apt-get download`` the package into ``workdir``; return the ``.deb`` path."""
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise SystemExit(f"apt-get download {PACKAGE} produced no .deb in {workdir}")
    return debs[-1]


def _wanted(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def load(deb: Path, patterns: list[str]) -> KernelSource:
    """Read the members matching ``patterns`` (paths relative to the kernel tree)."""
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    files: dict[str, str] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                          stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as outer:
            for member in outer:
                if member.name != INNER_TARBALL:
                    continue
                inner_file = outer.extractfile(member)
                assert inner_file is not None
                with tarfile.open(fileobj=inner_file, mode="r|xz") as inner:
                    for item in inner:
                        if not item.isfile() or not item.name.startswith(TOP_DIR):
                            continue
                        name = item.name[len(TOP_DIR):]
                        if _wanted(name, patterns):
                            data = inner.extractfile(item)
                            assert data is not None
                            files[name] = data.read().decode("utf-8", "replace")
                break
        proc.stdout.close()
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in files)]
    if missing:
        raise SystemExit(f"not found in {deb.name}: {', '.join(missing)}")
    return KernelSource(PACKAGE, version, deb.name, digest, files)


def load_tree(root: Path, patterns: list[str], version: str) -> KernelSource:
    """Read the same members from an already unpacked tree (for developing the generator)."""
    files: dict[str, str] = {}
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if path.is_file() and _wanted(name, patterns):
            files[name] = path.read_text("utf-8", "replace")
    return KernelSource(PACKAGE, version, f"(tree {root})", "", files)
