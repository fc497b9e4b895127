"""The 32-bit guest's strace and what it needs, picked from unpacked Debian packages: the
loader (PT_INTERP) and libraries (DT_NEEDED) read from the ELF files, symlinks followed
inside the unpacked tree. Synthetic ELF files; no download, no guest."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from xenhpt.errors import LabError
from xenhpt.lab.apt import PrivateApt
from xenhpt.lab.elf_needs import read_needs
from xenhpt.lab.userland32 import program_files

BASE = 0x1000  # where the one PT_LOAD segment maps the file


def elf(bits: int, interpreter: str | None = None, needed: tuple[str, ...] = ()) -> bytes:
    """A minimal little-endian x86 ELF: PT_INTERP, one PT_LOAD over the whole file, and a
    PT_DYNAMIC whose DT_STRTAB is an address inside that segment."""
    wide = bits == 64
    ehsize, phentsize = (0x40, 0x38) if wide else (0x34, 0x20)
    phnum = 3
    body_at = ehsize + phnum * phentsize
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    interp = (interpreter.encode() + b"\0") if interpreter else b""
    dyn_fmt = "<qQ" if wide else "<iI"
    offsets, at = [], 1
    for name in needed:
        offsets.append(at)
        at += len(name) + 1
    dynamic = b"".join(struct.pack(dyn_fmt, 1, off) for off in offsets)
    strtab_at = body_at + len(interp)
    dynamic += struct.pack(dyn_fmt, 5, BASE + strtab_at) + struct.pack(dyn_fmt, 0, 0)
    dynamic_at = strtab_at + len(strtab)
    size = dynamic_at + len(dynamic)
    segments = [(3 if interp else 4, body_at, len(interp)), (1, 0, size),
                (2, dynamic_at, len(dynamic))]  # (type 4 = PT_NOTE stands in for no interp)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1, 1]) + b"\0" * 9
    if wide:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, ehsize, 0, 0, ehsize,
                                     phentsize, phnum, 0, 0, 0)
        phdrs = b"".join(struct.pack("<IIQQQQQQ", kind, 0, off, BASE + off, BASE + off, n, n,
                                     0x1000) for kind, off, n in segments)
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 3, 3, 1, 0, ehsize, 0, 0, ehsize,
                                     phentsize, phnum, 0, 0, 0)
        phdrs = b"".join(struct.pack("<IIIIIIII", kind, off, BASE + off, BASE + off, n, n, 0,
                                     0x1000) for kind, off, n in segments)
    return header + phdrs + interp + strtab + dynamic


@pytest.mark.parametrize("bits", [32, 64])
def test_loader_and_libraries_are_read_from_the_elf(bits: int) -> None:
    needs = read_needs(elf(bits, "/lib/ld-linux.so.2", ("libunwind.so.8", "libc.so.6")))
    assert (needs.bits, needs.interpreter, needs.needed) == (
        bits, "/lib/ld-linux.so.2", ("libunwind.so.8", "libc.so.6"))


def test_a_static_program_needs_nothing() -> None:
    needs = read_needs(elf(32))
    assert (needs.interpreter, needs.needed) == (None, ())


@pytest.mark.parametrize("cut", [3, 0x20, 0x60, -5])
def test_a_truncated_elf_is_a_lab_error_not_a_crash(cut: int) -> None:
    data = elf(32, "/lib/ld-linux.so.2", ("libc.so.6",))
    with pytest.raises(LabError):
        read_needs(data[:cut])


def _tree(root: Path, files: dict[str, bytes], links: dict[str, str]) -> None:
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)
    for path, target in links.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)


def test_the_program_gets_its_loader_and_library_closure(tmp_path: Path) -> None:
    loader = elf(32)
    _tree(tmp_path, {
        "usr/bin/strace": elf(32, "/lib/ld-linux.so.2", ("libunwind.so.8", "libc.so.6")),
        "usr/lib/i386-linux-gnu/libunwind.so.8.0.1": elf(32, None, ("liblzma.so.5",
                                                                     "libc.so.6")),
        "lib/i386-linux-gnu/liblzma.so.5.4.1": elf(32, None, ("libc.so.6",)),
        "lib/i386-linux-gnu/libc.so.6": elf(32, "/lib/ld-linux.so.2"),
        "lib/i386-linux-gnu/ld-linux.so.2": loader,
        "lib/i386-linux-gnu/libunused.so.1": elf(32),
    }, {
        # Debian's loader link is relative; an absolute one must stay inside the tree too.
        "lib/ld-linux.so.2": "/lib/i386-linux-gnu/ld-linux.so.2",
        "usr/lib/i386-linux-gnu/libunwind.so.8": "libunwind.so.8.0.1",
        "lib/i386-linux-gnu/liblzma.so.5": "liblzma.so.5.4.1",
    })
    files = program_files(tmp_path, "usr/bin/strace")
    assert set(files) == {"usr/bin/strace", "lib/ld-linux.so.2",
                          "usr/lib/i386-linux-gnu/libunwind.so.8",
                          "lib/i386-linux-gnu/liblzma.so.5", "lib/i386-linux-gnu/libc.so.6"}
    assert files["lib/ld-linux.so.2"] == tmp_path / "lib/i386-linux-gnu/ld-linux.so.2"
    assert files["lib/i386-linux-gnu/liblzma.so.5"].name == "liblzma.so.5.4.1"
    assert all(path.is_file() and not path.is_symlink() for path in files.values())


def test_a_merged_usr_package_serves_the_loader_path_the_elf_names(tmp_path: Path) -> None:
    # trixie's libc6 ships /usr/lib/ld-linux.so.2; the ELF still names /lib/ld-linux.so.2.
    _tree(tmp_path, {"usr/bin/strace": elf(32, "/lib/ld-linux.so.2", ("libc.so.6",)),
                     "usr/lib/i386-linux-gnu/libc.so.6": elf(32),
                     "usr/lib/i386-linux-gnu/ld-linux.so.2": elf(32)},
          {"usr/lib/ld-linux.so.2": "i386-linux-gnu/ld-linux.so.2"})
    files = program_files(tmp_path, "usr/bin/strace")
    assert files["lib/ld-linux.so.2"] == tmp_path / "usr/lib/i386-linux-gnu/ld-linux.so.2"
    assert "usr/lib/i386-linux-gnu/libc.so.6" in files


def test_a_missing_library_or_a_link_out_of_the_tree_is_a_lab_error(tmp_path: Path) -> None:
    _tree(tmp_path, {"usr/bin/strace": elf(32, "/lib/ld-linux.so.2", ("libc.so.6",))},
          {"lib/ld-linux.so.2": "../../../../etc/passwd"})
    with pytest.raises(LabError, match="outside"):
        program_files(tmp_path, "usr/bin/strace")
    (tmp_path / "lib/ld-linux.so.2").unlink()
    (tmp_path / "lib/ld-linux.so.2").write_bytes(elf(32))
    with pytest.raises(LabError, match="libc.so.6"):
        program_files(tmp_path, "usr/bin/strace")


def test_the_package_closure_is_one_releases_and_leaves_virtual_names_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []
    # apt-cache depends --recurse as bookworm answers for strace:i386 (a virtual name added).
    answer = ("strace:i386\n  Depends: libc6:i386\nlibc6:i386\n  Depends: libgcc-s1:i386\n"
              "  Depends: <debconf-2.0>\nlibgcc-s1:i386\n  Depends: gcc-12-base:i386\n"
              "  Depends: libc6:i386\ngcc-12-base:i386\n<debconf-2.0>\n")

    def run(tool: str, *args: str, cwd: Path | None = None) -> str:
        asked.append((tool, *args))
        return answer

    apt = PrivateApt(tmp_path, ("bookworm", "trixie"), ("i386",))
    monkeypatch.setattr(apt, "_run", run)
    assert apt.closure("strace:i386", "bookworm") == [
        "strace:i386", "libc6:i386", "libgcc-s1:i386", "gcc-12-base:i386"]
    # Several suites in one list: without a preferred release apt would take trixie's libc6.
    assert "APT::Default-Release=bookworm" in asked[0]
    apt.download(["strace:i386"], tmp_path / "debs", release="bookworm")
    assert "APT::Default-Release=bookworm" in asked[1] and asked[1][-1] == "strace:i386"
