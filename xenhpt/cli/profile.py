"""``xenhpt profile build``: a Volatility 3 ISF from a kernel's BTF (or DWARF) and symbols."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import BadUsage


@click.group()
def profile() -> None:
    """Kernel profiles (Volatility 3 ISF JSON, also read by LibVMI)."""


@profile.command()
@click.option("--kernel", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A kernel image (vmlinuz or vmlinux): BTF, symbols and banner from it alone.")
@click.option("--btf", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Raw BTF (/sys/kernel/btf/vmlinux) or a kernel image, for the types.")
@click.option("--system-map", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A real System.map for the symbols (Debian's /boot one is a stub).")
@click.option("--dwarf", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A vmlinux with DWARF (the kernel's -dbg package), for kernels without "
                   "BTF: types via pahole (package dwarves), symbols from its symbol table.")
@click.option("--from", "target_spec", metavar="TARGET",
              help="A guest (lab, qemu:HOST:PORT, xen:NAME) or a memory snapshot: BTF, "
                   "symbols and banner from its memory alone, no file of the kernel needed.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write the ISF (.json, .json.xz or .json.gz).")
def build(kernel: Path | None, btf: Path | None, system_map: Path | None,
          dwarf: Path | None, target_spec: str | None, output: Path) -> None:
    """Build a profile.

    \b
    Examples:
      xenhpt profile build --kernel /boot/vmlinuz-$(uname -r) -o prof.json
      xenhpt profile build --btf /sys/kernel/btf/vmlinux --system-map System.map -o prof.json
      xenhpt profile build --from guest.raw -o prof.json
      xenhpt profile build --from xen:web01 -o prof.json
      xenhpt profile build --dwarf /usr/lib/debug/boot/vmlinux-$(uname -r) -o prof.json
    """
    from ..profile import build_profile, write_profile  # heavy: only this command needs it

    started = time.monotonic()
    if dwarf is not None:
        if kernel or btf or system_map or target_spec:
            raise BadUsage("--dwarf builds from the vmlinux alone: give it without --kernel, "
                           "--btf, --system-map or --from")
        from ..profile.dwarf import build_profile_from_dwarf

        isf = build_profile_from_dwarf(dwarf)
    elif target_spec is not None:
        if kernel or btf or system_map:
            raise BadUsage("--from builds from guest memory alone: give it without --kernel, "
                           "--btf or --system-map")
        isf = _from_memory(target_spec)
    elif kernel is None and (btf is None or system_map is None):
        raise BadUsage("give --kernel IMAGE, --dwarf VMLINUX, --from TARGET, or both --btf "
                       "and --system-map")
    else:
        isf = build_profile(kernel=kernel, btf=btf, system_map=system_map)
    write_profile(isf, output)
    click.echo(f"{output}: {len(isf['user_types'])} types, {len(isf['symbols'])} symbols, "
               f"{time.monotonic() - started:.1f} s")


def _from_memory(target_spec: str) -> dict:
    from ..linux.kernel import profile_from_memory
    from .process import scan_progress
    from .targets import open_target

    target = open_target(target_spec)
    try:
        if target.live:
            target.pause()  # one consistent look at the tables
        return profile_from_memory(target, scan_progress)
    finally:
        target.close()
