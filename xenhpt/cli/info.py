"""``xenhpt info TARGET``: which kernel runs in the guest, read from its memory."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ProfileError, XenhptError
from ..linux.banner import find_banner
from ..linux.kernel import Kernel, profile_hint
from ..output.escape import escape_text
from ..vmi.target import Target
from .process import profile_option, scan_progress
from .targets import TARGET_HELP, open_target

_EFER_LMA = 1 << 10


def _architecture(guest: Target) -> str:
    try:
        if guest.live:
            guest.pause()
        registers = guest.registers(0)
    except XenhptError:
        return "unknown (no vCPU registers)"
    finally:
        if guest.live:
            guest.resume()
    if "efer" not in registers:  # QEMU ELF dumps do not save EFER; a kernel rip tells
        return "x86_64 (long mode)" if registers.get("rip", 0) >> 63 else "unknown"
    return ("x86_64 (long mode)" if registers["efer"] & _EFER_LMA
            else "x86 (32-bit protected mode)")


@click.command()
@click.argument("target", metavar="TARGET")
@profile_option
def info(target: str, profile_path: Path | None) -> None:
    """Kernel banner, architecture, vCPUs, KASLR slide and profile of TARGET.

    TARGET is """ + TARGET_HELP
    guest = open_target(target)
    try:
        rows = [("target", guest.description)]
        kernel: Kernel | None = None
        try:
            kernel = Kernel.open(guest, profile_path, progress=scan_progress)
            banner = kernel.layout.banner
        except ProfileError as exc:
            if profile_path is not None:
                raise  # the profile the user named does not fit: that is an error
            banner = find_banner(guest, progress=scan_progress)
            problem = str(exc)
        if banner is None:
            rows.append(("banner", "not found in guest memory"))
        else:
            rows += [("banner", escape_text(banner.text)),
                     ("release", escape_text(banner.release)),
                     ("banner at", f"physical {banner.physical_address:#x}")]
        rows.append(("arch", _architecture(guest)))
        rows.append(("vcpus", str(guest.vcpu_count)))
        if kernel is not None:
            rows.append(("kaslr slide", f"{kernel.slide:#x}"))
            rows.append(("paging", f"{kernel.layout.levels}-level, kernel PGD at "
                         f"physical {kernel.dtb:#x}"))
            rows.append(("profile", str(kernel.profile.path)))
        else:
            rows.append(("kaslr slide", "unknown (needs a profile)"))
            hint = profile_hint(banner.release) if banner else ""
            rows.append(("profile", f"none: {problem}" if not hint or hint in problem
                         else f"none ({problem}); build one: {hint}"))
        for key, value in rows:
            click.echo(f"{key + ':':<13}{value}")
    finally:
        guest.close()
