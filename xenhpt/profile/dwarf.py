"""Build an ISF profile from a vmlinux's DWARF, for kernels built without BTF.

Debian's i386 kernels (686, 686-pae) and older distributions' kernels have no
CONFIG_DEBUG_INFO_BTF; their types only exist as DWARF in the ``vmlinux`` of the ``-dbg``
package (``/usr/lib/debug/boot/vmlinux-<release>``). This is what dwarf2json does for
Volatility 3 users, done our way:

- types: ``pahole`` (Debian package ``dwarves``) encodes the DWARF to BTF, the very step
  the kernel build runs for CONFIG_DEBUG_INFO_BTF, with the options the kernel passes
  (floats kept, Rust units left out). The BTF then goes through the same builder as a
  kernel's own ``.BTF``, so a DWARF profile and a BTF profile of one kernel agree by
  construction, and there is one type translator to keep right, not two. Reading DWARF
  ourselves would mean a DWARF parser (or pyelftools, far too slow for 150 MB of
  ``.debug_info`` in Python) beside the BTF one.
- symbols: the vmlinux's own ELF symbol table (a ``-dbg`` vmlinux is not stripped),
  filtered as ``System.map`` is.
- banner: the bytes of ``linux_banner`` in the image.

The vmlinux is mapped, not read: only headers, the symbol table and the banner come into
memory; pahole reads the DWARF in its own process.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from xenhpt.errors import ProfileError
from xenhpt.profile.build import assemble_isf, source_entry
from xenhpt.profile.kimage import KernelImage, read_file

# A 6.1 kernel's BTF is ~4 MB; anything far above is not what we asked pahole for.
MAX_BTF_BYTES = 256 << 20
DWARF_SECTIONS = (".debug_info", ".zdebug_info")
X86_MACHINES = {3: "i386", 62: "x86-64"}  # ELF e_machine
# pahole takes ~20 s of CPU for a 6.1 kernel; far longer means something is wrong.
PAHOLE_TIMEOUT = 30 * 60
PAHOLE_PACKAGE = "dwarves"


def build_profile_from_dwarf(vmlinux: Path) -> dict[str, Any]:
    """The ISF of the kernel whose DWARF-carrying ``vmlinux`` is given (see module doc)."""
    vmlinux = Path(vmlinux)
    image = KernelImage.open_mapped(vmlinux)
    if image.machine not in X86_MACHINES:
        raise ProfileError(f"{vmlinux}: ELF machine {image.machine} is not x86 (i386 or "
                           "x86-64), the only kernels xenhpt traces")
    if not any(name in image.sections for name in DWARF_SECTIONS):
        raise ProfileError(f"{vmlinux}: no DWARF (.debug_info) in this ELF file: give the "
                           "vmlinux of the kernel's -dbg package")
    symbols = image.symbol_table()
    if not symbols:
        raise ProfileError(f"{vmlinux}: no ELF symbol table (stripped?)")
    btf = encode_btf(vmlinux)
    sources = {
        "symbols": [source_entry("symtab", vmlinux, ":.symtab")],
        "types": [source_entry("dwarf", vmlinux)],
    }
    return assemble_isf(btf, f"{vmlinux} (BTF from DWARF)", symbols, image, sources)


def encode_btf(vmlinux: Path) -> bytes:
    """Raw BTF that pahole encodes from the DWARF of ``vmlinux``."""
    pahole = shutil.which("pahole")
    if pahole is None:
        raise ProfileError(f"pahole not found: install Debian's '{PAHOLE_PACKAGE}' package "
                           f"(apt-get install {PAHOLE_PACKAGE}) to build profiles from DWARF")
    with tempfile.TemporaryDirectory(prefix="xenhpt-btf-") as tmp:
        out = Path(tmp) / "vmlinux.btf"
        # -F dwarf: a vmlinux that also has a .BTF section must still be read from DWARF.
        cmd = [pahole, "-F", "dwarf", "--btf_gen_floats", f"--btf_encode_detached={out}"]
        if _supports(pahole, "--lang_exclude"):
            cmd.append("--lang_exclude=rust")  # as the kernel's scripts/pahole-flags.sh
        try:
            done = subprocess.run([*cmd, str(vmlinux)], capture_output=True, text=True,
                                  errors="replace", check=False, timeout=PAHOLE_TIMEOUT)
        except OSError as exc:
            raise ProfileError(f"cannot run pahole: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise ProfileError(f"{vmlinux}: pahole still busy after {PAHOLE_TIMEOUT} s; "
                               "gave up") from None
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[-1]
            raise ProfileError(f"{vmlinux}: pahole could not encode its DWARF: {last[:200]}")
        return read_file(out, MAX_BTF_BYTES)


def _supports(pahole: str, option: str) -> bool:
    try:
        done = subprocess.run([pahole, "--help"], capture_output=True, text=True,
                              errors="replace", check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in done.stdout
