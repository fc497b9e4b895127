"""Debian packages fetched for the lab through a private package list, never installed.

The lab needs packages from other suites than the host's (QEMU 10 from
bookworm-backports; guest kernels from bullseye or trixie). Adding those suites to the
host's own sources would change what ``apt-get upgrade`` does on the host, so each use
keeps its own ``sources.list``, lists and cache under the lab's cache directory, and only
``apt-get download`` / ``apt-cache`` run against them; the files are unpacked with
``dpkg-deb -x`` into the cache.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..errors import LabError

MIRROR = "http://deb.debian.org/debian"


class PrivateApt:
    """apt-get/apt-cache with their own package list in ``root`` (suites of ``MIRROR``)."""

    def __init__(self, root: Path, suites: tuple[str, ...],
                 foreign: tuple[str, ...] = ()) -> None:
        """``foreign``: Debian architectures besides the host's whose packages we may fetch
        (``("i386",)`` for a 32-bit guest kernel and userland); they get their own lists."""
        self.root = root
        self.suites = suites
        self.foreign = foreign
        self._state = root / ("apt" if not foreign else "apt-" + "-".join(foreign))

    def _options(self) -> list[str]:
        state = self._state
        return [
            "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            # apt's sandbox user cannot write into root's cache; the download is ours anyway.
            "-o", "APT::Sandbox::User=root",
            *(option for arch in self.foreign
              for option in ("-o", f"APT::Architectures::={arch}")),
        ]

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        try:
            done = subprocess.run([tool, "-qq", *self._options(), *args], cwd=cwd,
                                  capture_output=True, text=True)
        except FileNotFoundError:
            raise LabError(f"{tool} not found: the lab fetches packages with Debian's apt") \
                from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise LabError(f"{tool} {args[0]} ({', '.join(self.suites)}) failed: {last}")
        return done.stdout

    def update(self) -> None:
        """Fetch the package lists of our suites (once per set of suites)."""
        sources = "".join(f"deb {MIRROR} {suite} main\n" for suite in self.suites)
        stamp = self._state / "lists" / ".updated-for"
        if stamp.exists() and stamp.read_text() == sources:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self._state / sub).mkdir(parents=True, exist_ok=True)
        (self._state / "sources.list").write_text(sources)
        self._run("apt-get", "update")
        stamp.write_text(sources)

    def download(self, names: list[str], into: Path, release: str | None = None) -> list[Path]:
        """``apt-get download`` of ``names`` (``name`` or ``name/suite``) into ``into``;
        ``release``: take each package's version from that suite (see :meth:`closure`)."""
        into.mkdir(parents=True, exist_ok=True)
        for old in into.glob("*.deb"):
            old.unlink()
        self._run("apt-get", *_prefer(release), "download", *names, cwd=into)
        return sorted(into.glob("*.deb"))

    def closure(self, name: str, release: str | None) -> list[str]:
        """``name`` and every package it depends on, recursively, as ``release`` has them
        (None: the newest of any suite); from the package lists' Depends and Pre-Depends,
        virtual names left out.

        With several suites in one list, apt resolves a dependency to its newest version
        in any of them; preferring ``release`` keeps the set one release's own.
        """
        out = self._run("apt-cache", *_prefer(release), "depends", "--recurse",
                        "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                        "--no-replaces", "--no-enhances", name)
        # Each package of the closure heads a block of indented "Depends:" lines.
        return [line.strip() for line in out.splitlines()
                if line and not line[0].isspace() and not line.startswith("<")]

    def depends(self, name: str, pattern: str) -> str | None:
        """The first dependency of package ``name`` (``name/suite`` allowed) that matches
        ``pattern`` (a meta package's versioned image package, say)."""
        package, _, suite = name.partition("/")
        out = self._run("apt-cache", "depends", f"{package}/{suite}" if suite else package)
        for match in re.finditer(r"Depends:\s*(\S+)", out):
            if re.fullmatch(pattern, match.group(1)):
                return match.group(1)
        return None


def _prefer(release: str | None) -> list[str]:
    return ["-o", f"APT::Default-Release={release}"] if release else []


def unpack(deb: Path, into: Path) -> None:
    done = subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise LabError(f"cannot unpack {deb.name}: {done.stderr.strip()}")
