"""``xenhpt profile build``: a Volatility 3 ISF from a kernel image's own BTF and kallsyms."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import XenhptError


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
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write the ISF (.json, .json.xz or .json.gz).")
def build(kernel: Path | None, btf: Path | None, system_map: Path | None, output: Path) -> None:
    """Build a profile.

    \b
    Examples:
      xenhpt profile build --kernel /boot/vmlinuz-6.1.0-56-cloud-amd64 -o prof.json
      xenhpt profile build --btf /sys/kernel/btf/vmlinux --system-map System.map -o prof.json
    """
    if kernel is None and (btf is None or system_map is None):
        raise XenhptError("give --kernel IMAGE, or both --btf and --system-map")
    from ..profile import build_profile, write_profile  # heavy: only this command needs it

    started = time.monotonic()
    isf = build_profile(kernel=kernel, btf=btf, system_map=system_map)
    write_profile(isf, output)
    click.echo(f"{output}: {len(isf['user_types'])} types, {len(isf['symbols'])} symbols, "
               f"{time.monotonic() - started:.1f} s")
